"""Integration paths from a baseline ``x'`` to an input ``x``, and the grids of ``α`` along them.

A path is any object with the two methods of [`IntegrationPath`][macattr.paths.IntegrationPath]:

- ``interval()`` → ``(start, end)``, the range of ``α``;
- ``bind(inputs, baselines)`` → a function that turns ``alphas`` (S,) into the
  stacked path points ``X(α)``, one tensor (S·N, ...) per input. Rows are
  step-major: row ``s * N + n`` is sample ``n`` at ``alphas[s]``.

Paths here:

- [`LinearPath`][macattr.paths.LinearPath]: ``X(α) = x' + α (x − x')`` (integrated gradients' path).
- [`MaskAttributionPath`][macattr.paths.MaskAttributionPath]: every pixel (or ``p × p`` patch) ``i`` has a
  threshold ``α_i``; ``X_i(α) = x'_i + (x_i − x'_i) σ(δ (α − α_i))`` over
  ``α ∈ [1 − r, 1]``: the input goes from a fraction ``r`` of its pixels masked
  to whole (RAM's mask attribute path).

[`quadrature()`][macattr.paths.quadrature] gives Captum's approximation rules (``riemann_*``,
``gausslegendre``) and [`grid()`][macattr.paths.grid] maps them onto a path's interval.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Tuple, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from macattr._checks import check_choice, check_int, check_real

PointsFn = Callable[[Tensor], Tuple[Tensor, ...]]

QUADRATURES = ("riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre")


@runtime_checkable
class IntegrationPath(Protocol):
    """What the engine needs from a path: its interval of ``α`` and its points for a batch.

    Examples:
        >>> isinstance(LinearPath(), IntegrationPath), isinstance(MaskAttributionPath(), IntegrationPath)
        (True, True)
    """

    def interval(self) -> Tuple[float, float]:
        """``(start, end)`` with ``start < end``: ``X(start)`` is where the path begins, ``X(end)`` where it ends."""
        ...

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> PointsFn:
        """A function mapping ``alphas`` (S,) float64 to the stacked points, one (S·N, ...) tensor per input."""
        ...


def quadrature(method: str, count: int) -> Tuple[Tensor, Tensor]:
    """Captum's approximation rule ``method`` with ``count`` points on [0, 1]: nodes and weights, float64 (count,).

    The nodes ascend. ``riemann_trapezoid`` puts ``count`` equidistant points on
    [0, 1] (both ends) with Captum's weights ``1/count``, halved at the ends;
    ``riemann_left``/``right``/``middle`` put them at the left ends, right ends
    or centres of ``count`` equal cells; ``gausslegendre`` uses the Gauss–Legendre
    nodes and weights mapped to [0, 1].

    Examples:
        >>> nodes, weights = quadrature("riemann_trapezoid", 5)
        >>> nodes.tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> nodes, weights = quadrature("gausslegendre", 3)
        >>> round(float(weights.sum()), 12)
        1.0
    """
    check_choice("method", method, QUADRATURES)
    count = check_int("n_steps", count, 1)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(count)
        return torch.from_numpy(0.5 * (1 + nodes)), torch.from_numpy(0.5 * weights)
    weights = torch.full((count,), 1.0 / count, dtype=torch.float64)
    if method == "riemann_trapezoid":
        if count < 2:
            raise ValueError("riemann_trapezoid needs at least 2 points; n_steps must be >= 2 for this method")
        weights[0] /= 2
        weights[-1] /= 2
        return torch.linspace(0, 1, count, dtype=torch.float64), weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (torch.arange(count, dtype=torch.float64) + offset) / count, weights


def grid(path: IntegrationPath, n_steps: int, method: str = "riemann_trapezoid") -> Tensor:
    """The ``n_steps + 1`` points of ``method`` on the path's interval, float64 (n_steps + 1,).

    With ``riemann_trapezoid`` (the default) these are ``α_0 = start < … < α_N = end``,
    equidistant, both ends included: the grid of conductance's discretisation.

    Examples:
        >>> grid(LinearPath(), 4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> grid(MaskAttributionPath(mask_ratio=0.5), 2).tolist()
        [0.5, 0.75, 1.0]
    """
    n_steps = check_int("n_steps", n_steps, 1)
    nodes, _ = quadrature(method, n_steps + 1)
    start, end = interval_of(path)
    return start + (end - start) * nodes


def interval_of(path: IntegrationPath) -> Tuple[float, float]:
    """``path.interval()``, checked; paths written for macattr 0.1 (``start``/``end`` attributes) still work.

    Examples:
        >>> interval_of(MaskAttributionPath(mask_ratio=0.25))
        (0.75, 1.0)
    """
    if not callable(getattr(path, "interval", None)):
        if not hasattr(path, "start") or not hasattr(path, "end"):
            raise TypeError(f"path must have interval() and bind() (see IntegrationPath), got {type(path).__name__}")
        warnings.warn(
            "a path with start/end attributes and no interval() is deprecated; add interval() -> (start, end)",
            DeprecationWarning,
            stacklevel=3,
        )
        start, end = path.start, path.end
    else:
        start, end = path.interval()
    start, end = float(start), float(end)
    if not start < end:
        raise ValueError(f"a path's interval must have start < end, got ({start}, {end})")
    return start, end


def _stack_points(baseline: Tensor, delta: Tensor, weight: Tensor) -> Tensor:
    """``baseline + delta * weight`` flattened step-major.

    baseline, delta: broadcastable to (N, ...); weight: (S, N or 1, ...) → (S·N, ...).
    """
    points = baseline + delta * weight
    return points.reshape(-1, *points.shape[2:])


@dataclass(frozen=True)
class LinearPath:
    """The straight line ``x' + α (x − x')`` for ``α ∈ [start, end]`` (default [0, 1]).

    Examples:
        >>> x = torch.ones(2, 3)
        >>> points = LinearPath().bind((x,), (torch.zeros(2, 3),))
        >>> points(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))[0][:, 0].tolist()
        [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    """

    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        check_real("start", self.start, low=0.0, high=1.0)
        check_real("end", self.end, low=0.0, high=1.0)
        if self.start >= self.end:
            raise ValueError(f"start must be < end, got start={self.start}, end={self.end}")

    def interval(self) -> Tuple[float, float]:
        return float(self.start), float(self.end)

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
    """Per sample, a random permutation of ``k / (H·W)``, k = 1..H·W: float64 (N, H, W).

    Examples:
        >>> t = random_thresholds(1, 2, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
        >>> sorted(t.flatten().tolist())
        [0.25, 0.5, 0.75, 1.0]
    """
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
            global generator, so two calls differ unless ``torch.manual_seed`` is
            set before each.

    Inputs are images (N, C, H, W); a pixel covers all channels.

    Examples:
        >>> path = MaskAttributionPath(mask_ratio=0.5, seed=0)
        >>> path.interval()
        (0.5, 1.0)
        >>> x = torch.ones(1, 3, 2, 2)
        >>> start, end = path.bind((x,), (torch.zeros(1, 3, 2, 2),))(torch.tensor([0.5, 1.0], dtype=torch.float64))[0]
        >>> int(start[0].sum().round()), int(end[0].sum().round())  # half of the 4 pixels whole, then all
        (2, 4)
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

    def interval(self) -> Tuple[float, float]:
        return 1.0 - float(self.mask_ratio), 1.0

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
        """The generator of the thresholds: seeded by ``seed``, or by a draw from torch's global generator."""
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


def __getattr__(name: str) -> object:
    if name == "Path":
        warnings.warn(
            "macattr.paths.Path is deprecated; use macattr.paths.IntegrationPath (it no longer shadows pathlib.Path)",
            DeprecationWarning,
            stacklevel=2,
        )
        return IntegrationPath
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
