"""Quadrature inside each step: conductance integrated along straight segments with Gauss–Legendre nodes.

A step rule (``left``, ``right``, ``trapezoid``) multiplies a gradient by a whole step's change
``y(α_{j+1}) − y(α_j)``. Where the path is straight within a step (the linear path; the mask path with
``ramp=True`` on a grid aligned to its cells) or can be taken as straight (a step of the sigmoid mask path,
which reveals its pixels in one jump), the step's conductance ``∫ ∂F/∂y · dy`` can be integrated to high
order instead:

- the step is the segment ``X(τ) = X_j + τ (X_{j+1} − X_j)``, τ ∈ [0, 1]
  ([`PolygonalPath`][macattr.segments.PolygonalPath] joins the grid's points so);
- with ``τ = u`` (or ``τ = u³``, graded towards the segment's start) the layer's value is interpolated by the
  polynomial through ``u = 0``, the m Gauss–Legendre nodes ``u_1 … u_m`` and ``u = 1``, and the integral
  ``∫_0^1 ∂F/∂y · dy/du du`` is taken with the Gauss–Legendre weights: ``Σ_k w_k g_k · Σ_l D_kl y_l``, exact
  when the gradient and the value are polynomials in ``u`` of degrees m − 1 and m + 1;
- the gradients at the segment's ends are not used by the sum (a start where the network is singular, such
  as an all-zero token into an RMSNorm, is never evaluated); they enter the error estimate, which is the
  trapezoid's on all of the segment's points (see
  [`ConductanceSum.error_estimate`][macattr.accumulators.ConductanceSum.error_estimate]).

Each segment costs m + 1 points (its start is the previous segment's end): N segments take N (m + 1) + 1
forward and backward passes per image. The path's own parametrisation does not matter: conductance along a
segment does not depend on how fast it is travelled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from macattr._checks import check_choice, check_int
from macattr.paths import IntegrationPath, PointsFn, interval_of
from macattr.vocabulary import SEGMENT_RULES

POINTS_PER_STRETCH = 5  # grid points (ends included) that resolve a straight stretch of the ramp
GRADING = 3.0  # τ = u**GRADING in a graded segment: the first node moves from u_1 to u_1³ of the segment


@dataclass(frozen=True)
class SegmentRule:
    """``nodes`` Gauss–Legendre nodes inside every segment (2, 3 or 4 by name), graded towards its start or not.

    Examples:
        >>> rule = SegmentRule.named("gauss2")
        >>> [round(t, 4) for t in rule.positions().tolist()]  # the segment's start, its two nodes, its end
        [0.0, 0.2113, 0.7887, 1.0]
        >>> y = torch.tensor([0.0, 0.2113, 0.7887, 1.0]) ** 2  # y = τ² along the segment, dy/dτ = 2τ
        >>> g = torch.tensor([1.0, 1.0, 1.0, 1.0])  # ∂F/∂y = 1: the integral is y(1) − y(0) = 1
        >>> round(float(rule.node_sum(g, y)), 4)
        1.0
    """

    nodes: int
    graded: bool = False

    def __post_init__(self) -> None:
        check_int("nodes", self.nodes, 1)
        if not isinstance(self.graded, bool):
            raise TypeError(f"graded must be True or False, got {self.graded!r}")

    @classmethod
    def named(cls, rule: str) -> SegmentRule:
        """The rule of a name of ``SEGMENT_RULES`` (``gauss3``, ``gauss3-graded``, ...)."""
        check_choice("rule", rule, SEGMENT_RULES)
        match = re.fullmatch(r"gauss(\d+)(-graded)?", rule)
        return cls(int(match.group(1)), match.group(2) is not None)

    @property
    def points_per_segment(self) -> int:
        """Grid points a segment adds: its nodes and its end."""
        return self.nodes + 1

    def _u(self) -> np.ndarray:
        inner, _ = np.polynomial.legendre.leggauss(self.nodes)
        return np.concatenate([[0.0], 0.5 * (1 + inner), [1.0]])

    def positions(self) -> Tensor:
        """Where the segment's m + 2 points lie along it, τ in [0, 1], float64 (m + 2,): 0, the nodes, 1."""
        u = self._u()
        return torch.from_numpy(u**GRADING if self.graded else u)

    def _differentiation(self) -> np.ndarray:
        """``D`` (m + 2, m + 2): ``Σ_l D_kl y_l`` is the derivative in ``u`` at ``u_k`` of the polynomial
        through the ``(u_l, y_l)``."""
        u = self._u()
        gaps = u[:, None] - u[None, :]
        np.fill_diagonal(gaps, 1.0)
        barycentric = 1.0 / gaps.prod(axis=1)
        matrix = (barycentric[None, :] / barycentric[:, None]) / gaps
        np.fill_diagonal(matrix, 0.0)
        np.fill_diagonal(matrix, -matrix.sum(axis=1))
        return matrix

    def node_matrix(self) -> Tensor:
        """``C`` (m, m + 2), float64: a segment's conductance is ``Σ_k g_k · Σ_l C_kl y_l`` over its nodes k and
        all its points l (the Gauss–Legendre weight times the derivative of the value's interpolant)."""
        _, weights = np.polynomial.legendre.leggauss(self.nodes)
        return torch.from_numpy(0.5 * weights[:, None] * self._differentiation()[1:-1])

    def node_sum(self, grads: Tensor, values: Tensor) -> Tensor:
        """One segment's conductance from its m + 2 points (m + 2, ...) of gradients and values → (...)."""
        change = torch.tensordot(self.node_matrix().to(values), values, dims=1)
        return (grads[1:-1] * change).sum(0)

    def alphas(self, breaks: Tensor) -> Tensor:
        """The grid of every segment between consecutive ``breaks`` (N + 1,): float64 (N (m + 1) + 1,), the
        breaks themselves included."""
        starts, widths = breaks[:-1], breaks.diff()
        inside = starts[:, None] + widths[:, None] * self.positions()[None, :-1]
        return torch.cat([inside.flatten(), breaks[-1:]])


