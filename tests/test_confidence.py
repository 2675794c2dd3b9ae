"""Per-image scores, the bootstrap's confidence in a top k, stopping once it is stable, and the check of N."""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import conv_net
from macattr import LayerScores, RankSettings, UntilStable, check_steps, rank_layers
from macattr.cli import main
from macattr.confidence import resampled_sums, score_intervals
from macattr.paths import LinearPath


def _images(count: int, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, 6, 6, dtype=torch.float64, generator=generator) for _ in range(count)]


def test_per_image_scores_are_each_image_ranked_alone_and_sum_to_the_scores() -> None:
    model, images = conv_net(0), _images(4)
    scores = rank_layers(model, [torch.cat(images[:3]), images[3]], method="conductance", n_steps=6, progress=False)
    assert scores.per_image.shape == (4, len(scores)) and scores.groups == [""] * 4
    for row, image in zip(scores.per_image, images):  # the linear path draws nothing: each image alone is the same
        alone = rank_layers(model, [image], method="conductance", n_steps=6, progress=False)
        np.testing.assert_allclose(row, [alone[n] for n in scores.names], rtol=1e-10)
    np.testing.assert_allclose(scores.per_image.sum(0), [scores[n] for n in scores.names], rtol=1e-12)


def test_per_image_scores_and_groups_survive_the_scores_file(tmp_path: Path) -> None:
    batches = [{"lq": torch.cat(_images(2)), "task": ["noise", "blur"]} for _ in range(2)]
    scores = rank_layers(conv_net(0), batches, n_steps=4, group="task", progress=False)
    assert scores.groups == ["noise", "blur", "noise", "blur"]
    again = LayerScores.load(scores.save(tmp_path / "s.json", scores.confidence(k=1, resamples=50)))
    np.testing.assert_array_equal(again.per_image, scores.per_image)
    assert again.groups == scores.groups
    document = json.loads((tmp_path / "s.json").read_text())
    assert document["confidence"]["resamples"] == 50 and set(document["confidence"]["layers"]) == set(scores.names)
    document["per_image"]["scores"][0][0] *= 10  # rows that no longer sum to the scores belong to other scores
    with pytest.raises(ValueError, match="sum to the scores"):
        LayerScores.from_dict(document)


def test_the_bootstrap_matches_the_exact_resampling_distribution() -> None:
    rows = np.array([[3.0, 2.0, 0.0], [1.0, 2.5, 0.0], [2.0, 1.0, 0.5]])  # three images of one group
    exact = {"a": 0.0, "b": 0.0}
    for draw in itertools.product(range(3), repeat=3):  # all 27 equally likely resamples
        total = rows[list(draw)].sum(0)
        exact["a" if total[0] > total[1] else "b"] += 1 / 27
    scores = LayerScores({"a": 6.0, "b": 5.5, "c": 0.5}, "mac", images=3, per_image=rows)
    result = scores.confidence(k=1, resamples=20000, seed=1)
    assert result.selected == ["a"]
    assert result.in_top_k["a"] == pytest.approx(exact["a"], abs=0.015)
    assert result.in_top_k["b"] == pytest.approx(exact["b"], abs=0.015) and result.in_top_k["c"] == 0
    assert result.same_top_k == result.in_top_k["a"]
    assert result.expected_overlap == pytest.approx(exact["a"] ** 2 + exact["b"] ** 2, abs=0.02)  # two reruns agree
    assert result.low["c"] == 0.0 and result.high["c"] == 1.5  # c is 0.5 in one image: 0 to 3 draws of it


@given(st.integers(2, 5), st.integers(1, 3), st.integers(0, 2**16))
def test_resampling_keeps_each_group_to_its_own_images(per_group: int, groups: int, seed: int) -> None:
    labels = [f"g{g}" for g in range(groups) for _ in range(per_group)]
    rows = np.zeros((len(labels), groups))
    for index, label in enumerate(labels):  # column g holds 1 for the images of group g
        rows[index, int(label[1:])] = 1.0
    sums = resampled_sums(rows, labels, 30, seed)
    np.testing.assert_array_equal(sums, np.full((30, groups), float(per_group)))  # as many draws as it has images
    low, high = score_intervals(rows, labels, resamples=30, seed=seed)
    np.testing.assert_array_equal(low, high)


