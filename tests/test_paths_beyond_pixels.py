"""Paths beyond pixels: token and voxel masks, excluded positions, importance order, the blur path, custom paths,
and the pattern for transformers."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

import macattr
from macattr import BlurPath, LayerMAC, LayerPathConductance, MaskAttributionPath, rank_layers, targets

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = torch.linspace(0, 1, 11, dtype=torch.float64)


def _points(path, x: Tensor, baseline: Tensor, alphas: Tensor = ALPHAS) -> Tensor:
    """The path points (S, N, ...) of one input."""
    return path.bind((x,), (baseline,))(alphas)[0].unflatten(0, (len(alphas), x.shape[0]))


@given(st.integers(0, 1000), st.sampled_from([0.25, 0.5, 1.0]), st.sampled_from([1, 2, 3]))
def test_sequence_masks_cover_whole_tokens(seed: int, ratio: float, patch: int) -> None:
    x = torch.rand(2, 12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 1
    path = MaskAttributionPath(mask_ratio=ratio, sharpness=math.inf, patch_size=patch, mask_dims="sequence", seed=seed)
    points = _points(path, x, torch.zeros(()), torch.tensor(path.interval(), dtype=torch.float64))
    start, end = points[0], points[1]
    torch.testing.assert_close(end, x, rtol=0, atol=0)
    masked = (start == 0).all(dim=2)  # (N, T): a token is masked in its whole embedding or not at all
    assert ((start == 0).any(dim=2) == masked).all()
    cells = 12 // patch
    assert torch.isin(masked.reshape(2, cells, patch).float().mean(2), torch.tensor([0.0, 1.0])).all()  # patches
    assert masked.sum(1).tolist() == [round(ratio * cells) * patch] * 2


def test_volume_masks_and_explicit_dimensions_agree_with_the_named_layouts() -> None:
    volume = torch.rand(2, 3, 4, 6, 6, dtype=torch.float64)
    named = MaskAttributionPath(mask_dims="volume", patch_size=2, seed=1, sharpness=math.inf)
    explicit = MaskAttributionPath(mask_dims=(2, 3, 4), patch_size=(2, 2, 2), seed=1, sharpness=math.inf)
    torch.testing.assert_close(_points(named, volume, torch.zeros(())), _points(explicit, volume, torch.zeros(())))
    start = _points(named, volume, torch.zeros(()), torch.tensor([0.5], dtype=torch.float64))[0]
    voxels = (start == 0).all(dim=1)  # a voxel covers all channels
    assert voxels.float().mean().item() == 0.5
    image = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(
        _points(MaskAttributionPath(seed=2), image, torch.zeros(())),
        _points(MaskAttributionPath(seed=2, mask_dims=(2, 3)), image, torch.zeros(())),
    )
    with pytest.raises(ValueError, match=r"needs inputs of shape \(N, T, D\)"):
        MaskAttributionPath(mask_dims="sequence").pixel_thresholds(image)
    with pytest.raises(ValueError, match="mask_dims must be one of"):
        MaskAttributionPath(mask_dims="audio")
    with pytest.raises(ValueError, match="mask_dims must be a layout name or dimension indices"):
        MaskAttributionPath(mask_dims=(0, 2))
    with pytest.raises(ValueError, match="patch_size must be one integer or one per masked dimension"):
        MaskAttributionPath(mask_dims="volume", patch_size=(2, 2))


@given(st.integers(0, 1000))
def test_excluded_positions_never_change_and_are_not_counted(seed: int) -> None:
    x = torch.rand(3, 10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 1
    lengths = torch.tensor([10, 6, 3])
    padding = torch.arange(10)[None, :] >= lengths[:, None]  # (N, T)
    path = MaskAttributionPath(mask_ratio=1.0, mask_dims="sequence", seed=seed, exclude=padding)
    thresholds, excluded = path.cell_thresholds(x)
    for row, length in enumerate(lengths.tolist()):
        counted = thresholds[row, :length].sort().values
        torch.testing.assert_close(counted, torch.arange(1, length + 1, dtype=torch.float64) / length)
    points = _points(path, x, torch.zeros(()))
    assert (points[:, padding] == x[padding]).all()  # padding stays the input at every α
    assert (points[0][~padding] == 0).float().mean() > 0.99  # everything else starts masked (r = 1)


def test_importance_orders_the_reveal_and_ties_follow_the_seed() -> None:
    importance = torch.tensor([[0.3, 0.9, 0.1, 0.5], [0.2, 0.2, 0.2, 0.8]])
    x = torch.rand(2, 3, 1, 4)
    ascending = MaskAttributionPath(order=importance[:, None, :].expand(2, 1, 4), seed=0).pixel_thresholds(x)[:, 0]
    assert ascending[0].argsort().tolist() == [2, 0, 3, 1]  # least important revealed first
    descending = MaskAttributionPath(order=importance[:, None], descending=True, seed=0).pixel_thresholds(x)[:, 0]
    assert descending[0].argsort().tolist() == [1, 3, 0, 2]
    assert ascending[1].argmax().item() == 3 and descending[1].argmin().item() == 3
    ties = [MaskAttributionPath(order=importance[:, None], seed=s).pixel_thresholds(x)[1, 0, :3] for s in range(6)]
    assert len({tuple(t.argsort().tolist()) for t in ties}) > 1  # tied cells in a seeded random order
    again = MaskAttributionPath(order=importance[:, None], seed=3).pixel_thresholds(x)[1, 0, :3]
    assert torch.equal(again, ties[3])
    patched = MaskAttributionPath(order=torch.arange(16.0).reshape(4, 4), patch_size=2, seed=0)
    cells = patched.cell_thresholds(torch.rand(1, 3, 4, 4))[0][0]
    assert cells.flatten().argsort().tolist() == [0, 1, 2, 3]  # patch means 2.5, 4.5, 10.5, 12.5


def test_random_order_is_the_default_and_unchanged() -> None:
    x = torch.rand(3, 3, 4, 6)
    thresholds = MaskAttributionPath(seed=5).pixel_thresholds(x)
    keys = torch.rand(3, 24, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = ((keys.argsort(dim=1) + 1).double() / 24).reshape(3, 4, 6)  # macattr 0.1's thresholds
    torch.testing.assert_close(thresholds, expected, rtol=0, atol=0)
    per_sample = MaskAttributionPath(seed=[5, 6, 7]).pixel_thresholds(x)
    one = MaskAttributionPath(seed=6).pixel_thresholds(x[1:2])
    torch.testing.assert_close(per_sample[1:2], one, rtol=0, atol=0)
    with pytest.raises(ValueError, match="one seed per sample"):
        MaskAttributionPath(seed=[1, 2]).pixel_thresholds(x)
    with pytest.raises(ValueError, match="either thresholds or order"):
        MaskAttributionPath(thresholds=torch.rand(4, 6), order=torch.rand(4, 6))


class SequenceModel(nn.Module):
    """embedding-space input (N, T, D) → two transformer-style blocks → linear head on the mean token."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            for _ in range(2)
        )
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, embeddings: Tensor) -> Tensor:
        h = embeddings
        for block in self.blocks:
            h = h + block(h)
        h = h + torch.softmax(h @ self.mix(h).transpose(1, 2), dim=-1) @ h  # attention across tokens
        return self.head(h.mean(1))


