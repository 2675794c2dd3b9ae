"""Path objects: end points, thresholds, smoothing, determinism, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from macattr.paths import LinearPath, MaskAttributionPath, grid


def _image(seed: int, n: int = 2, size: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1


@given(st.integers(0, 10_000), st.integers(1, 40))
def test_linear_path_end_points_are_baseline_and_input(seed: int, n_steps: int) -> None:
    x = _image(seed)
    b = torch.full_like(x, 0.25)
    alphas = grid(LinearPath(), n_steps)
    points = LinearPath().bind((x,), (b,))(alphas)[0].reshape(n_steps + 1, *x.shape)
    assert alphas[0] == 0 and alphas[-1] == 1 and len(alphas) == n_steps + 1
    torch.testing.assert_close(points[0], b, rtol=0, atol=0)
    torch.testing.assert_close(points[-1], x, rtol=0, atol=1e-15)


@given(st.integers(0, 10_000), st.sampled_from([0.25, 0.5, 0.75, 1.0]))
def test_hard_mask_path_end_points(seed: int, ratio: float) -> None:
    x = _image(seed, size=8)
    path = MaskAttributionPath(mask_ratio=ratio, sharpness=math.inf, seed=seed)
    points = path.bind((x,), (torch.zeros(()).double(),))
    start, end = points(torch.tensor(path.interval(), dtype=torch.float64))[0].split(2)
    torch.testing.assert_close(end, x, rtol=0, atol=0)
    masked = (start == 0).all(dim=1)  # (N, H, W): a pixel is masked in every channel or none
    assert ((start == 0).any(dim=1) == masked).all()
    assert ((start == x) | (start == 0)).all()
    expected = 64 - math.floor((1 - ratio) * 64 + 1e-9)  # thresholds k/64 strictly above 1 - r
    assert masked.flatten(1).sum(1).tolist() == [expected, expected]


@given(st.integers(0, 10_000), st.sampled_from([1, 2, 4]))
def test_default_thresholds_are_a_permutation_per_sample_and_patch(seed: int, patch: int) -> None:
    x = _image(seed, n=3, size=8)
    thresholds = MaskAttributionPath(patch_size=patch, seed=seed).pixel_thresholds(x)
    cells = 64 // patch**2
    for sample in thresholds:
        per_patch = sample[::patch, ::patch]
        expected = torch.arange(1, cells + 1, dtype=torch.float64) / cells
        torch.testing.assert_close(per_patch.flatten().sort().values, expected)
        blocks = sample.reshape(8 // patch, patch, 8 // patch, patch)
        assert (blocks == blocks[:, :1, :, :1]).all()
    assert not torch.equal(thresholds[0], thresholds[1])


def test_same_seed_same_thresholds_and_global_seed_for_none() -> None:
    x = _image(0, size=8)
    a = MaskAttributionPath(seed=3).pixel_thresholds(x)
    b = MaskAttributionPath(seed=3).pixel_thresholds(x)
    c = MaskAttributionPath(seed=4).pixel_thresholds(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(11)
    d = MaskAttributionPath().pixel_thresholds(x)
    torch.manual_seed(11)
    e = MaskAttributionPath().pixel_thresholds(x)
    assert torch.equal(d, e)


def test_sigmoid_path_formula_matches_corrected_eq6() -> None:
    x = _image(1, n=1, size=4)
    b = torch.full_like(x, 0.3)
    thresholds = torch.linspace(0.05, 0.95, 16, dtype=torch.float64).reshape(4, 4)
    path = MaskAttributionPath(sharpness=7.0, thresholds=thresholds)
    alpha = 0.62
    point = path.bind((x,), (b,))(torch.tensor([alpha]))[0]
    expected = b + (x - b) / (1 + torch.exp(-7.0 * (alpha - thresholds)))
    torch.testing.assert_close(point, expected)


@given(st.integers(0, 10_000), st.floats(0.5, 1.0))
def test_sigmoid_path_tends_to_hard_path(seed: int, alpha: float) -> None:
    x = _image(seed, size=6)
    thresholds = MaskAttributionPath(seed=seed).pixel_thresholds(x)
    assume((thresholds - alpha).abs().min() > 1e-3)  # at a threshold the sigmoid is 1/2 for every δ
    alphas = torch.tensor([alpha], dtype=torch.float64)
    hard = MaskAttributionPath(sharpness=math.inf, thresholds=thresholds).bind((x,), (0 * x,))(alphas)[0]
    errors = [
        (MaskAttributionPath(sharpness=d, thresholds=thresholds).bind((x,), (0 * x,))(alphas)[0] - hard).abs().max()
        for d in (1e2, 1e4, 1e6)
    ]
    assert errors[0] >= errors[1] >= errors[2]
    assert errors[2] < 1e-12


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"mask_ratio": 0.0}, ValueError, "mask_ratio"),
        ({"mask_ratio": 1.5}, ValueError, "mask_ratio"),
        ({"mask_ratio": "half"}, TypeError, "mask_ratio"),
        ({"sharpness": 0.0}, ValueError, "sharpness"),
        ({"sharpness": -1.0}, ValueError, "sharpness"),
        ({"sharpness": math.nan}, ValueError, "sharpness"),
        ({"patch_size": 0}, ValueError, "patch_size"),
        ({"patch_size": 1.5}, TypeError, "patch_size"),
        ({"thresholds": torch.full((4, 4), 1.5)}, ValueError, "thresholds"),
        ({"thresholds": torch.rand(4)}, ValueError, "thresholds"),
        ({"thresholds": [0.5]}, TypeError, "thresholds"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_bad_path_arguments_are_refused(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        MaskAttributionPath(**kwargs)


def test_bad_shapes_for_an_input_are_refused() -> None:
    x = _image(0, size=6)
    with pytest.raises(ValueError, match="patch_size must divide"):
        MaskAttributionPath(patch_size=4).pixel_thresholds(x)
    with pytest.raises(ValueError, match="thresholds must have shape"):
        MaskAttributionPath(thresholds=torch.rand(5, 5)).pixel_thresholds(x)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        MaskAttributionPath().pixel_thresholds(torch.rand(2, 6))
    with pytest.raises(ValueError, match="start must be < end"):
        LinearPath(start=0.5, end=0.5)
    with pytest.raises(ValueError, match="n_steps"):
        grid(LinearPath(), 0)