def test_identical_images_give_a_certain_top_k_and_one_image_per_group_is_refused() -> None:
    image = _images(1)[0]
    scores = rank_layers(conv_net(1), [image] * 4, method="conductance", n_steps=4, progress=False)
    result = scores.confidence(k=1)
    assert result.same_top_k == result.expected_overlap == result.in_top_k[result.selected[0]] == 1.0
    assert all(result.low[n] == pytest.approx(result.high[n], rel=1e-12) for n in scores.names)
    assert "P(same top k) = 1.000" in result.table()
    single = rank_layers(conv_net(1), [{"lq": image, "task": ["a"]}, {"lq": image, "task": ["b"]}] * 2
                         + [{"lq": image, "task": ["c"]}], n_steps=4, group="task", progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"at least 2 images in every group; \['c'\]"):
        single.confidence()
    with pytest.raises(ValueError, match="no per-image scores"):
        LayerScores({"a": 1.0}, "mac").confidence()
    for bad, words in (({"resamples": 1}, "resamples"), ({"level": 1.0}, "level"), ({"k": 0}, "k"),
                       ({"seed": -1}, "seed must be an integer >= 0"), ({"seed": 1.5}, "seed")):  # fmt: skip
        with pytest.raises((ValueError, TypeError), match=words):
            scores.confidence(**bad)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        scores.lower_bounds(seed=-1)


