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
``gausslegendre``), [`rule_on()`][macattr.paths.rule_on] maps one onto a path's interval and
[`grid()`][macattr.paths.grid] gives conductance's equidistant grid of N + 1 points.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from macattr._checks import check_choice, check_int, check_real
from macattr.records import json_value

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


def rule_on(path: IntegrationPath, method: str, count: int) -> Tuple[Tensor, Tensor]:
    """The ``count`` nodes and weights of ``method`` (see [`quadrature()`][macattr.paths.quadrature]) mapped
    onto the path's interval: ``α`` float64 (count,) and weights summing to the interval's length.

    Examples:
        >>> alphas, weights = rule_on(MaskAttributionPath(mask_ratio=0.5), "riemann_left", 2)
        >>> alphas.tolist(), weights.tolist()
        ([0.5, 0.75], [0.25, 0.25])
    """
    nodes, weights = quadrature(method, count)
    start, end = interval_of(path)
    return start + (end - start) * nodes, (end - start) * weights


def grid(path: IntegrationPath, n_steps: int, method: str = "riemann_trapezoid") -> Tensor:
    """The ``n_steps + 1`` points of ``method`` on the path's interval, float64 (n_steps + 1,).

    With ``riemann_trapezoid`` (the default) these are ``α_0 = start < … < α_N = end``,
    equidistant, both ends included: the grid of conductance's discretisation on a path without corners (on the
    ramp, conductance takes [`aligned_grid()`][macattr.segments.aligned_grid], which meets them).

    Examples:
        >>> grid(LinearPath(), 4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> grid(MaskAttributionPath(mask_ratio=0.5), 2).tolist()
        [0.5, 0.75, 1.0]
    """
    return rule_on(path, method, check_int("n_steps", n_steps, 1) + 1)[0]


def interval_of(path: IntegrationPath) -> Tuple[float, float]:
    """``path.interval()``, checked: a path object with ``start < end``.

    Examples:
        >>> interval_of(MaskAttributionPath(mask_ratio=0.25))
        (0.75, 1.0)
    """
    if not callable(getattr(path, "interval", None)) or not callable(getattr(path, "bind", None)):
        raise TypeError(f"path must have interval() and bind() (see IntegrationPath), got {type(path).__name__}")
    start, end = (float(v) for v in path.interval())
    if not start < end:
        raise ValueError(f"a path's interval must have start < end, got ({start}, {end})")
    return start, end


def describe_path(path: IntegrationPath) -> Dict[str, Any]:
    """The JSON record of a path, as scores files and checkpoints hold it: ``{"type": class name, option:
    value, ...}``. A path class of one's own may define ``config()`` to give its record; otherwise a
    dataclass is recorded by its fields and any other object by its attributes.

    Examples:
        >>> describe_path(BlurPath(2.0))
        {'type': 'BlurPath', 'sigma': 2.0, 'size': None}
    """
    own = getattr(path, "config", None)
    if callable(own):
        record = own()
        if not isinstance(record, dict):
            raise TypeError(f"{type(path).__name__}.config() must return a dict, got {type(record).__name__}")
        return {"type": type(path).__name__, **json_value(record)}
    if dataclasses.is_dataclass(path):
        return json_value(path)
    return {"type": type(path).__name__, **json_value(dict(vars(path)))}


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

    def straight_between(self, breaks: Tensor, inputs: Tuple[Tensor, ...]) -> bool:
        """Always: the line is straight between any two of its points."""
        return True

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> PointsFn:
        deltas = tuple(x - b for x, b in zip(inputs, baselines))

        def points(alphas: Tensor) -> Tuple[Tensor, ...]:
            out = []
            for x, b, d in zip(inputs, baselines, deltas):
                weight = alphas.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * x.dim()))
                out.append(_stack_points(b, d, weight))
            return tuple(out)

        return points


_LAYOUTS: Dict[str, Tuple[int, Tuple[int, ...]]] = {
    "image": (4, (2, 3)),  # (N, C, H, W): a pixel covers all channels
    "sequence": (3, (1,)),  # (N, T, D): a token covers its whole embedding
    "volume": (5, (2, 3, 4)),  # (N, C, D, H, W): a voxel covers all channels
}
Seed = Union[None, int, Sequence[int]]


