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
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from macattr._checks import check_choice, check_int
from macattr.paths import IntegrationPath, PointsFn, interval_of
from macattr.vocabulary import SEGMENT_RULES

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

    def breaks(self) -> Tensor:
        """The ``n_segments + 1`` corners' ``α``, float64, both ends of the interval included."""
        start, end = self.interval()
        return torch.linspace(start, end, self.n_segments + 1, dtype=torch.float64)

    def is_path(self, inputs: Tuple[Tensor, ...]) -> bool:
        """Whether the polygon is ``path`` itself for these inputs: the path says so with a method
        ``straight_between(breaks, inputs)`` (the linear path always, the mask path's ramp when the segments
        meet its corners); a path without one is taken to be curved."""
        straight = getattr(self.path, "straight_between", None)
        return bool(straight(self.breaks(), inputs)) if callable(straight) else False

    def bind(self, inputs: Tuple[Tensor, ...], baselines: Tuple[Tensor, ...]) -> PointsFn:
        corners_at = self.path.bind(inputs, baselines)
        breaks = self.breaks()
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


def remedy(rule: str, command: bool = False) -> str:
    """What to change when a sum with ``rule`` is not within its tolerance, in the words of the Python API or,
    with ``command``, of the ``macattr`` command's options.

    Examples:
        >>> remedy("left")
        "rule='gauss2' (a third of n_steps for the same passes) or a larger n_steps"
        >>> remedy("gauss2", command=True)
        'a larger --n-steps'
    """
    steps, better = ("--n-steps", "--rule gauss2") if command else ("n_steps", "rule='gauss2'")
    if rule in SEGMENT_RULES:
        return f"a larger {steps}"
    return f"{better} (a third of {steps} for the same passes) or a larger {steps}"


__all__ = ["GRADING", "PolygonalPath", "SegmentRule", "points_per_image", "remedy"]
