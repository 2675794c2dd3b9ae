"""rank_layers, select_top_k, LayerScores and freeze_except."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from macattr import LayerScores, candidate_layers, freeze_except, rank_layers, select_top_k
from macattr.ranking.scorers import uniform_order
from macattr.restoration import write_ram_files
from macattr.scores import resolve_k


class DeadBranches(nn.Module):
    """A conv chain plus two branches whose output is multiplied by zero."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, padding=1))
        self.dead_a = nn.Conv2d(4, 4, 3, padding=1)
        self.dead_b = nn.Conv2d(4, 3, 1)
        self.tail = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.head(x))
        h = self.body(h)
        return self.tail(h) + 0.0 * self.dead_b(self.dead_a(h))


def _model(seed: int = 0) -> DeadBranches:
    torch.manual_seed(seed)
    return DeadBranches().double()


def _images(seed: int, n: int = 4, size: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _pairs(seed: int, n: int = 4) -> list:
    x = _images(seed, n)
    return [(x[i : i + 2], (x[i : i + 2] * 0.9).clamp(0, 1)) for i in range(0, n, 2)]


@pytest.mark.parametrize("method", ["mac", "ig", "conductance", "gradnorm"])
def test_branches_multiplied_by_zero_rank_last_and_are_never_selected(method: str) -> None:
    scores = rank_layers(_model(), _pairs(0), method, n_steps=8, progress=False)
    assert scores["dead_a"] == 0 and scores["dead_b"] == 0
    assert set(n for n, _ in scores.ranked()[-2:]) == {"dead_a", "dead_b"}
    live = [n for n in scores if not n.startswith("dead")]
    assert all(scores[n] > 0 for n in live)
    assert not {"dead_a", "dead_b"} & set(scores.top_k(len(live)))


def test_candidates_are_modules_owning_parameters_in_depth_order() -> None:
    model = _model()
    names = list(candidate_layers(model))
    assert names == ["head", "body.0", "body.2", "dead_a", "dead_b", "tail"]
    assert set(names) <= dict(model.named_modules()).keys()
    assert list(candidate_layers(model, layers=re.compile(r"body\..*"))) == ["body.0", "body.1", "body.2"]
    assert list(candidate_layers(model, layers=nn.Conv2d, exclude=["head", re.compile("dead_.")])) == [
        "body.0",
        "body.2",
        "tail",
    ]
    assert list(candidate_layers(model, layers=[model.tail, "head"])) == ["head", "tail"]
    assert list(candidate_layers(model, layers="body")) == ["body"]


def test_bad_layer_specs_are_refused() -> None:
    model = _model()
    with pytest.raises(ValueError, match="not a module of the model. Its sub-modules are head"):
        candidate_layers(model, layers="nope")
    with pytest.raises(ValueError, match="did you mean 'tail'"):
        candidate_layers(model, layers="tial")
    with pytest.raises(ValueError, match="not a sub-module"):
        candidate_layers(model, layers=nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="layers must hold"):
        candidate_layers(model, layers=[3])
    with pytest.raises(ValueError, match="no candidate layers"):
        candidate_layers(model, layers=nn.Linear)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        candidate_layers("model")


@given(st.integers(1, 300), st.floats(0.001, 1.0))
def test_k_fraction_rounds_up_and_selects_at_least_one(n_layers: int, fraction: float) -> None:
    count = resolve_k(fraction, n_layers)
    assert 1 <= count <= n_layers
    assert count == max(1, math.ceil(fraction * n_layers - 1e-9))


def test_k_counts_and_bad_k() -> None:
    assert resolve_k(0.1, 18) == 2 and resolve_k(0.1, 10) == 1 and resolve_k(0.3, 10) == 3 and resolve_k(1.0, 7) == 7
    assert resolve_k(3, 10) == 3
    for bad, error in [(0, ValueError), (11, ValueError), (0.0, ValueError), (1.5, ValueError), ("1", TypeError)]:
        with pytest.raises(error, match="k must be"):
            resolve_k(bad, 10)
    with pytest.raises(ValueError, match="k must be"):
        select_top_k(_model(), _images(0), k=7, n_steps=2, progress=False)


def test_ties_are_ranked_by_depth_and_selected_together() -> None:
    scores = LayerScores({"a": 1.0, "b": 2.0, "c": 1.0, "d": 2.0}, "mac")  # MAC's ties are one unit
    assert [n for n, _ in scores.ranked()] == ["b", "d", "a", "c"]
    assert scores.units() == [["b", "d"], ["a", "c"]]
    assert scores.top_k(1) == ["b", "d"] and scores.top_k(3, ties="apart") == ["b", "d", "a"]


@given(st.integers(0, 1000))
def test_same_seed_same_scores_and_batch_size_does_not_matter(seed: int) -> None:
    model = _model(seed)
    x = _images(seed)
    one_batch = rank_layers(model, [x], n_steps=6, seed=seed, progress=False)
    by_one = rank_layers(model, [x[i : i + 1] for i in range(4)], n_steps=6, seed=seed, progress=False)
    again = rank_layers(model, [x], n_steps=6, seed=seed, progress=False)
    other = rank_layers(model, [x], n_steps=6, seed=seed + 1, progress=False)
    assert dict(one_batch) == dict(again)
    for name in one_batch:
        assert by_one[name] == pytest.approx(one_batch[name], rel=1e-10, abs=1e-14)
    assert dict(other) != dict(one_batch)
    assert one_batch.images == 4


class Interrupted(Exception):
    pass


def _interrupting(batches: list, after: int):
    for index, batch in enumerate(batches):
        if index == after:
            raise Interrupted
        yield batch


def test_resume_after_an_interruption_gives_the_uninterrupted_scores(tmp_path) -> None:
    model = _model()
    batches = [_images(i, n=2) for i in range(4)]
    reference = rank_layers(model, batches, n_steps=5, progress=False)
    checkpoint = tmp_path / "run.json"
    with pytest.raises(Interrupted):
        rank_layers(model, _interrupting(batches, 3), n_steps=5, progress=False, checkpoint=checkpoint)
    state = json.loads(checkpoint.read_text())
    assert state["scores"]["images"] == 6 and state["samples"] == 6 and not state["complete"]
    resumed = rank_layers(model, batches, n_steps=5, progress=False, checkpoint=checkpoint)
    assert resumed.images == 4 * 2
    for name in reference:
        assert resumed[name] == pytest.approx(reference[name], rel=1e-12)
    again = rank_layers(model, batches, n_steps=5, progress=False, checkpoint=checkpoint)  # complete: no work
    assert dict(again) == dict(resumed) and again.images == 8
    with pytest.raises(ValueError, match="written by another run"):
        rank_layers(model, batches, n_steps=6, progress=False, checkpoint=checkpoint)


def test_resume_with_other_batch_sizes_counts_every_image_once(tmp_path) -> None:
    model = _model()
    x = _images(7, n=5)
    reference = rank_layers(model, [x], n_steps=5, progress=False)
    checkpoint = tmp_path / "run.json"
    with pytest.raises(Interrupted):  # three one-image batches, then Ctrl-C
        rank_layers(model, _interrupting([x[i : i + 1] for i in range(5)], 3), n_steps=5, progress=False,
                    checkpoint=checkpoint)  # fmt: skip
    resumed = rank_layers(model, [x[0:2], x[2:4], x[4:5]], n_steps=5, progress=False, checkpoint=checkpoint)
    assert resumed.images == 5
    for name in reference:
        assert resumed[name] == pytest.approx(reference[name], rel=1e-10, abs=1e-15)


def test_resume_with_other_images_is_refused(tmp_path) -> None:
    model = _model()
    checkpoint = tmp_path / "run.json"
    batches = [_images(i, n=1) for i in range(4)]
    with pytest.raises(Interrupted):
        rank_layers(model, _interrupting(batches, 2), n_steps=3, progress=False, checkpoint=checkpoint)
    others = [_images(10 + i, n=1) for i in range(4)]
    with pytest.raises(ValueError, match="other images than the checkpoint"):
        rank_layers(model, others, n_steps=3, progress=False, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="fewer than the 2"):
        rank_layers(model, batches[:1], n_steps=3, progress=False, checkpoint=checkpoint)
    checkpoint.write_text("not json")
    with pytest.raises(ValueError, match="is not a rank_layers checkpoint"):
        rank_layers(model, batches, n_steps=3, progress=False, checkpoint=checkpoint)


def test_samples_per_group_and_batch_formats() -> None:
    model = _model()
    x = _images(0, n=6)
    batches = [
        {"lq": x[:3], "task": ["noise", "noise", "blur"]},
        {"lq": x[3:], "task": ["noise", "blur", "blur"]},
    ]
    grouped = rank_layers(model, batches, n_steps=4, samples_per_group=2, group="task", progress=False)
    assert grouped.images == 4
    chosen = torch.cat([x[0:3], x[4:5]])  # noise, noise, blur, blur (the third noise image is skipped)
    direct = rank_layers(model, [(chosen[:2], None), [chosen[2:]]], n_steps=4, progress=False)
    # thresholds depend on the image's position among analysed images, which is the same here
    for name in grouped:
        assert grouped[name] == pytest.approx(direct[name], rel=1e-10)
    capped = rank_layers(model, [{"input": x}], n_steps=4, max_images=3, progress=False)
    assert capped.images == 3
    first_two = rank_layers(model, [x], n_steps=4, samples_per_group=2, progress=False)
    assert first_two.images == 2


def test_rank_layers_refuses_bad_arguments() -> None:
    model = _model()
    x = _images(0)
    cases = [
        (dict(method="shap"), ValueError, "method must be one of"),
        (dict(n_steps=0), ValueError, "n_steps"),
        (dict(mask_ratio=0), ValueError, "mask_ratio"),
        (dict(sharpness=-1.0), ValueError, "sharpness"),
        (dict(seed=-2), ValueError, "seed"),
        (dict(samples_per_group=0), ValueError, "samples_per_group"),
        (dict(max_images=0), ValueError, "max_images"),
        (dict(target=3.5), TypeError, "target"),
        (dict(baselines="black"), TypeError, "baselines"),
        (dict(device="gpu-please"), ValueError, "device must name a torch device"),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error, match=words):
            rank_layers(model, [x], progress=False, **kwargs)
    with pytest.raises(ValueError, match="needs a loader"):
        rank_layers(model, None)
    with pytest.raises(TypeError, match="loader must be an iterable"):
        rank_layers(model, 3, progress=False)
    with pytest.raises(TypeError, match="a loader batch must be"):
        rank_layers(model, [{"image": x}], progress=False)
    with pytest.raises(TypeError, match="gradnorm"):
        rank_layers(model, [x], "gradnorm", progress=False)
    with pytest.raises(ValueError, match="no images"):
        rank_layers(model, [], progress=False)
    with pytest.raises(ValueError, match="one key per sample"):
        rank_layers(model, [{"lq": x, "task": ["a"]}], group="task", samples_per_group=1, progress=False)


def test_gradnorm_leaves_the_model_as_found() -> None:
    model = _model()
    model.head.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    rank_layers(model, _pairs(0), "gradnorm", progress=False)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_random_is_seeded_and_uniform_spreads_every_top_k() -> None:
    model = _model()
    a = rank_layers(model, method="random", seed=1)
    b = rank_layers(model, method="random", seed=1)
    c = rank_layers(model, method="random", seed=2)
    assert dict(a) == dict(b) and a.ranked() != c.ranked()
    for count in (7, 18, 50, 64, 300):
        names = [f"layer.{i}" for i in range(count)]
        uniform = uniform_order(names, 0)
        order = [n for n, _ in LayerScores(uniform, "uniform").ranked()]
        assert sorted(order) == sorted(names)
        for k in range(2, count + 1, max(1, count // 7)):
            depths = sorted(int(n.split(".")[1]) for n in order[:k])
            gaps = [b - a for a, b in zip([-1] + depths, depths + [count])]
            assert max(gaps) <= 2 * math.ceil(count / k) + 1


def test_scores_files_round_trip(tmp_path) -> None:
    scores = rank_layers(_model(), [_images(0)], n_steps=4, progress=False)
    path = scores.save(tmp_path / "sub" / "scores.json")
    document = json.loads(path.read_text())
    assert document["method"] == "mac" and document["config"]["n_steps"] == 4
    assert [entry["score"] for entry in document["layers"]] == sorted(scores.values(), reverse=True)
    loaded = LayerScores.load(path)
    assert loaded.names == scores.names and dict(loaded) == dict(scores)
    assert loaded.method == scores.method and loaded.config == scores.config and loaded.images == 4
    files = write_ram_files(scores, tmp_path / "ram")
    names, conds, indices = (f.read_text().splitlines() for f in files)
    assert [f.name for f in files] == ["filter_name.txt", "filter_cond.txt", "filter_index.txt"]
    assert names == [n for n, _ in scores.ranked()]
    assert [float(v) for v in conds] == [s for _, s in scores.ranked()]
    assert [int(i) for i in indices] == [scores.names.index(n) for n in names]
    csv_text = scores.to_csv(tmp_path / "scores.csv")
    assert csv_text.splitlines()[0] == "rank,name,score,index" and len(csv_text.splitlines()) == len(scores) + 1
    assert not list(tmp_path.glob("**/.*.tmp"))  # atomic writes leave no temporary files
    (tmp_path / "bad.json").write_text('{"layers": 3}')
    with pytest.raises(ValueError, match="not a LayerScores document"):
        LayerScores.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="finite"):
        LayerScores({"a": math.nan}, "x")


def test_rank_correlations() -> None:
    a = LayerScores({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, "x")
    b = LayerScores({"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0}, "y")
    c = LayerScores({"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}, "z")
    d = LayerScores({"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0}, "w")
    assert a.spearman(b) == pytest.approx(1) and a.kendall(b) == pytest.approx(1)
    assert a.spearman(c) == pytest.approx(-1) and a.kendall(c) == pytest.approx(-1)
    assert a.spearman(d) == pytest.approx(0.8) and a.kendall(d) == pytest.approx(4 / 6)
    with pytest.raises(TypeError, match="LayerScores"):
        a.spearman({"a": 1.0})


def test_freeze_except_trains_only_the_named_layers() -> None:
    model = _model()
    model.tail.bias.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    with freeze_except(model, ["body.0", "tail"]) as trainable:
        expected = {id(p) for p in [*model.body[0].parameters(), *model.tail.parameters()]}
        assert {id(p) for p in trainable} == expected
        assert all(p.requires_grad == (id(p) in expected) for p in model.parameters())
        total = sum(p.numel() for p in model.parameters())
        assert trainable.fraction == pytest.approx(sum(p.numel() for p in trainable) / total)
        out = model(_images(0)).sum()
        out.backward()
        assert all((p.grad is not None) == (id(p) in expected) for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == before
    with pytest.raises(ValueError, match="not modules of the model"):
        freeze_except(model, ["nope"])
    with pytest.raises(ValueError, match="own no parameters"):
        freeze_except(model, ["body"])
    with pytest.raises(TypeError, match="not one string"):
        freeze_except(model, "tail")


def test_score_sums_merge_across_shards_like_one_run() -> None:
    from macattr import ScoreSum

    per_image = torch.rand(6, 3, dtype=torch.float64)
    whole, first, second = ScoreSum(["a", "b", "c"]), ScoreSum(["a", "b", "c"]), ScoreSum(["a", "b", "c"])
    whole.update(per_image, groups="xxyyzz")
    first.update(per_image[:2], groups="xx")
    second.update(per_image[2:], indices=range(2, 6), groups="yyzz")  # a shard numbers its images as the stream does
    first.merge(second)
    assert first.images == whole.images == 6
    for name in "abc":
        assert first.compute()[name] == pytest.approx(whole.compute()[name], rel=1e-12)
    assert np.array_equal(first.rows()[0], whole.rows()[0]) and first.rows()[1] == list("xxyyzz")
    restored = ScoreSum(["a", "b", "c"])
    restored.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert restored.compute() == first.compute() and np.array_equal(restored.rows()[0], per_image.numpy())
    with pytest.raises(ValueError, match="different images"):
        first.merge(second)
    with pytest.raises(ValueError, match="same layers"):
        first.merge(ScoreSum(["a", "b"]))
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        first.update(torch.rand(2, 4))
