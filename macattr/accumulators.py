"""Running sums that grow batch by batch: the [`Accumulator`][macattr.accumulators.Accumulator] interface
and its uses.

Every accumulator has ``update(...)`` (add one batch), ``compute()`` (the result
so far) and ``merge(other)`` (add another accumulator of the same kind, for
example one that ran in another process or on another part of the data).

- [`TensorSum`][macattr.accumulators.TensorSum]: a tensor total with ``compute`` and ``merge``, the base of the
  two below and of custom ``accumulator=`` classes.
- [`ConductanceSum`][macattr.accumulators.ConductanceSum]: per neuron ``Σ_j ∂F/∂y|_{α_j} · (y(α_{j+1}) − y(α_j))``
  over grid points fed in order (the engine's conductance; the right and trapezoid step rules too).
- [`CompletenessSum`][macattr.accumulators.CompletenessSum]: the same at the input, summed over its elements
  step by step (the certificate of a step sum).
- [`GradientSum`][macattr.accumulators.GradientSum]: per neuron ``Σ_j ∂F/∂y|_{α_j} · w_j`` (internal influence).
- [`ScoreSum`][macattr.accumulators.ScoreSum]: per layer the sum of per-image scores (``rank_layers``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from macattr.segments import SegmentRule
from macattr.vocabulary import RULES, SEGMENT_RULES, STEP_RULES


@runtime_checkable
class Accumulator(Protocol):
    """A running sum: ``update`` adds a batch, ``compute`` returns the sum, ``merge`` adds another one.

    Examples:
        >>> isinstance(ScoreSum(["a"]), Accumulator)  # a Protocol: any class with the three methods
        True
    """

    def update(self, *batch: Any) -> None: ...

    def compute(self) -> Any: ...

    def merge(self, other: Any) -> None: ...


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are kept in: float32 for half-precision values (bf16/fp16 autocast), the dtype itself
    otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class TensorSum:
    """A running tensor sum ``total``: ``compute()`` returns it, ``merge(other)`` adds another one's. Subclasses
    write ``update``; the engine's sums below are two, and a custom ``accumulator=`` can be a third.

    Examples:
        >>> class Squares(TensorSum):
        ...     def update(self, values, grads, weights=None):
        ...         self.add(grads.square().sum(0))
        >>> a, b = Squares(), Squares()
        >>> a.update(None, torch.tensor([[1.0], [2.0]])); b.update(None, torch.tensor([[3.0]]))
        >>> a.merge(b)
        >>> a.compute().tolist()
        [14.0]
    """

    def __init__(self) -> None:
        self.total: Optional[Tensor] = None

    def add(self, part: Tensor) -> None:
        """Add ``part`` to the total (the first part becomes the total)."""
        self.total = part if self.total is None else self.total + part

    def compute(self) -> Tensor:
        if self.total is None:
            raise ValueError(f"{type(self).__name__}.compute() before any update()")
        return self.total

    def merge(self, other: TensorSum) -> None:
        if other.total is not None:
            self.total = other.total.clone() if self.total is None else self.total + other.total


ERROR_SPREAD = 0.125  # sqrt(squares) → the steps' own error (see ConductanceSum.error_estimate)
ERROR_SPREAD_UNRESOLVED = 1.0  # the same where the grid does not resolve the path (ConductanceSum.error_estimate)


class ConductanceSum(TensorSum):
    """Running ``Σ_j ĝ_j · (y_{j+1} − y_j)`` over consecutive grid points, with ``ĝ_j`` the gradient of the
    step's ``rule``: ``g_j`` (left, the default), ``g_{j+1}`` (right) or ``½ (g_j + g_{j+1})`` (trapezoid).
    A segment rule (``gauss<m>``, see [`SegmentRule`][macattr.segments.SegmentRule]) takes the points in
    groups of a segment's start, its m nodes and its end, and adds each segment's Gauss–Legendre sum.

    ``update(values, grads, weights)`` takes the next ``S`` grid points, each
    (S, N, ...): layer values ``y_j`` and gradients ``g_j = ∂F/∂y|_{α_j}``
    (``weights`` is unused: conductance needs only consecutive values). Across
    calls, the last point of one update and the first of the next form a step.
    ``compute()`` → (N, ...). ``merge(other)`` adds the sum of another stretch
    of the grid that starts where this one ends.

    With ``spread=True`` it also keeps, per element (N, ...), the steps' differences between the right and the
    left rule, ``d_j = (g_{j+1} − g_j) · (y_{j+1} − y_j)`` (for a segment rule, the same between each two
    consecutive points of its segments, ends included): their sum ``drift`` and the sum of their squares
    ``squares``. Where the gradient moves monotonically within a step, the step's exact integral
    is its left term plus ``θ_j · d_j`` for some ``θ_j`` in [0, 1]; ``error_estimate()`` takes
    ``θ_j = 1/2 + η_j`` with the ``η_j`` of different steps independent (see there). ``on_path``: a segment
    rule's segments are the path's own, not a polygon across its corners (the engine knows which). ``unresolved``:
    the grid does not resolve the path's straight stretches (a corner of the ramp inside a step, or a stretch
    with fewer grid points than ``macattr.segments.POINTS_PER_STRETCH``), where a rule's error can be first
    order in the step whatever its order elsewhere.

    Examples:
        >>> values = torch.tensor([[0.0], [1.0], [3.0]])  # y at three grid points, N = 1
        >>> grads = torch.tensor([[2.0], [4.0], [8.0]])
        >>> sums = {rule: ConductanceSum(rule, spread=True) for rule in STEP_RULES}
        >>> for acc in sums.values():
        ...     acc.update(values[:2], grads[:2])
        ...     acc.update(values[2:], grads[2:])
        >>> {rule: acc.compute().item() for rule, acc in sums.items()}  # 2·1 + 4·2, 4·1 + 8·2, 3·1 + 6·2
        {'left': 10.0, 'right': 20.0, 'trapezoid': 15.0}
        >>> sums["left"].drift.item(), sums["left"].squares.item()  # d = 2·1, 4·2
        (10.0, 68.0)
        >>> round(sums["left"].error_estimate().item(), 2), round(sums["trapezoid"].error_estimate().item(), 2)
        (6.03, 1.03)
        >>> gauss = ConductanceSum("gauss2")  # two nodes inside each segment
        >>> along = SegmentRule.named("gauss2").positions()[:, None]  # start, nodes, end of one segment (4, 1)
        >>> gauss.update(3 * along**2, 2 * along)  # y = 3τ², ∂F/∂y = 2τ: ∫ 2τ · 6τ dτ = 4
        >>> round(gauss.compute().item(), 12)
        4.0
    """

    def __init__(self, rule: str = "left", spread: bool = False, on_path: bool = False,
                 unresolved: bool = False) -> None:  # fmt: skip
        if rule not in RULES:
            raise ValueError(f"rule must be one of {list(RULES)}, got {rule!r}")
        for name, value in (("spread", spread), ("on_path", on_path), ("unresolved", unresolved)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        super().__init__()
        self.rule = rule
        self.drift: Optional[Tensor] = None
        self.squares: Optional[Tensor] = None
        self._keeps_spread = spread
        self._last: Optional[Tuple[Tensor, Tensor]] = None
        self._buffers: Tuple[Tensor, ...] = ()
        self._size: Optional[Tensor] = None  # per row: the largest |value| seen
        self._moved: Optional[Tensor] = None  # per row: the largest |change| of a step
        self._segment = SegmentRule.named(rule) if rule in SEGMENT_RULES else None
        self._on_path = on_path
        self._unresolved = unresolved
        self._filled = 0  # segment rules: how many points of the open segment the buffers hold

    def _step_gradient(self, before: Tensor, after: Tensor) -> Tensor:
        """The gradient of the steps from ``before``'s grid points to ``after``'s, by the rule (a new tensor
        only for the trapezoid)."""
        if self.rule == "left":
            return before
        if self.rule == "right":
            return after
        return (before + after).mul_(0.5)

    def _start(self, values: Tensor, grads: Tensor) -> None:
        """Make the running sums, shaped like one grid point of ``values`` (N, ...)."""
        self.total = torch.zeros_like(values[0])
        if self._keeps_spread:
            self.drift, self.squares = torch.zeros_like(values[0]), torch.zeros_like(values[0])

    def _add(self, contributions: Tensor, differences: Optional[Tensor]) -> None:
        """Add steps' (or segments') conductance ``contributions`` (S, N, ...) and, with ``spread``, their
        ``differences`` between two rules (S, N, ...); both are new and may be overwritten."""
        if self.drift is not None and differences is not None:
            self.drift.add_(differences.sum(0))
            self.squares.add_(differences.square_().sum(0))
        self.total.add_(contributions.sum(0))

    def _add_steps(self, before: Tensor, after: Tensor, change: Tensor) -> None:
        """Add steps with gradients ``before`` at their start and ``after`` at their end and value changes
        ``change``, each (S, N, ...); ``change`` is new and may be overwritten."""
        self._moved = _row_max(change, self._moved)
        differences = (after - before).mul_(change) if self.drift is not None else None
        self._add(change.mul_(self._step_gradient(before, after)), differences)

    def update(self, values: Tensor, grads: Tensor, weights: Optional[Tensor] = None) -> None:
        dtype = accumulation_dtype(values.dtype)
        values, grads = values.to(dtype), grads.to(dtype)
        self._size = _row_max(values, self._size)
        if self._segment is not None:
            self._update_segments(values, grads)
            return
        if self.total is None:
            # made once, at the first (smallest) pass, so that later passes reuse the memory freed around them
            self._start(values, grads)
            self._buffers = (torch.empty_like(values[0]), torch.empty_like(grads[0]))
        else:
            last_value, last_grad = self._last
            self._add_steps(last_grad[None], grads[:1], (values[:1] - last_value[None]))
        if len(values) == 1:  # kept as they are: one row, no copy
            self._last = (values[0], grads[0])
            return
        self._add_steps(grads[:-1], grads[1:], values.diff(dim=0))
        # copied, so that the pass's (S, N, ...) tensors can be freed
        last_value, last_grad = self._buffers
        last_value.copy_(values[-1])
        last_grad.copy_(grads[-1])
        self._last = self._buffers

    def _update_segments(self, values: Tensor, grads: Tensor) -> None:
        """Collect the points of the open segment (start, nodes, end); add each segment once its end arrives."""
        if self.total is None:
            self._start(values, grads)
            size = self._segment.nodes + 2
            self._buffers = (values.new_empty(size, *values.shape[1:]), grads.new_empty(size, *grads.shape[1:]))
        segment_values, segment_grads = self._buffers
        for value, grad in zip(values, grads):
            segment_values[self._filled].copy_(value)
            segment_grads[self._filled].copy_(grad)
            self._filled += 1
            if self._filled == len(segment_values):
                self._add_segment(segment_values, segment_grads)
                segment_values[0].copy_(segment_values[-1])  # the end is the next segment's start
                segment_grads[0].copy_(segment_grads[-1])
                self._filled = 1

    def _add_segment(self, values: Tensor, grads: Tensor) -> None:
        """Add one segment's sum from its points' ``values`` and ``grads`` (m + 2, N, ...)."""
        self._moved = _row_max(values.diff(dim=0), self._moved)
        rule = self._segment
        change = torch.tensordot(rule.node_matrix().to(values), values, dims=1)  # (m, N, ...)
        segment = change.mul_(grads[1:-1]).sum(0, keepdim=True)
        differences = None
        if self.drift is not None:  # the steps of the trapezoid that bounds the sum (see error_estimate)
            ends = slice(None) if self._on_path else [0, -1]
            differences = grads[ends].diff(dim=0).mul_(values[ends].diff(dim=0))
        self._add(segment, differences)

    def _still(self) -> Optional[Tensor]:
        """Per row (N,), whether its value never moved by more than a relative 1e-6 of its size along the grid:
        a layer that sees nothing of the input there (a diffusion model's time embedding), whose steps are
        rounding noise."""
        if self._moved is None or self._size is None:
            return None
        return self._moved <= STILL * self._size

    def _without_still_rows(self, tensor: Tensor) -> Tensor:
        still = self._still()
        if still is None or not bool(still.any()):
            return tensor
        return tensor.masked_fill(still.reshape(-1, *([1] * (tensor.dim() - 1))), 0.0)

    def compute(self) -> Tensor:
        """The sum (N, ...); exactly 0 in the rows whose value never moved along the grid (see ``_still``)."""
        return self._without_still_rows(super().compute())

    def error_estimate(self) -> Tensor:
        """The estimated absolute error of ``compute()`` against the integral, per element (N, ...), in the units
        of the sum: ``|drift| / 2 + sqrt(squares) / 8`` for the left and right rules (the first-order part shared
        by every step, and the steps' own parts), ``sqrt(squares) / 8`` for the trapezoid, whose first-order
        parts cancel. A segment rule takes ``sqrt(squares) / 8`` too: where its segments are the path's own
        (``on_path``), ``squares`` holds the steps between all the points of its segments, the trapezoid's on
        that finer grid, which the nodes' sum beats; where they cut across the path's corners (the sigmoid mask
        path), the polygon's distance from the path adds to the error, and ``squares`` holds the steps from
        corner to corner, the trapezoid's estimate on the same corners, which is calibrated against the path's
        own integral. Calibrated against converged references (see the step-sum documentation). Where the grid
        does not resolve the path's straight stretches (``unresolved``: a ramp with more masked cells than steps,
        whose steps cut across its corners, or too few steps on a stretch to see the integrand's curvature), a
        step's error is not bounded by a fraction of its difference; the steps' own parts are then taken as
        large as their differences, ``sqrt(squares)`` (calibrated on sequence models, see the step-sum
        documentation). Needs ``spread=True``."""
        if self.drift is None:
            raise ValueError("error_estimate() needs a ConductanceSum made with spread=True, updated at least once")
        own = self.squares.sqrt() * (ERROR_SPREAD_UNRESOLVED if self._unresolved else ERROR_SPREAD)
        estimate = self.drift.abs() * 0.5 + own if self.rule in ("left", "right") else own
        return self._without_still_rows(estimate)

    def merge(self, other: TensorSum) -> None:
        if self._filled > 1 or getattr(other, "_filled", 0) > 1:
            raise ValueError("a segment rule's sums merge only where a segment ends; this stretch stops inside one")
        super().merge(other)
        self.drift = _sum_of(self.drift, getattr(other, "drift", None))
        self.squares = _sum_of(self.squares, getattr(other, "squares", None))
        for name in ("_size", "_moved"):
            mine, theirs = getattr(self, name), getattr(other, name, None)
            if theirs is not None:
                setattr(self, name, theirs.clone() if mine is None else torch.maximum(mine, theirs))


class CompletenessSum(ConductanceSum):
    """Conductance at the path's input, summed over each sample's elements, step by step: the certificate of a
    step sum.

    Every path from the input to ``F`` crosses the input, so ``compute()`` (N,), the sum over the input's
    elements of ``Σ_j ĝ_j · (x_{j+1} − x_j)``, tends to ``F(end) − F(start)`` as the grid resolves the path.
    ``scale`` (N,) is ``Σ_j |Σ_elements ĝ_j · (x_{j+1} − x_j)|``, the size of the steps' contributions, a
    normaliser that does not vanish when ``F`` barely changes. Fed like ``ConductanceSum``.

    Examples:
        >>> points = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]]])  # x at three grid points, N = 1
        >>> grads = torch.tensor([[[1.0, 2.0]], [[1.0, 2.0]], [[3.0, 2.0]]])  # ∂F/∂x there
        >>> acc = CompletenessSum("left")
        >>> acc.update(points, grads)
        >>> acc.compute().tolist(), acc.scale.tolist()  # 1·1 + 2·1 = 3: F(x) = x_0 + 2 x_1 changes by 3
        ([3.0], [3.0])
    """

    def __init__(self, rule: str = "left") -> None:
        super().__init__(rule)
        self.scale: Optional[Tensor] = None

    def _start(self, values: Tensor, grads: Tensor) -> None:
        self.total = values.new_zeros(values.shape[1])
        self.scale = values.new_zeros(values.shape[1])

    def _add(self, contributions: Tensor, differences: Optional[Tensor]) -> None:
        steps = contributions.flatten(2).sum(2)  # (S, N): each step's share
        self.total.add_(steps.sum(0))
        self.scale.add_(steps.abs().sum(0))

    def merge(self, other: TensorSum) -> None:
        super().merge(other)
        self.scale = _sum_of(self.scale, getattr(other, "scale", None))


STILL = 1e-6  # a row whose steps all move its value less than this, relative to its size, saw nothing


def _row_max(tensor: Tensor, so_far: Optional[Tensor]) -> Tensor:
    """Per row n of ``tensor`` (S, N, ...), the largest |value| over its steps and elements, and ``so_far``'s."""
    largest = tensor.detach().abs().amax(dim=tuple(d for d in range(tensor.dim()) if d != 1))
    return largest if so_far is None else torch.maximum(so_far, largest)


