"""The method registry and paths as ranking settings, against direct computations with the attribution classes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List

import pytest
import torch
from torch import nn

from conftest import conv_net
from macattr import (
    BlurPath,
    LayerPathConductance,
    LayerPathInternalInfluence,
    LinearPath,
    MaskAttributionPath,
    RankSettings,
    rank_layers,
    targets,
)
from macattr.plots import describe, score_label
from macattr.ranking.batches import image_seed
from macattr.ranking.methods import Method, get_method, methods, names, register, unregister


def _images(seed: int, n: int = 3, size: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _direct(cls: type, model: nn.Module, x: torch.Tensor, path, n_steps: int, **kwargs) -> List[float]:
    """Per layer, the sum over images of the mean |attribution|, with the attribution class called directly."""
    layers = [model[0], model[2], model[4]]
    attributions = cls(targets.gradient_magnitude(model), layers).attribute(x, n_steps=n_steps, path=path, **kwargs)
    return [float(a.abs().flatten(1).mean(1).sum()) for a in attributions]


def test_settings_with_the_ig_alias_run_internal_influence() -> None:
    model, x = conv_net(0), _images(0)
    scores = rank_layers(model, [x], settings=RankSettings(method="ig", n_steps=6), progress=False)
    assert scores.method == "internal_influence"
    expected = _direct(LayerPathInternalInfluence, model, x, LinearPath(), 6)
    torch.testing.assert_close(list(scores.values()), expected, rtol=1e-10, atol=0)


def test_a_method_that_conflicts_with_the_settings_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"method='gradnorm' conflicts with settings.method='internal_influence'"):
        rank_layers(conv_net(0), [_images(0)], "gradnorm", settings=RankSettings(method="ig"), progress=False)
    same = rank_layers(conv_net(0), [_images(0)], "ig", settings=RankSettings(method="internal_influence", n_steps=2),
                       progress=False)  # fmt: skip
    assert same.method == "internal_influence"


def test_conductance_along_the_blur_path_matches_the_attribution_class_and_says_so() -> None:
    model, x = conv_net(1), _images(1, size=8)  # σ = 2: a 13-point kernel, reflect padding needs 7 pixels
    scores = rank_layers(model, [x[:2], x[2:]], "conductance", path=BlurPath(2.0), n_steps=5, progress=False)
    assert scores.config["path"] == {"type": "BlurPath", "sigma": 2.0, "size": None}
    assert "BlurPath" in describe(scores)
    expected = _direct(LayerPathConductance, model, x, BlurPath(2.0), 5)
    torch.testing.assert_close(list(scores.values()), expected, rtol=1e-10, atol=0)


def test_a_resume_along_another_path_is_refused(tmp_path: Path) -> None:
    model, x = conv_net(2), _images(2, size=8)
    kwargs = dict(n_steps=3, progress=False, checkpoint=tmp_path / "ck.json")
    rank_layers(model, [x], "conductance", path=BlurPath(2.0), **kwargs)
    with pytest.raises(ValueError, match="settings differ"):
        rank_layers(model, [x], "conductance", path=BlurPath(3.0), **kwargs)
    with pytest.raises(ValueError, match="settings differ"):
        rank_layers(model, [x], "conductance", **kwargs)


def test_a_mask_path_given_as_a_setting_is_the_shortcut_and_gets_per_image_seeds() -> None:
    model, x = conv_net(3), _images(3)
    short = rank_layers(model, [x], mask_ratio=0.25, sharpness=50.0, n_steps=4, seed=7, progress=False)
    given = rank_layers(model, [x[:1], x[1:]], path=MaskAttributionPath(0.25, 50.0), n_steps=4, seed=7,
                        progress=False)  # fmt: skip
    assert short.config == given.config and dict(short) == pytest.approx(dict(given), rel=1e-12)
    seeds = [image_seed(7, i) for i in range(3)]
    expected = _direct(LayerPathConductance, model, x, MaskAttributionPath(0.25, 50.0, seed=seeds), 4)
    torch.testing.assert_close(list(short.values()), expected, rtol=1e-10, atol=0)


def test_an_importance_ordered_mask_path_is_recorded_by_its_map() -> None:
    model, x = conv_net(4), _images(4)
    importance = torch.rand(6, 6, generator=torch.Generator().manual_seed(0))
    scores = rank_layers(model, [x], path=MaskAttributionPath(order=importance), n_steps=3, progress=False)
    assert scores.config["path"]["order"].startswith("tensor(6, 6) sha256:")


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(method="mac", path=LinearPath()), ValueError, "integrates along a MaskAttributionPath"),
        (dict(method="conductance", mask_ratio=0.3), ValueError, "does not use it"),
        (dict(method="gradnorm", path=LinearPath()), ValueError, "integrates along no path"),
        (dict(path=MaskAttributionPath(), sharpness=10.0), ValueError, "either path= or the mask options"),
        (dict(method="conductance", path="blur"), TypeError, "IntegrationPath"),
        (dict(method="shap"), ValueError, "method must be one of"),
    ],
)
def test_paths_and_methods_that_do_not_fit_are_refused(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        RankSettings(**kwargs)


def test_a_mask_path_with_its_own_seed_or_per_image_maps_is_refused_by_a_ranking() -> None:
    model, x = conv_net(0), _images(0)
    with pytest.raises(ValueError, match="build the path with seed=None"):
        rank_layers(model, [x], path=MaskAttributionPath(seed=3), n_steps=2, progress=False)
    with pytest.raises(ValueError, match="one map per sample"):
        rank_layers(model, [x], path=MaskAttributionPath(order=torch.rand(3, 6, 6)), n_steps=2, progress=False)


def test_a_new_method_is_one_entry_and_its_scorer() -> None:
    def weight_scorer(context):  # mean |weight| of each layer, one row per image
        means = torch.tensor([float(m.weight.detach().abs().mean()) for m in context.layers], dtype=torch.float64)
        return lambda x, y, indices: means.expand(x.shape[0], -1)

    register(Method("weight_size", "weight size", "sum over images of mean |w|", scorer=weight_scorer))
    try:
        model = conv_net(5)
        scores = rank_layers(model, [_images(0)], "weight_size", progress=False)
        expected = {n: 3 * float(model[int(n)].weight.detach().abs().mean()) for n in ("0", "2", "4")}
        assert scores == pytest.approx(expected)
        assert describe(scores) == "weight size, 3 images"
        assert score_label(scores) == "score (sum over images of mean |w|)"
        assert "path" not in scores.config and "n_steps" not in scores.config
        with pytest.raises(ValueError, match="is taken"):
            register(Method("weight_size", "again", "x", scorer=weight_scorer))
    finally:
        unregister("weight_size")
    assert "weight_size" not in names()


def test_records_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one of scorer= .* from_weights= .* or order="):
        Method("none", "none", "x")
    with pytest.raises(ValueError, match="exactly one of"):
        Method("both", "both", "x", order=lambda n, s: {}, from_weights=lambda layers: {})
    with pytest.raises(ValueError, match="cannot need ground truth"):
        Method("weights", "weights", "x", from_weights=lambda layers: {}, needs_ground_truth=True)
    with pytest.raises(ValueError, match="identifier"):
        Method("two words", "x", "x", order=lambda n, s: {})
    with pytest.raises(TypeError, match="Method record"):
        register("mac")
    assert get_method("ig") is get_method("internal_influence")
    assert [m.name for m in methods() if m.uses_path] == ["mac", "conductance", "internal_influence"]
    assert [m.name for m in methods() if not m.needs_loader] == ["kappa", "random", "random_blocks", "uniform",
                                                                  "last", "first"]  # fmt: skip


def test_the_selection_page_lists_every_registered_method() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "selection.md").read_text()
    table = page.split("| method | score | data | path |", 1)[1].split("\n\n", 1)[0]
    assert [line.split("`")[1] for line in table.splitlines()[2:]] == names()


def test_target_label_attributes_each_images_own_class() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(64, 5)).double()
    x, labels = _images(0, n=3), torch.tensor([4, 0, 2])
    scores = rank_layers(model, [(x, labels)], target="label", n_steps=4, seed=1, progress=False)
    path = MaskAttributionPath(seed=[image_seed(1, i) for i in range(3)])
    attributions = LayerPathConductance(model, [model[0], model[3]]).attribute(x, target=[4, 0, 2], n_steps=4,
                                                                               path=path)  # fmt: skip
    expected = [float(a.abs().flatten(1).mean(1).sum()) for a in attributions]
    torch.testing.assert_close(list(scores.values()), expected, rtol=1e-10, atol=0)
    assert scores.config["target"] == "label"
    with pytest.raises(TypeError, match="target='label' needs .input, label. batches"):
        rank_layers(model, [(x, x)], target="label", n_steps=2, progress=False)
    with pytest.raises(ValueError, match="takes no target"):
        RankSettings(method="gradnorm", target="label")


def test_a_random_draw_needs_no_depth_order_and_an_order_without_a_loader_warns() -> None:
    model = conv_net(0)
    register(Method("coin", "coin", "coin", order=lambda names, seed: {n: float(seed) for n in names},
                    random_draw=True))  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a random draw does not follow depth, so nothing to warn about
            assert set(rank_layers(model, None, "coin", progress=False).names) == {"0", "2", "4"}
        with pytest.warns(UserWarning, match="orders the layers as they are registered"):
            rank_layers(model, None, "last", progress=False)
    finally:
        unregister("coin")
    with pytest.raises(ValueError, match="is a random draw, so it needs order="):
        Method("bad", "bad", "bad", scorer=get_method("mac").scorer, random_draw=True)