@given(st.integers(0, 500), st.sampled_from(["sequence", "volume"]))
def test_completeness_is_exact_where_the_target_is_linear(seed: int, layout: str) -> None:
    torch.manual_seed(seed)
    if layout == "sequence":
        model, x, target = SequenceModel().double(), torch.rand(2, 6, 8, dtype=torch.float64), 1
        layer = model.head
    else:
        model = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv3d(3, 2, 1)).double()
        x, target, layer = torch.rand(2, 2, 4, 4, 4, dtype=torch.float64), None, model[2]
    forward = model if target is not None else targets.output_sum(model)
    _, delta = LayerMAC(forward, layer).attribute(
        x, 0.0, target, n_steps=7, seed=seed, mask_dims=layout, return_convergence_delta=True
    )
    assert delta.abs().max() < 1e-10


def test_transformer_blocks_are_ranked_over_embeddings_with_a_mask_token_baseline() -> None:
    torch.manual_seed(0)
    model = SequenceModel().double()
    mask_token = torch.rand(8, dtype=torch.float64)
    batches = [torch.rand(2, 6, 8, dtype=torch.float64) for _ in range(2)]
    scores = rank_layers(model, batches, layers=re.compile(r"blocks\.\d"), target=2, mask_dims="sequence",
                         baselines=mask_token, n_steps=6, seed=0, progress=False)  # fmt: skip
    assert scores.names == ["blocks.0", "blocks.1"] and scores.images == 4 and all(v > 0 for v in scores.values())
    assert scores.config["path"]["mask_dims"] == "sequence"
    with macattr.freeze_except(model, scores.top_k(1), recurse=True) as trainable:
        block = dict(model.named_modules())[scores.top_k(1)[0]]
        assert {id(p) for p in trainable} == {id(p) for p in block.parameters()}
    with pytest.raises(ValueError, match="own no parameters of their own"):
        macattr.freeze_except(model, ["blocks.0"])


