"""Integration paths from a baseline ``x'`` to an input ``x``.

A path object knows its interval ``[start, end]`` of ``α`` and, once bound to a
batch of inputs and baselines, turns a vector of ``α`` values into the stacked
path points ``X(α)``. Rows are step-major: for ``S`` values of ``α`` and a batch
of ``N`` samples, row ``s * N + n`` is sample ``n`` at ``α_s``.

- :class:`LinearPath`: ``X(α) = x' + α (x − x')`` (integrated gradients' path).
- :class:`MaskAttributionPath`: every pixel (or ``p × p`` patch) ``i`` has a
  threshold ``α_i``; ``X̃_i(α) = x'_i + (x_i − x'_i) σ(δ (α − α_i))``, over
  ``α ∈ [1 − r, 1]`` (RAM's Eq. 5–8, with Eq. 6 corrected; see docs/theory.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Tuple

import torch
from torch import Tensor

from macattr._checks import check_int, check_real

PointsFn = Callable[[Tensor], Tuple[Tensor, ...]]


class Path(Protocol):
    """What the engine needs from a path."""

    start: float
    end: float

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> PointsFn:
        """Return a function mapping ``alphas`` (S,) to stacked points, each (S·N, ...)."""
        ...


def grid(path: Path, n_steps: int) -> Tensor:
    """The ``n_steps + 1`` grid points ``α_0 = start < … < α_N = end``, float64, (n_steps + 1,)."""
    n_steps = check_int("n_steps", n_steps, 1)
    return torch.linspace(path.start, path.end, n_steps + 1, dtype=torch.float64)


def _stack_points(baseline: Tensor, delta: Tensor, weight: Tensor) -> Tensor:
    """``baseline + delta * weight`` flattened step-major.

    baseline, delta: broadcastable to (N, ...); weight: (S, N or 1, ...) → (S·N, ...).
    """
    points = baseline + delta * weight
    return points.reshape(-1, *points.shape[2:])


@dataclass(frozen=True)
class LinearPath:
    """The straight line ``x' + α (x − x')`` for ``α ∈ [start, end]`` (default [0, 1])."""

    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        check_real("start", self.start, low=0.0, high=1.0)
        check_real("end", self.end, low=0.0, high=1.0)
        if self.start >= self.end:
            raise ValueError(f"start must be < end, got start={self.start}, end={self.end}")

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> PointsFn:
        deltas = tuple(x - b for x, b in zip(inputs, baselines))

        def points(alphas: Tensor) -> Tuple[Tensor, ...]:
            out = []
            for x, b, d in zip(inputs, baselines, deltas):
                weight = alphas.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * x.dim()))
                out.append(_stack_points(b, d, weight))
            return tuple(out)

        return points


def random_thresholds(n: int, height: int, width: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Per sample, a random permutation of ``k / (H·W)``, k = 1..H·W: float64 (N, H, W)."""
    count = height * width
    order = torch.rand(n, count, generator=generator, dtype=torch.float64).argsort(dim=1)
    return ((order + 1).to(torch.float64) / count).reshape(n, height, width).to(device)


@dataclass(frozen=True, eq=False)
class MaskAttributionPath:
    """RAM's mask attribute path over ``α ∈ [1 − mask_ratio, 1]``.

    Args:
        mask_ratio: ``r`` in (0, 1]; the start point has a fraction ``r`` of its
            pixels masked (set to the baseline).
        sharpness: ``δ`` > 0 of the sigmoid; ``math.inf`` gives the hard path
            (pixel ``i`` is whole from ``α ≥ α_i`` on).
        patch_size: ``p``; each ``p × p`` patch shares one threshold. Must divide H and W.
        thresholds: explicit thresholds in [0, 1], shape (H/p, W/p) shared by all
            samples or (N, H/p, W/p). Default: a seeded random permutation per sample.
        seed: seed of the threshold permutation; ``None`` draws one from torch's
            global generator (so ``torch.manual_seed`` makes it repeatable).

    Inputs must be images (N, C, H, W); a pixel covers all channels.
    """

    mask_ratio: float = 0.5
    sharpness: float = 1e4
    patch_size: int = 1
    thresholds: Optional[Tensor] = None
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        check_real("mask_ratio", self.mask_ratio, low=0.0, high=1.0, low_open=True)
        check_real("sharpness", self.sharpness, low=0.0, low_open=True, allow_inf=True)
        check_int("patch_size", self.patch_size, 1)
        if self.seed is not None:
            check_int("seed", self.seed, 0)
        if self.thresholds is not None:
            if not isinstance(self.thresholds, Tensor):
                raise TypeError(f"thresholds must be a tensor or None, got {type(self.thresholds).__name__}")
            if self.thresholds.dim() not in (2, 3):
                raise ValueError(
                    f"thresholds must have shape (H/p, W/p) or (N, H/p, W/p), got {tuple(self.thresholds.shape)}"
                )
            values = self.thresholds.detach().double()
            if not bool(((values >= 0) & (values <= 1)).all()):
                raise ValueError("thresholds must lie in [0, 1]")

    @property
    def start(self) -> float:
        return 1.0 - float(self.mask_ratio)

    @property
    def end(self) -> float:
        return 1.0

    def pixel_thresholds(self, image: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Thresholds of every pixel of ``image`` (N, C, H, W): float64 (N, H, W)."""
        if image.dim() != 4:
            raise ValueError(f"MaskAttributionPath needs image inputs of shape (N, C, H, W), got {tuple(image.shape)}")
        n, _, height, width = image.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"patch_size must divide the image height and width ({height}×{width}), got {p}")
        rows, cols = height // p, width // p
        if self.thresholds is None:
            if generator is None:
                generator = self.generator()
            patch = random_thresholds(n, rows, cols, generator, image.device)
        else:
            patch = self.thresholds.detach().to(device=image.device, dtype=torch.float64)
            if patch.shape[-2:] != (rows, cols) or (patch.dim() == 3 and patch.shape[0] not in (1, n)):
                raise ValueError(
                    f"thresholds must have shape ({rows}, {cols}) or ({n}, {rows}, {cols}) for inputs "
                    f"{tuple(image.shape)} with patch_size={p}, got {tuple(patch.shape)}"
                )
            patch = patch.expand(n, rows, cols)
        return patch.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)

    def generator(self) -> torch.Generator:
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, ()).item())
        return torch.Generator().manual_seed(seed)

    def reveal(self, alphas: Tensor, thresholds: Tensor) -> Tensor:
        """How much of each pixel is revealed: (S,) × (N, H, W) → float64 (S, N, 1, H, W) in [0, 1]."""
        distance = alphas.to(thresholds).reshape(-1, 1, 1, 1, 1) - thresholds[None, :, None]
        if math.isinf(self.sharpness):
            return (distance >= 0).to(torch.float64)
        return torch.sigmoid(self.sharpness * distance)

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> PointsFn:
        generator = self.generator() if self.thresholds is None else None
        thresholds = tuple(self.pixel_thresholds(x, generator) for x in inputs)
        deltas = tuple(x - b for x, b in zip(inputs, baselines))

        def points(alphas: Tensor) -> Tuple[Tensor, ...]:
            return tuple(
                _stack_points(b, d, self.reveal(alphas, t).to(x.dtype))
                for x, b, d, t in zip(inputs, baselines, deltas, thresholds)
            )

        return points