@dataclass(frozen=True)
class PolygonalPath:
    """The polygon through the points ``X(α_j)`` of ``path`` at ``n_segments + 1`` equidistant ``α_j`` of its
    interval: straight from one to the next, the same ends as ``path``.

    On a path that is straight between those points (the linear path; the mask path with ``ramp=True`` when
    the segments divide its cells' stretches) it is the path itself; on the sigmoid mask path it replaces
    each step's jumps by a straight move, the shape a step rule integrates too.

    Examples:
        >>> from macattr.paths import MaskAttributionPath
        >>> path = MaskAttributionPath(mask_ratio=0.5, ramp=True, seed=0, mask_dims="sequence")
        >>> x, b = torch.ones(1, 4, 2), torch.zeros(1, 4, 2)
        >>> alphas = torch.tensor([0.55, 0.6, 0.9], dtype=torch.float64)
        >>> on_polygon = PolygonalPath(path, 4).bind((x,), (b,))(alphas)[0]
        >>> torch.allclose(on_polygon, path.bind((x,), (b,))(alphas)[0])  # the ramp is straight between them
        True
    """

    path: IntegrationPath
    n_segments: int

    def __post_init__(self) -> None:
        interval_of(self.path)
        check_int("n_segments", self.n_segments, 1)

    def interval(self) -> Tuple[float, float]:
        return interval_of(self.path)

    def breaks(self, inputs: Optional[Tuple[Tensor, ...]] = None) -> Tensor:
        """The ``n_segments + 1`` ends of the segments: ``aligned_grid(path, n_segments, inputs)``."""
        return aligned_grid(self.path, self.n_segments, inputs)

    def is_path(self, inputs: Tuple[Tensor, ...]) -> bool:
        """Whether the polygon is ``path`` itself for these inputs: the path says so with a method
        ``straight_between(breaks, inputs)`` (the linear path always, the mask path's ramp when the segments
        meet its corners); a path without one is taken to be curved."""
        straight = getattr(self.path, "straight_between", None)
        return bool(straight(self.breaks(inputs), inputs)) if callable(straight) else False

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> PointsFn:
        corners_at = self.path.bind(inputs, baselines)
        breaks = self.breaks(inputs)
        n_samples = inputs[0].shape[0]

        def points(alphas: Tensor) -> Tuple[Tensor, ...]:
            alphas = alphas.double().cpu()
            segment = (torch.searchsorted(breaks, alphas, right=True) - 1).clamp(0, self.n_segments - 1)
            along = ((alphas - breaks[segment]) / (breaks[segment + 1] - breaks[segment])).clamp(0, 1)
            needed, where = torch.unique(torch.cat([segment, segment + 1]), return_inverse=True)
            first, second = where[: len(alphas)], where[len(alphas) :]
            out = []
            for corners in corners_at(breaks[needed]):
                corners = corners.reshape(len(needed), n_samples, *corners.shape[1:])
                weight = along.to(corners).reshape(-1, *([1] * (corners.dim() - 1)))
                blend = corners[first] * (1 - weight) + corners[second] * weight
                out.append(blend.reshape(-1, *corners.shape[2:]))
            return tuple(out)

        return points