class _Opposed(nn.Module):
    """Two branches: ``left`` sees channel 0, ``right`` channel 1; which one matters depends on the image."""

    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)
        for conv in (self.left, self.right):
            nn.init.ones_(conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.left(x[:, :1]) + self.right(x[:, 1:2])


def _opposed_images(count: int) -> list:
    """Images alternately strong in channel 0 and in channel 1."""
    images = []
    for index in range(count):
        image = torch.full((1, 2, 4, 4), 0.1, dtype=torch.float64)
        image[:, index % 2] = 1.0 + 0.01 * index
        images.append(image)
    return images


def test_until_stable_stops_at_the_minimum_on_identical_images() -> None:
    image, path = _images(1)[0], LinearPath()
    scores = rank_layers(conv_net(2), [image] * 12, method="conductance", path=path, n_steps=4, progress=False,
                         until_stable=0.95)  # fmt: skip
    assert scores.images == 3 and scores.config["stopped"] == {"passes": 1, "images": 3, "same_top_k": 1.0,
                                                               "reached": True}  # fmt: skip
    batches = [{"lq": torch.cat([image, image]), "task": ["noise", "blur"]} for _ in range(6)]
    rule = UntilStable(0.9, k=1, min_per_group=2)
    grouped = rank_layers(conv_net(2), batches, method="conductance", n_steps=4, group="task", progress=False,
                          until_stable=rule)  # fmt: skip
    assert grouped.images == 4 and sorted(grouped.groups) == ["blur", "blur", "noise", "noise"]


def test_until_stable_does_not_stop_early_when_the_images_disagree() -> None:
    images = _opposed_images(10)
    with pytest.warns(UserWarning, match="less certain than asked"):
        scores = rank_layers(_Opposed().double(), images, method="conductance", target="sum", n_steps=4, progress=False,
                             until_stable=UntilStable(0.95, k=1))  # fmt: skip
    assert scores.images == 10 and scores.config["stopped"]["reached"] is False
    assert scores.config["stopped"]["passes"] > 1 and scores.config["stopped"]["same_top_k"] < 0.95


def test_until_stable_stopping_at_n_images_is_the_ranking_of_the_first_n() -> None:
    images, model = _images(16, seed=3), conv_net(3)
    stopped = rank_layers(model, images, n_steps=4, progress=False, until_stable=UntilStable(0.6, k=1))
    plain = rank_layers(model, images, n_steps=4, progress=False, max_images=stopped.images)
    assert stopped.names == plain.names and all(stopped[n] == plain[n] for n in plain)  # the same pixel orders
    assert stopped.config["stopped"]["images"] == stopped.images and stopped.config["until_stable"]["threshold"] == 0.6


def test_until_stable_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    model, images = conv_net(0), _images(4)
    with pytest.raises(TypeError, match="iterated again"):
        rank_layers(model, iter(images), n_steps=2, progress=False, until_stable=0.9)
    with pytest.raises(ValueError, match="checkpoint"):
        rank_layers(model, images, n_steps=2, progress=False, until_stable=0.9, checkpoint=tmp_path / "c.json")

    class Shuffled:
        def __init__(self) -> None:
            self.passes, self.images = 0, _opposed_images(8)

        def __iter__(self):
            self.passes += 1
            return iter(self.images[self.passes % 2 :] + self.images[: self.passes % 2])

    with pytest.raises(ValueError, match="other images on another pass"):
        rank_layers(_Opposed().double(), Shuffled(), method="conductance", target="sum", n_steps=2, progress=False,
                    until_stable=UntilStable(0.99, k=1, min_per_group=2))  # fmt: skip
    for bad in (0.0, 1.0, "high"):
        with pytest.raises((ValueError, TypeError), match="threshold"):
            RankSettings(until_stable=bad)
    with pytest.raises(ValueError, match="min_per_group"):
        UntilStable(0.9, min_per_group=1)


def test_check_steps_compares_n_with_half_and_warns_when_the_top_k_moves() -> None:
    model = conv_net(0, depth=4)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for n in (4, 8):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check = check_steps(model, [x], RankSettings(n_steps=n), k=1, images=2)
        at = {m: rank_layers(model, [x], n_steps=m, progress=False).top_k(1) for m in (n, n // 2)}
        assert check.top_k == at[n] and check.top_k_at_half == at[n // 2]
        moved = at[n] != at[n // 2]
        assert (check.overlap == 1) is not moved and any("too small" in str(w.message) for w in caught) is moved
        assert check.enough == (not moved and max(check.error, check.estimate, check.input_gap) <= 0.1)
    with pytest.raises(ValueError, match="sums no steps"):
        check_steps(model, [x], RankSettings(method="gradnorm"))


def test_the_error_estimate_of_check_steps_tracks_the_true_error_on_a_smooth_path() -> None:
    model = conv_net(1)
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = rank_layers(model, [x], method="conductance", n_steps=4096, rule="trapezoid", progress=False)
    for rule in ("left", "trapezoid"):
        for n_steps in (32, 33, 9):  # an odd N is compared with (N - 1) / 2: a ratio above 2
            settings = RankSettings("conductance", n_steps=n_steps, rule=rule)
            check = check_steps(model, [x], settings, k=1, images=1, warn=False)
            at_n = rank_layers(model, [x], settings=settings, progress=False)
            true = max(abs(at_n[n] - exact[n]) / abs(exact[n]) for n in exact)
            assert true / 1.6 < check.error < true * 1.6, (rule, n_steps, check.error, true)


def test_check_steps_counts_k_in_the_budget_and_refuses_settings_outside_its_settings() -> None:
    model = conv_net(0, depth=4)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    check = check_steps(model, [x], RankSettings(n_steps=8), k=0.3, images=2, warn=False, budget="parameters")
    at_n = rank_layers(model, [x], n_steps=8, progress=False)
    assert check.top_k == at_n.top_k(0.3, "parameters") != at_n.top_k(0.3)
    with pytest.raises(TypeError, match=r"not as \['n_steps'\] \(they would change both runs\)"):
        check_steps(model, [x], RankSettings(n_steps=8), n_steps=2)


def test_the_command_prints_and_writes_the_confidence_and_stops_when_stable(tmp_path: Path, capsys) -> None:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    generator = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(generator.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    (tmp_path / "nets.py").write_text("import torch\nfrom torch import nn\ndef build():\n    torch.manual_seed(0)\n"
                                      "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), "
                                      "nn.Conv2d(4, 3, 3, padding=1))\n")  # fmt: skip
    common = ["rank", "--model", f"{tmp_path / 'nets.py'}:build", "--images", str(folder), "--n-steps", "4",
              "--degrade", "noise:25,jpeg:50", "--k", "1", "--no-progress"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "s.json"), "--check-steps"]) == 0
    printed = capsys.readouterr().out
    assert "check of N: N = 4 against N = 2" in printed and "P(top k)" in printed and "P(same top k)" in printed
    assert "confidence" in json.loads((tmp_path / "s.json").read_text())
    assert main([*common, "--out", str(tmp_path / "u.json"), "--until-stable", "0.5"]) == 0
    document = json.loads((tmp_path / "u.json").read_text())
    assert document["config"]["stopped"]["images"] == document["images"] <= 6
    with pytest.raises(SystemExit) as refused:
        main([*common, "--out", str(tmp_path / "x.json"), "--until-stable", "1.5"])
    assert refused.value.code == 2 and "probability in (0, 1)" in capsys.readouterr().err


@given(rows=st.integers(2, 8), seed=st.integers(0, 5))
def test_distinct_sources_resample_exactly_as_images_do(rows: int, seed: int) -> None:
    from macattr.confidence import resampled_sums

    per_image = np.random.default_rng(seed).random((rows, 3))
    groups = [str(i % 2) for i in range(rows)] if rows >= 4 else [""] * rows
    plain = resampled_sums(per_image, groups, 50, seed)
    by_source = resampled_sums(per_image, groups, 50, seed, sources=[f"s{i}" for i in range(rows)])
    np.testing.assert_array_equal(plain, by_source)


def test_images_of_one_source_are_drawn_together_and_widen_the_intervals() -> None:
    """Three photographs, each under five degradations that barely change its scores: resampling the 15 images
    as independent claims a certainty that three sources do not give."""
    rng = np.random.default_rng(0)
    photos = rng.random((3, 4))
    per_image = np.repeat(photos, 5, axis=0) + 1e-3 * rng.random((15, 4))
    tasks = [f"task{t}" for _ in range(3) for t in range(5)]
    sources = [f"photo{p}" for p in range(3) for _ in range(5)]
    scores = LayerScores(dict(zip("abcd", per_image.sum(0).tolist())), "mac", images=15, per_image=per_image,
                         groups=tasks, sources=sources)  # fmt: skip
    plain = LayerScores(dict(scores), "mac", images=15, per_image=per_image, groups=tasks)
    by_source, by_image = scores.confidence(k=2, resamples=400), plain.confidence(k=2, resamples=400)
    assert by_source.sources == 3 and by_image.sources == 0 and "from 3 sources" in by_source.summary()
    width = {name: (by_source.high[name] - by_source.low[name]) / (by_image.high[name] - by_image.low[name])
             for name in "abcd"}  # fmt: skip
    assert min(width.values()) > 1.5, width
    with pytest.raises(ValueError, match="draws sources and needs at least 2"):
        LayerScores(dict(scores), "mac", images=15, per_image=per_image, groups=tasks,
                    sources=["one photo"] * 15).confidence()  # fmt: skip


def test_rankings_carry_each_image_s_source_through_files_and_checkpoints(tmp_path: Path) -> None:
    from macattr.restoration.data import degraded_batches

    model = conv_net(0)
    clean = torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    batches = degraded_batches(clean, ["noise25", "blur2"], seed=0, sources=["a.png", "b.png", "c.png"])
    kwargs = dict(n_steps=3, seed=0, progress=False, group="task", checkpoint=tmp_path / "ck.json")
    scores = rank_layers(model, batches, **kwargs)
    assert scores.sources == ["a.png", "b.png", "c.png"] * 2 and scores.groups == ["noise25"] * 3 + ["blur2"] * 3
    again = rank_layers(model, batches, **kwargs)  # from the finished checkpoint
    assert again.sources == scores.sources
    loaded = LayerScores.load(scores.save(tmp_path / "s.json"))
    assert loaded.sources == scores.sources and loaded.confidence(k=1, resamples=50).sources == 3


def test_lower_bounds_are_the_bootstrap_s_lower_ends_and_keep_the_budget_records() -> None:
    from macattr.confidence import score_intervals

    rng = np.random.default_rng(1)
    per_image = rng.random((8, 3))
    groups = ["a"] * 4 + ["b"] * 4
    scores = LayerScores(dict(zip("xyz", per_image.sum(0).tolist())), "mac", images=8, per_image=per_image,
                         groups=groups, parameters={"x": 1, "y": 2, "z": 3}, model_parameters=6)  # fmt: skip
    low, _ = score_intervals(per_image, groups, 0.9, 300, 4)
    bounded = scores.lower_bounds(0.9, 300, 4)
    assert list(bounded.values()) == low.tolist() and bounded.parameters == scores.parameters
    assert bounded.config["selected_on"] == "0.9 lower bounds" and all(bounded[n] <= scores[n] for n in "xyz")
    with pytest.raises(ValueError, match="needs them"):
        LayerScores({"x": 1.0}, "mac").lower_bounds()