def test_the_transformers_example_runs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "transformers" / "rank_blocks.py")],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 blocks" in result.stdout and "fine-tuning" in result.stdout


def test_blur_path_end_points_and_monotone_blur() -> None:
    x = torch.rand(2, 3, 20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    path = BlurPath(sigma=3.0)
    assert path.kernel_size == 19 and path.interval() == (0.0, 1.0)
    points = _points(path, x, torch.zeros(()))
    torch.testing.assert_close(points[-1], x, rtol=0, atol=0)
    from macattr.restoration.degradations import gaussian_blur

    torch.testing.assert_close(points[0], path.blur(x, torch.tensor([3.0])), rtol=0, atol=0)  # α = 0: σ = 3
    torch.testing.assert_close(BlurPath(sigma=2.0, size=15).blur(x, torch.tensor([2.0])), gaussian_blur(x, 2.0))
    detail = [float((p[..., 1:, :] - p[..., :-1, :]).abs().mean()) for p in points]  # high-frequency content
    assert all(a < b for a, b in zip(detail, detail[1:]))  # less blurred as α grows
    torch.testing.assert_close(points[:, :, 0].mean((-1, -2)), x[:, 0].mean((-1, -2)).expand(11, 2), atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="sigma"):
        BlurPath(sigma=0)
    with pytest.raises(ValueError, match="size must be odd"):
        BlurPath(sigma=1.0, size=4)
    with pytest.raises(ValueError, match="needs H and W > 9"):
        path.blur(torch.rand(1, 3, 8, 8), torch.tensor([1.0]))


@given(st.integers(0, 500))
def test_blur_path_conductance_is_complete_at_a_linear_layer(seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1)).double()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    attributions, delta = LayerPathConductance(targets.output_sum(model), model[2], path=BlurPath(2.0)).attribute(
        x, n_steps=9, return_convergence_delta=True
    )
    assert attributions.shape == x.shape and delta.abs().max() < 1e-10


class ExposurePath:
    """A custom path: the image brightens from ``stops`` below its exposure to itself (the docs' example)."""

    def __init__(self, stops: float = 4.0) -> None:
        self.stops = stops

    def interval(self) -> Tuple[float, float]:
        return 0.0, 1.0

    def bind(self, inputs, baselines):
        def points(alphas):
            gain = 2.0 ** ((alphas - 1) * self.stops)  # (S,): 2^-stops at α = 0, 1 at α = 1
            return tuple((gain.to(x).reshape(-1, *[1] * x.dim()) * x).flatten(0, 1) for x in inputs)

        return points


def test_a_users_own_path_runs_through_the_same_engine() -> None:
    assert isinstance(ExposurePath(), macattr.IntegrationPath)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 1)).double()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    forward = targets.output_sum(model)
    layers = [model[0], model[2]]
    (first, last), (_, delta) = LayerPathConductance(forward, layers, path=ExposurePath()).attribute(
        x, n_steps=16, return_convergence_delta=True
    )
    assert first.shape == (2, 4, 6, 6) and delta.abs().max() < 1e-10
    dark = forward(x * 2.0**-4)
    torch.testing.assert_close(last.flatten(1).sum(1), forward(x) - dark)


def test_bad_order_descending_and_exclude_are_refused_by_name() -> None:
    x = torch.rand(2, 3, 8, 8)
    half = torch.tensor([0.5], dtype=torch.float64)
    with pytest.raises(ValueError, match="order must be 'random', 'numpy' or an importance tensor"):
        MaskAttributionPath(order="importance")
    with pytest.raises(TypeError, match="descending must be True or False"):
        MaskAttributionPath(order=torch.rand(2, 8, 8), descending="yes")
    with pytest.raises(TypeError, match="exclude must be a boolean tensor"):
        MaskAttributionPath(exclude=torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"order must have shape \(8, 8\) or \(2, 8, 8\), got \(2, 5, 5\)"):
        MaskAttributionPath(order=torch.rand(2, 5, 5)).bind((x,), (torch.zeros_like(x),))(half)
    with pytest.raises(ValueError, match=r"exclude must have shape \(8, 8\) or \(2, 8, 8\), got \(2, 5, 5\)"):
        MaskAttributionPath(exclude=torch.zeros(2, 5, 5, dtype=torch.bool)).bind((x,), (torch.zeros_like(x),))(half)