def aligned_grid(path: IntegrationPath, n_steps: int, inputs: Optional[Tuple[Tensor, ...]] = None) -> Tensor:
    """``n_steps + 1`` points of the path's interval, float64, both ends included: equidistant, or, where the
    path turns at fewer ``corners(inputs)`` than ``n_steps`` (the ramp over a sequence's tokens) and every sample
    has the same corners whatever its batch (``shared_corners()``), every corner is one of them and the stretches
    between corners share the steps in proportion to their lengths (at least one each), so that the path is
    straight within every step.

    Examples:
        >>> from macattr.paths import MaskAttributionPath
        >>> ramp = MaskAttributionPath(mask_ratio=0.5, ramp=True, seed=0, mask_dims="sequence")
        >>> [round(a, 4) for a in aligned_grid(ramp, 4, (torch.ones(1, 3, 2),)).tolist()]  # 3 tokens: a corner at 2/3
        [0.5, 0.5833, 0.6667, 0.8333, 1.0]
    """
    check_int("n_steps", n_steps, 1)
    start, end = interval_of(path)
    corners, shared = getattr(path, "corners", None), getattr(path, "shared_corners", None)
    batch_free = not callable(shared) or shared()  # a grid aligned to others' corners would change each answer
    turns = corners(inputs) if callable(corners) and inputs is not None and batch_free else None
    if turns is None or not len(turns) or len(turns) >= n_steps:
        return torch.linspace(start, end, n_steps + 1, dtype=torch.float64)
    ends = torch.cat([torch.tensor([start], dtype=torch.float64), turns, torch.tensor([end], dtype=torch.float64)])
    shares = _apportioned(ends.diff(), n_steps)
    pieces = [torch.linspace(float(a), float(b), int(n) + 1, dtype=torch.float64)[:-1]
              for a, b, n in zip(ends[:-1], ends[1:], shares)]  # fmt: skip
    return torch.cat([*pieces, ends[-1:]])