def _sum_of(mine: Optional[Tensor], theirs: Optional[Tensor]) -> Optional[Tensor]:
    """Two optional running sums added (a copy of ``theirs`` when ``mine`` is empty)."""
    if theirs is None:
        return mine
    return theirs.clone() if mine is None else mine + theirs


class GradientSum(TensorSum):
    """Running ``Σ_j g_j · w_j``: ``update(values, grads (S, N, ...), weights (S,))``; ``compute()`` → (N, ...).

    Examples:
        >>> acc = GradientSum()
        >>> acc.update(None, torch.tensor([[1.0], [3.0]]), torch.tensor([0.5, 0.5]))
        >>> acc.compute().tolist()
        [2.0]
    """

    def update(self, values: Optional[Tensor], grads: Tensor, weights: Tensor) -> None:
        dtype = accumulation_dtype(grads.dtype)
        shape = (-1,) + (1,) * (grads.dim() - 1)
        self.add((grads.to(dtype) * weights.to(device=grads.device, dtype=dtype).reshape(shape)).sum(0))


class ScoreSum:
    """Per-layer sums of per-image scores, in float64, and every image's own scores (for the confidence of a
    ranking), with their estimated errors and completeness gaps where the method gives them.

    ``update(per_image, indices, groups, errors, gaps, sources)`` adds a (B, L) tensor of scores for B images,
    with their indices among the analysed images (default: the next B), their group labels, and optionally the
    scores' estimated errors (B, L), the images' completeness gaps (B,) and their source images (``""``:
    unknown); ``compute()`` gives name → sum; ``merge``
    adds another ``ScoreSum`` (from another process or shard; the images must differ); ``rows()`` gives the
    per-image scores (images, L) in index order and their groups, ``certificate()`` their errors and gaps;
    ``state_dict``/``load_state_dict`` round-trip through JSON.

    Examples:
        >>> total = ScoreSum(["conv1", "conv2"])
        >>> total.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), groups=["noise", "blur"])
        >>> total.compute(), total.images
        ({'conv1': 4.0, 'conv2': 6.0}, 2)
        >>> total.rows()
        (array([[1., 2.],
               [3., 4.]]), ['noise', 'blur'])
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.sums = np.zeros(len(self.names), dtype=np.float64)
        self.images = 0
        self.per_image: Dict[int, Tuple[str, List[float]]] = {}
        self.certified: Dict[int, Tuple[List[float], float]] = {}  # image index → (score errors, input gap)
        self.sources: Dict[int, str] = {}  # image index → its source image, where known

    def update(self, per_image: Tensor, indices: Optional[Sequence[int]] = None,
               groups: Optional[Sequence[Any]] = None, errors: Optional[Tensor] = None,
               gaps: Optional[Tensor] = None, sources: Optional[Sequence[str]] = None) -> None:  # fmt: skip
        if per_image.dim() != 2 or per_image.shape[1] != len(self.names):
            raise ValueError(f"per_image must have shape (B, {len(self.names)}), got {tuple(per_image.shape)}")
        values = per_image.detach().double().cpu().numpy()
        indices = list(range(self.images, self.images + len(values))) if indices is None else list(indices)
        groups = [""] * len(values) if groups is None else [str(g) for g in groups]
        if len(indices) != len(values) or len(groups) != len(values):
            raise ValueError(f"indices and groups must give one entry per image ({len(values)})")
        if (errors is None) != (gaps is None):
            raise ValueError("errors and gaps come together (the certificate of a step sum), or not at all")
        if errors is not None and (tuple(errors.shape) != values.shape or tuple(gaps.shape) != (len(values),)):
            raise ValueError(f"errors must have shape {values.shape} and gaps ({len(values)},), got "
                             f"{tuple(errors.shape)} and {tuple(gaps.shape)}")  # fmt: skip
        self.sums += values.sum(0)
        self.images += len(values)
        self.per_image.update({int(i): (g, row.tolist()) for i, g, row in zip(indices, groups, values)})
        if sources is not None:
            if len(sources) != len(values):
                raise ValueError(f"sources must give one entry per image ({len(values)}), got {len(sources)}")
            self.sources.update({int(i): str(s) for i, s in zip(indices, sources) if s != ""})
        if errors is not None:
            rows, gap_values = errors.detach().double().cpu().tolist(), gaps.detach().double().cpu().tolist()
            self.certified.update({int(i): (row, gap) for i, row, gap in zip(indices, rows, gap_values)})

    def merge(self, other: ScoreSum) -> None:
        if other.names != self.names:
            raise ValueError("ScoreSum.merge needs the same layers in the same order")
        if self.per_image.keys() & other.per_image.keys():
            raise ValueError("ScoreSum.merge needs sums over different images")
        self.sums += other.sums
        self.images += other.images
        self.per_image.update(other.per_image)
        self.certified.update(other.certified)
        self.sources.update(other.sources)

    def compute(self) -> Dict[str, float]:
        return dict(zip(self.names, self.sums.tolist()))

    def rows(self) -> Tuple[np.ndarray, List[str]]:
        """The per-image scores (images, L) float64 in the order of the images' indices, and their groups."""
        order = sorted(self.per_image)
        values = np.array([self.per_image[i][1] for i in order], dtype=np.float64).reshape(len(order), len(self.names))
        return values, [self.per_image[i][0] for i in order]

    def source_labels(self) -> List[str]:
        """Each image's source in the order of the images' indices, ``""`` where unknown."""
        return [self.sources.get(i, "") for i in sorted(self.per_image)]

    def certificate(self) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """The per-image estimated errors (images, L) and completeness gaps (images,), float64, in the order of
        the images' indices; ``(None, None)`` unless every image has them."""
        if not self.certified or self.certified.keys() != self.per_image.keys():
            return None, None
        order = sorted(self.certified)
        errors = np.array([self.certified[i][0] for i in order], dtype=np.float64).reshape(len(order), -1)
        return errors, np.array([self.certified[i][1] for i in order], dtype=np.float64)

    def state_dict(self) -> Dict[str, Any]:
        rows = [[index, group, scores] for index, (group, scores) in sorted(self.per_image.items())]
        certified = [[index, errors, gap] for index, (errors, gap) in sorted(self.certified.items())]
        return {"names": self.names, "sums": self.sums.tolist(), "images": self.images, "per_image": rows,
                "certified": certified, "sources": sorted(self.sources.items())}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["names"]) != self.names:
            raise ValueError("the checkpoint was written for other layers")
        self.sums = np.asarray(state["sums"], dtype=np.float64)
        self.images = int(state["images"])
        self.per_image = {int(i): (str(g), list(map(float, row))) for i, g, row in state.get("per_image", [])}
        self.certified = {int(i): (list(map(float, row)), float(gap)) for i, row, gap in state.get("certified", [])}
        self.sources = {int(i): str(source) for i, source in state.get("sources", [])}


__all__ = [
    "STEP_RULES",
    "Accumulator",
    "CompletenessSum",
    "ConductanceSum",
    "GradientSum",
    "ScoreSum",
    "TensorSum",
    "accumulation_dtype",
]