def _tuple_of(name: str, value: Union[int, Sequence[int]], length: int) -> Tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values: Tuple = (value,) * length
    elif isinstance(value, (tuple, list)):
        values = tuple(value)
    else:
        raise TypeError(f"{name} must be an integer >= 1 or one per masked dimension, got {value!r}")
    if len(values) != length:
        raise ValueError(f"{name} must be one integer or one per masked dimension ({length}), got {value!r}")
    return tuple(check_int(name, v, 1) for v in values)


@dataclass(frozen=True, eq=False)
class MaskAttributionPath:
    """RAM's mask attribute path over ``α ∈ [1 − mask_ratio, 1]``, for images, sequences or volumes.

    The masked dimensions are cut into cells (``patch_size`` positions along
    each); every cell ``i`` gets a threshold ``α_i`` and goes from the baseline
    to the input as ``x'_i + (x_i − x'_i) σ(δ (α − α_i))``. The thresholds of the
    K cells that take part are ``k / K``, k = 1..K, in reveal order: at the start
    a fraction ``mask_ratio`` of them is masked, at the end none (on the hard
    path; with a finite ``δ`` a cell is half revealed at its own threshold, so
    the cell with threshold 1 is half revealed at the end point, and the
    convergence delta is taken against ``F`` at these real end points).

    Args:
        mask_ratio: ``r`` in (0, 1]; the start point has a fraction ``r`` of its
            cells masked (set to the baseline).
        sharpness: ``δ`` > 0 of the sigmoid; ``math.inf`` gives the hard path
            (cell ``i`` is whole from ``α ≥ α_i`` on).
        patch_size: cell size along each masked dimension (one int for all);
            must divide those dimensions.
        thresholds: explicit thresholds in [0, 1], shape (cells...) shared by all
            samples or (N, cells...). Excludes ``order`` and ``exclude``.
        seed: seed of the random reveal order (and of ties in an importance
            order), or one seed per sample; ``None`` draws one from torch's
            global generator, so two calls differ unless ``torch.manual_seed``
            is set before each.
        mask_dims: which dimensions are masked cell by cell; the others share
            each cell's threshold. ``"image"`` (default: (N, C, H, W), pixels
            covering all channels), ``"sequence"`` ((N, T, D), tokens covering
            their embedding), ``"volume"`` ((N, C, D, H, W)), or a tuple of
            dimension indices (≥ 1).
        order: ``"random"`` (default, RAM's path), ``"numpy"`` (a random reveal
            order drawn as the RAM authors' code draws it,
            ``numpy.random.RandomState(seed).permutation(cells)`` per sample) or an importance map, one
            value per position of the masked dimensions, (N, ...) or shared
            (...): cells are revealed from the least to the most important (a
            cell's importance is the mean over its positions), ties in a seeded
            random order.
        descending: with an importance map, reveal the most important first.
        exclude: boolean (N, cells...) or (cells...): cells that never change
            (always the input) and are not counted among the K cells, such as
            padding tokens (``exclude=attention_mask == 0``).
        end: where the path's interval ends, in ``(1 − mask_ratio, 1]`` (default
            1, the whole input; the RAM authors' code stops at ``1 − r / N``).
        ramp: reveal each cell linearly over the stretch of ``α`` that ends at its threshold and starts at the
            one before (width 1 / K), instead of the sigmoid: the cells move from the baseline to the input one
            after another along straight segments, the geometry of the hard path made continuous. Conductance's
            sums then converge at their rule's order: with at least as many steps as masked cells its grid puts
            every cell's start and end on a grid point (``macattr.segments.aligned_grid``), where the sigmoid's
            jumps keep them at a fixed error (``sharpness`` is not used).
        cut: the RAM authors' code's mask instead of the smooth one: the thresholds are ``(k − 1) / K``, and
            every cell whose threshold is not below ``α`` is exactly the baseline (their mask reveals the
            ``⌈K α⌉`` first cells of the order with the sigmoid and cuts the rest); so no cell is half
            revealed at a grid point that lands on its threshold.

    Examples:
        >>> path = MaskAttributionPath(mask_ratio=0.5, seed=0)
        >>> path.interval()
        (0.5, 1.0)
        >>> x = torch.ones(1, 3, 2, 2)
        >>> start, end = path.bind((x,), (torch.zeros(1, 3, 2, 2),))(torch.tensor([0.5, 1.0], dtype=torch.float64))[0]
        >>> int(start[0].sum().round()), int(end[0].sum().round())  # half of the 4 pixels whole, then all
        (2, 4)
        >>> tokens = MaskAttributionPath(mask_dims="sequence", sharpness=math.inf, seed=0)
        >>> tokens.pixel_thresholds(torch.zeros(2, 4, 8)).shape  # one threshold per token
        torch.Size([2, 4])
    """

    mask_ratio: float = 0.5
    sharpness: float = 1e4
    patch_size: Union[int, Tuple[int, ...]] = 1
    thresholds: Optional[Tensor] = None
    seed: Seed = None
    mask_dims: Union[str, Tuple[int, ...]] = "image"
    order: Union[str, Tensor] = "random"
    descending: bool = False
    exclude: Optional[Tensor] = None
    end: float = 1.0
    cut: bool = False
    ramp: bool = False

    def __post_init__(self) -> None:
        check_real("mask_ratio", self.mask_ratio, low=0.0, high=1.0, low_open=True)
        check_real("sharpness", self.sharpness, low=0.0, low_open=True, allow_inf=True)
        if self.seed is not None:
            seeds = [self.seed] if isinstance(self.seed, numbers.Integral) else list(self.seed)
            for value in seeds:
                check_int("seed", value, 0)
        if isinstance(self.mask_dims, str):
            check_choice("mask_dims", self.mask_dims, list(_LAYOUTS))
        elif not self.mask_dims or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
                                       for d in self.mask_dims):  # fmt: skip
            raise ValueError(f"mask_dims must be a layout name or dimension indices >= 1, got {self.mask_dims!r}")
        _tuple_of("patch_size", self.patch_size, len(self._dims_of(None)))
        named = isinstance(self.order, str) and self.order in ("random", "numpy")
        if not named and not isinstance(self.order, Tensor):
            raise ValueError(f"order must be 'random', 'numpy' or an importance tensor, got {self.order!r}")
        check_real("end", self.end, low=1.0 - float(self.mask_ratio), high=1.0, low_open=True)
        for name in ("descending", "cut", "ramp"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.ramp and self.cut:
            raise ValueError("ramp and cut are two different masks; pass one of them")
        if self.exclude is not None and (not isinstance(self.exclude, Tensor) or self.exclude.dtype != torch.bool):
            raise TypeError("exclude must be a boolean tensor (True = the cell never changes) or None")
        if self.thresholds is not None:
            if not isinstance(self.thresholds, Tensor):
                raise TypeError(f"thresholds must be a tensor or None, got {type(self.thresholds).__name__}")
            if isinstance(self.order, Tensor) or self.exclude is not None:
                raise ValueError("thresholds fix the reveal order: pass either thresholds or order=/exclude=")
            masked = len(self._dims_of(None))
            if self.thresholds.dim() not in (masked, masked + 1):
                raise ValueError(f"thresholds must have one value per cell, shape (cells...) or (N, cells...) with "
                                 f"{masked} cell dimensions, got {tuple(self.thresholds.shape)}")  # fmt: skip
            values = self.thresholds.detach().double()
            if not bool(((values >= 0) & (values <= 1)).all()):
                raise ValueError("thresholds must lie in [0, 1]")

    def interval(self) -> Tuple[float, float]:
        return 1.0 - float(self.mask_ratio), float(self.end)

    def corners(self, inputs: Tuple[Tensor, ...]) -> Optional[Tensor]:
        """The ``α`` inside the interval where the path turns for these inputs, float64, ascending: for the ramp,
        every counted cell's start ``t − 1 / K`` and end ``t`` (t: its threshold, K: the sample's counted cells;
        ``k / K`` for the seeded order), the union over the samples and inputs; ``None`` for the sigmoid and cut
        masks, which are not straight anywhere but between jumps."""
        if not self.ramp:
            return None
        start, end = self.interval()
        every = []
        for x in inputs:
            thresholds, excluded = self.cell_thresholds(x)
            thresholds = thresholds.flatten(1)
            counted = torch.full((x.shape[0], 1), thresholds.shape[1], dtype=torch.float64, device=x.device)
            if excluded is not None:
                counted = (~excluded).flatten(1).sum(1, keepdim=True).to(torch.float64)
                thresholds = thresholds[~excluded.flatten(1)].reshape(-1, 1)  # excluded cells never move
                counted = counted.repeat_interleave((~excluded).flatten(1).sum(1), dim=0)
            every.append(torch.cat([thresholds, thresholds - 1 / counted.clamp(min=1)], dim=1).flatten().cpu())
        values = torch.unique(torch.cat(every))  # sorted
        values = values[(values > start + 1e-12) & (values < end - 1e-12)]
        distinct = torch.cat([torch.ones(min(len(values), 1), dtype=torch.bool), values.diff() > 1e-12])
        return values[distinct]  # one per α: a cell's start is the previous one's end, up to rounding

    def shared_corners(self) -> bool:
        """Whether every sample's corners are the same, whatever the others in its batch: no per-sample map of
        thresholds or excluded cells (a grid aligned to a batch's corners then serves each sample alone)."""
        masked = len(self._dims_of(None))
        return all(value is None or value.dim() == masked or value.shape[0] == 1
                   for value in (self.thresholds, self.exclude))  # fmt: skip

    def straight_between(self, breaks: Tensor, inputs: Tuple[Tensor, ...]) -> bool:
        """Whether the path is straight between consecutive ``breaks`` (float64, ascending) for these inputs:
        only the ramp is, where every one of its ``corners`` is one of the breaks."""
        corners = self.corners(inputs)
        if corners is None:
            return False
        return not len(corners) or float((corners[:, None] - breaks[None]).abs().min(1).values.max()) <= 1e-9

    def for_images(self, seeds: Sequence[int]) -> MaskAttributionPath:
        """This path with one threshold seed per image (a ranking seeds every image on its own, so that its
        scores do not depend on how the images are batched).

        A path shared by the images of a ranking must leave ``seed`` unset and give its ``thresholds``,
        ``order`` and ``exclude`` maps without a sample dimension (one map for every image).

        Examples:
            >>> MaskAttributionPath().for_images([4, 7]).seed
            [4, 7]
        """
        if self.seed is not None:
            raise ValueError(
                f"this MaskAttributionPath has seed={self.seed!r}, but a ranking seeds every image from its own "
                "seed= setting; build the path with seed=None and pass seed= to rank_layers"
            )
        masked = len(self._dims_of(None))
        for name in ("thresholds", "order", "exclude"):
            value = getattr(self, name)
            if isinstance(value, Tensor) and value.dim() > masked:
                raise ValueError(
                    f"the path's {name} has shape {tuple(value.shape)}, one map per sample; a path shared by the "
                    f"images of a ranking needs one map for all of them ({masked} dimensions)"
                )
        return dataclasses.replace(self, seed=[int(s) for s in seeds])

    def _dims_of(self, x: Optional[Tensor]) -> Tuple[int, ...]:
        """The masked dimensions; checks that ``x`` has the layout's number of dimensions."""
        if isinstance(self.mask_dims, str):
            rank, dims = _LAYOUTS[self.mask_dims]
            if x is not None and x.dim() != rank:
                shapes = {"image": "(N, C, H, W)", "sequence": "(N, T, D)", "volume": "(N, C, D, H, W)"}
                raise ValueError(f"mask_dims={self.mask_dims!r} needs inputs of shape {shapes[self.mask_dims]}, "
                                 f"got {tuple(x.shape)}")  # fmt: skip
            return dims
        dims = tuple(sorted(set(int(d) for d in self.mask_dims)))
        if x is not None and dims[-1] >= x.dim():
            raise ValueError(f"mask_dims {dims} do not fit inputs of shape {tuple(x.shape)}")
        return dims

    def _grid(self, x: Tensor) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        """(masked dimensions, patch size along each, cells along each) for the input ``x``."""
        dims = self._dims_of(x)
        patches = _tuple_of("patch_size", self.patch_size, len(dims))
        sizes = tuple(x.shape[d] for d in dims)
        if any(size % p for size, p in zip(sizes, patches)):
            raise ValueError(f"patch_size must divide the masked dimensions {sizes}, got {patches}")
        return dims, patches, tuple(size // p for size, p in zip(sizes, patches))

    def _per_sample(self, name: str, value: Tensor, n: int, shape: Tuple[int, ...]) -> Tensor:
        if (
            tuple(value.shape[-len(shape) :]) != shape
            or value.dim() not in (len(shape), len(shape) + 1)
            or (value.dim() == len(shape) + 1 and value.shape[0] not in (1, n))
        ):
            raise ValueError(f"{name} must have shape {shape} or ({n}, {', '.join(map(str, shape))}), "
                             f"got {tuple(value.shape)}")  # fmt: skip
        return value.expand(n, *shape)

    def generators(self, n: int) -> List[torch.Generator]:
        """One generator per sample: from the per-sample seeds, or one shared generator from ``seed``."""
        if self.seed is not None and not isinstance(self.seed, numbers.Integral):
            if len(self.seed) != n:
                raise ValueError(f"seed must hold one seed per sample ({n}), got {len(self.seed)}")
            return [torch.Generator().manual_seed(int(s)) for s in self.seed]
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, ()).item())
        return [torch.Generator().manual_seed(int(seed))] * n

    def cell_thresholds(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Thresholds of every cell of ``x``, float64 (N, cells...), and the excluded cells (N, cells...) or None."""
        dims, patches, cells = self._grid(x)
        n = x.shape[0]
        if self.thresholds is not None:
            given = self.thresholds.detach().to(device=x.device, dtype=torch.float64)
            return self._per_sample("thresholds", given, n, cells), None
        excluded = None if self.exclude is None else self._per_sample("exclude", self.exclude.to(x.device), n, cells)
        ranked = self._reveal_order(n, math.prod(cells)).to(x.device)  # ranked[:, i]: the cell revealed i-th
        if isinstance(self.order, Tensor):
            importance = self._cell_importance(x, dims, patches, cells).flatten(1)
            importance = -importance if self.descending else importance
            by_importance = torch.gather(importance, 1, ranked).argsort(dim=1, stable=True)
            ranked = torch.gather(ranked, 1, by_importance)
        if excluded is not None:  # excluded cells go first (threshold 0) and are not counted
            flat_excluded = torch.gather(excluded.flatten(1), 1, ranked)
            ranked = torch.gather(ranked, 1, (~flat_excluded).to(torch.int8).argsort(dim=1, stable=True))
        counted = (torch.full((n,), ranked.shape[1], device=x.device) if excluded is None
                   else (~excluded).flatten(1).sum(1))  # fmt: skip
        first = 0 if self.cut else 1  # the authors' code numbers the cells from 0
        position = torch.arange(first, ranked.shape[1] + first, device=x.device, dtype=torch.float64).expand(n, -1)
        skipped = ranked.shape[1] - counted
        values = ((position - skipped[:, None]).clamp(min=0) / counted.clamp(min=1)[:, None]).to(torch.float64)
        thresholds = torch.empty_like(values).scatter_(1, ranked, values)
        return thresholds.reshape(n, *cells), excluded

    def _reveal_order(self, n: int, count: int) -> Tensor:
        """A random reveal order of ``count`` cells per sample, int64 (n, count): entry i is the cell revealed
        i-th."""
        if isinstance(self.order, str) and self.order == "numpy":  # the RAM code: numpy's permutation is the order
            if self.seed is None or isinstance(self.seed, numbers.Integral):
                seed = self.seed if self.seed is not None else int(torch.randint(0, 2**31, ()).item())
                state = np.random.RandomState(int(seed) % 2**32)
                orders = [state.permutation(count) for _ in range(n)]
            else:
                if len(self.seed) != n:
                    raise ValueError(f"seed must hold one seed per sample ({n}), got {len(self.seed)}")
                orders = [np.random.RandomState(int(s) % 2**32).permutation(count) for s in self.seed]
            return torch.from_numpy(np.stack(orders).astype(np.int64))
        generators = self.generators(n)
        shared = all(g is generators[0] for g in generators)
        keys = (torch.rand(n, count, generator=generators[0], dtype=torch.float64) if shared else
                torch.cat([torch.rand(1, count, generator=g, dtype=torch.float64) for g in generators]))  # fmt: skip
        return keys.argsort(dim=1).argsort(dim=1)

    def _cell_importance(self, x: Tensor, dims: Tuple[int, ...], patches: Tuple[int, ...],
                         cells: Tuple[int, ...]) -> Tensor:  # fmt: skip
        positions = tuple(x.shape[d] for d in dims)
        importance = self._per_sample("order", self.order.detach().to(x.device, torch.float64), x.shape[0], positions)
        split = [size for c, p in zip(cells, patches) for size in (c, p)]
        means = importance.reshape(x.shape[0], *split)
        return means.mean(dim=tuple(range(2, 2 * len(cells) + 1, 2)))

    def pixel_thresholds(self, x: Tensor) -> Tensor:
        """Thresholds of every position of the masked dimensions of ``x``: float64 (N, positions...).

        Excluded cells get threshold 0.
        """
        thresholds, excluded = self.cell_thresholds(x)
        if excluded is not None:
            thresholds = thresholds.masked_fill(excluded, 0.0)
        _, patches, _ = self._grid(x)
        for axis, p in enumerate(patches, start=1):
            thresholds = thresholds.repeat_interleave(p, dim=axis)
        return thresholds

    def reveal(self, alphas: Tensor, thresholds: Tensor, cells: Optional[Tensor] = None) -> Tensor:
        """How much of each cell is revealed: (S,) × (N, cells...) → float64 (S, N, cells...) in [0, 1].
        ``cells`` (N,): the number of cells each sample reveals (K, for ``ramp``; default all of its cells)."""
        distance = alphas.to(thresholds).reshape(-1, *([1] * thresholds.dim())) - thresholds[None]
        if self.ramp:
            count = cells if cells is not None else torch.full(thresholds.shape[:1], thresholds[0].numel())
            width = count.to(distance).reshape(1, -1, *([1] * (thresholds.dim() - 1)))
            return (1 + distance * width).clamp(0, 1)
        if self.cut:  # cells at or beyond their threshold stay at the baseline (the tolerance: i / K vs α)
            shown = distance > 1e-12
            return (
                shown.to(torch.float64)
                if math.isinf(self.sharpness)
                else torch.sigmoid(self.sharpness * distance) * shown
            )
        if math.isinf(self.sharpness):  # the tolerance keeps 1 − r from rounding below a threshold it equals
            return (distance >= -1e-12).to(torch.float64)
        return torch.sigmoid(self.sharpness * distance)

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> PointsFn:
        bound = []
        for x, b in zip(inputs, baselines):
            dims, patches, _ = self._grid(x)
            thresholds, excluded = self.cell_thresholds(x)
            counted = thresholds[0].numel() if excluded is None else (~excluded).flatten(1).sum(1)
            cells = torch.as_tensor(counted).expand(x.shape[0]).clamp(min=1)
            bound.append((x, b, x - b, dims, patches, thresholds, excluded, cells))

        def points(alphas: Tensor) -> Tuple[Tensor, ...]:
            out = []
            for x, b, delta, dims, patches, thresholds, excluded, cells in bound:
                weight = self.reveal(alphas, thresholds, cells)
                if excluded is not None:
                    weight = weight.masked_fill(excluded[None], 1.0)
                for axis, p in enumerate(patches, start=2):
                    weight = weight.repeat_interleave(p, dim=axis)
                shape = [weight.shape[0], x.shape[0]] + [x.shape[d] if d in dims else 1 for d in range(1, x.dim())]
                out.append(_stack_points(b, delta, weight.reshape(shape).to(x.dtype)))
            return tuple(out)

        return points


def gaussian_kernel1d(sigma: float, size: int) -> Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` on ``size`` (odd) points, float64;
    ``sigma = 0`` gives the identity kernel.

    Examples:
        >>> gaussian_kernel1d(0.0, 3).tolist()
        [0.0, 1.0, 0.0]
        >>> round(float(gaussian_kernel1d(1.5, 9).sum()), 12)
        1.0
    """
    sigma = check_real("sigma", sigma, low=0.0)
    size = check_int("size", size, 1)
    if size % 2 == 0:
        raise ValueError(f"size must be odd, got {size}")
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    if sigma == 0:
        return (offsets == 0).to(torch.float64)
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    return line / line.sum()


@dataclass(frozen=True)
class BlurPath:
    """The blur path of Local Attribution Maps: ``X(α)`` = the input blurred with a Gaussian of standard
    deviation ``(1 − α) σ``, ``α ∈ [0, 1]``.

    ``X(1)`` is the input itself, ``X(0)`` the most blurred; each channel is
    blurred on its own with a separable ``size × size`` kernel (default
    ``size = 2 ⌈3σ⌉ + 1``, so the kernel reaches three standard deviations)
    and reflect padding. Inputs are images (N, C, H, W) with H, W > size // 2.
    The baselines are not used: the path starts at the blurred input.

    Examples:
        >>> path = BlurPath(sigma=2.0)
        >>> x = torch.rand(1, 3, 16, 16)
        >>> start, end = path.bind((x,), (torch.zeros(1),))(torch.tensor([0.0, 1.0], dtype=torch.float64))[0]
        >>> torch.equal(end, x[0]), bool(start.std() < x.std())
        (True, True)
    """

    sigma: float = 4.0
    size: Optional[int] = None

    def __post_init__(self) -> None:
        check_real("sigma", self.sigma, low=0.0, low_open=True)
        if self.size is not None:
            check_int("size", self.size, 1)
            if self.size % 2 == 0:
                raise ValueError(f"size must be odd, got {self.size}")

    @property
    def kernel_size(self) -> int:
        return self.size if self.size is not None else 2 * math.ceil(3 * self.sigma) + 1

    def interval(self) -> Tuple[float, float]:
        return 0.0, 1.0

    def blur(self, x: Tensor, sigmas: Tensor) -> Tensor:
        """``x`` (N, C, H, W) blurred with each standard deviation of ``sigmas`` (S,): (S·N, C, H, W), step-major."""
        if x.dim() != 4:
            raise ValueError(f"BlurPath needs image inputs of shape (N, C, H, W), got {tuple(x.shape)}")
        size, pad = self.kernel_size, self.kernel_size // 2
        if min(x.shape[-2:]) <= pad:
            raise ValueError(f"BlurPath with a {size}-point kernel needs H and W > {pad}, got {tuple(x.shape)}")
        kernels = torch.stack([gaussian_kernel1d(float(s), size) for s in sigmas]).to(x)  # (S, size)
        n, c, h, w = x.shape
        groups = len(sigmas) * n * c
        weights = kernels.repeat_interleave(n * c, dim=0)  # one kernel per (step, sample, channel)
        planes = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect").repeat(len(sigmas), 1, 1, 1)
        planes = planes.reshape(1, groups, h + 2 * pad, w + 2 * pad)
        rows = torch.nn.functional.conv2d(planes, weights.reshape(groups, 1, size, 1), groups=groups)
        blurred = torch.nn.functional.conv2d(rows, weights.reshape(groups, 1, 1, size), groups=groups)
        blurred = blurred.reshape(len(sigmas), n, c, h, w)
        blurred[sigmas == 0] = x  # exactly the input where there is no blur (the convolution rounds)
        return blurred.flatten(0, 1)

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> PointsFn:
        def points(alphas: Tensor) -> Tuple[Tensor, ...]:
            sigmas = (1 - alphas.double()).clamp(min=0) * self.sigma
            return tuple(self.blur(x, sigmas) for x in inputs)

        return points


__all__ = [
    "QUADRATURES",
    "BlurPath",
    "IntegrationPath",
    "LinearPath",
    "MaskAttributionPath",
    "describe_path",
    "gaussian_kernel1d",
    "grid",
    "interval_of",
    "quadrature",
    "rule_on",
]