def resolves_stretches(path: IntegrationPath, ends: Tensor, inputs: Tuple[Tensor, ...],
                       points_per_step: int = 1) -> bool:  # fmt: skip
    """Whether the steps between consecutive ``ends`` (float64, ascending), each adding ``points_per_step`` grid
    points (1 for a step rule, m + 1 for a segment rule), resolve the path's straight stretches: every corner of
    the path (``corners(inputs)``, the ramp's) is one of the ends and every stretch between corners holds at
    least ``POINTS_PER_STRETCH`` grid points, its ends included. A path without corners is not judged here
    (True). Where this is false, a rule's error can be first order in the step (see
    [`ConductanceSum`][macattr.accumulators.ConductanceSum]'s ``unresolved``).

    Examples:
        >>> from macattr.paths import MaskAttributionPath
        >>> ramp = MaskAttributionPath(mask_ratio=0.5, ramp=True, seed=0, mask_dims="sequence")
        >>> tokens = (torch.ones(1, 4, 2),)  # 2 masked tokens: one corner, at 3/4
        >>> [resolves_stretches(ramp, aligned_grid(ramp, n, tokens), tokens) for n in (1, 7, 8)]  # 4 steps each
        [False, False, True]
        >>> resolves_stretches(ramp, aligned_grid(ramp, 2, tokens), tokens, points_per_step=4)  # one gauss3 each
        True
    """
    check_int("points_per_step", points_per_step, 1)
    corners = getattr(path, "corners", None)
    turns = corners(inputs) if callable(corners) else None
    if turns is None:
        return True
    ends = ends.to(turns)
    if len(turns) and float((turns[:, None] - ends[None]).abs().min(1).values.max()) > 1e-9:
        return False
    start, end = interval_of(path)
    bounds = torch.cat([torch.tensor([start], dtype=turns.dtype), turns, torch.tensor([end], dtype=turns.dtype)])
    at = torch.searchsorted(ends, bounds - 1e-9)  # the index of each bound among the ends
    return bool((at.diff() * points_per_step + 1 >= POINTS_PER_STRETCH).all())


def _apportioned(lengths: Tensor, total: int) -> Tensor:
    """``total`` whole shares, at least one each, in proportion to ``lengths`` (largest remainders): int64 (len,).

    Examples:
        >>> _apportioned(torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64), 7).tolist()
        [2, 2, 3]
    """
    extra = total - len(lengths)
    ideal = lengths / lengths.sum() * extra
    shares = ideal.floor().long()
    left = extra - int(shares.sum())
    shares[torch.argsort(ideal - shares, descending=True, stable=True)[:left]] += 1
    return shares + 1


def points_per_image(rule: str, n_steps: int) -> int:
    """The grid points, each one forward and backward pass, that one image takes with ``rule`` at ``n_steps``:
    N + 1 for a step rule, N (m + 1) + 1 for a segment rule.

    Examples:
        >>> points_per_image("left", 200), points_per_image("gauss2", 66)
        (201, 199)
    """
    check_int("n_steps", n_steps, 1)
    if rule in SEGMENT_RULES:
        return n_steps * SegmentRule.named(rule).points_per_segment + 1
    return n_steps + 1


def remedy(rule: str, command: bool = False, ramp: bool = False) -> str:
    """What to change when a sum with ``rule`` is not within its tolerance, in the words of the Python API or,
    with ``command``, of the ``macattr`` command's options; ``ramp``: on the ramp, whose estimate counts on a
    grid that resolves every masked cell's straight move.

    Examples:
        >>> remedy("left")
        "rule='gauss2' (a third of n_steps for the same passes) or a larger n_steps"
        >>> remedy("gauss2", command=True)
        'a larger --n-steps'
        >>> remedy("gauss2", ramp=True)
        'a larger n_steps (on the ramp: 5 grid points per masked cell: 4 steps, 2 gauss2 or 1 gauss3 segments)'
    """
    steps, better = ("--n-steps", "--rule gauss2") if command else ("n_steps", "rule='gauss2'")
    on_ramp = (f" (on the ramp: {POINTS_PER_STRETCH} grid points per masked cell: 4 steps, 2 gauss2 or 1 gauss3 "
               "segments)") if ramp else ""  # fmt: skip
    if rule in SEGMENT_RULES:
        return f"a larger {steps}{on_ramp}"
    return f"{better} (a third of {steps} for the same passes) or a larger {steps}{on_ramp}"


__all__ = [
    "GRADING",
    "POINTS_PER_STRETCH",
    "PolygonalPath",
    "SegmentRule",
    "aligned_grid",
    "points_per_image",
    "remedy",
    "resolves_stretches",
]
