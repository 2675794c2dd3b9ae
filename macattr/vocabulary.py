"""The names the library and the ``macattr`` command accept, in a module that imports nothing heavy, so that
``macattr --help`` and ``macattr --version`` answer without loading torch.

The modules that act on these names import them from here: the step rules
([`macattr.accumulators`][macattr.accumulators]), the selection strategies
([`macattr.selection`][macattr.selection]), the named targets ([`macattr.targets`][macattr.targets]), the figure
kinds ([`macattr.plots`][macattr.plots]), the named normalisations and the built-in methods
([`macattr.ranking.methods`][macattr.ranking.methods], which adds their scorers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

STEP_RULES = ("left", "right", "trapezoid")
"""Which gradient a conductance step ``α_j → α_{j+1}`` multiplies ``y(α_{j+1}) − y(α_j)`` by: ``left``
``∂F/∂y|_{α_j}``, ``right`` ``∂F/∂y|_{α_{j+1}}``, ``trapezoid`` their mean."""

SEGMENT_RULES = tuple(f"gauss{m}{grading}" for grading in ("", "-graded") for m in (2, 3, 4))
"""Quadrature inside each step (see [`macattr.segments`][macattr.segments]): ``gauss<m>`` integrates every one of
the N steps, taken as a straight segment between its end points, with ``m`` Gauss–Legendre nodes; ``-graded``
crowds the nodes towards each segment's start (``τ = u³``), for a start where the integrand is steep."""

RULES = STEP_RULES + SEGMENT_RULES
"""Every rule of a conductance sum: the step rules and the segment rules."""

STRATEGIES = ("greedy", "per_parameter", "knapsack", "blocks")
"""How a selection fills its budget (see [`macattr.selection`][macattr.selection])."""

TARGET_NAMES = ("gradient_magnitude", "sum", "mean")
"""The targets ``rank_layers`` and the command accept by name (see [`macattr.targets`][macattr.targets])."""

FIGURE_KINDS = ("profile", "heatmap", "bar")
"""Figure kinds of ``plot_layer_importance`` (only ``"profile"`` draws several scorings)."""

COMPARE_KINDS = ("heatmap", "profile")
"""Figure kinds of ``plot_comparison``."""

NORMALIZATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
"""Named per-channel (mean, std) for ``RankSettings(normalize=...)`` and ``--normalize``."""


@dataclass(frozen=True)
class MethodName:
    """A built-in method as the command lists it: its name, its aliases and one line on what it scores."""

    name: str
    summary: str
    aliases: Tuple[str, ...] = ()


BUILT_IN_METHODS: Dict[str, MethodName] = {
    entry.name: entry
    for entry in (
        MethodName("mac", "conductance along the mask attribute path (RAM's Mask Attribute Conductance)"),
        MethodName("conductance", "conductance along any path (default: the linear path from the baseline)"),
        MethodName(
            "internal_influence",
            "internal influence along a path, without conductance's (y - y') factor; 'ig' is RAM's IG baseline",
            ("ig",),
        ),
        MethodName("gradnorm", "relative gradient norm of each layer's own parameters under the fine-tuning loss"),
        MethodName(
            "fisher",
            "diagonal empirical Fisher information of each layer's own parameters under the fine-tuning loss",
        ),
        MethodName(
            "kappa",
            "data-free: the best-conditioned weight matrices first (1 / (σ_max / σ_min)), KappaTune's criterion",
        ),
        MethodName("random", "seeded random scores"),
        MethodName("random_blocks", "seeded random scores shared by each block's layers (LISA's baseline)"),
        MethodName("uniform", "spread evenly through depth (every top k)"),
        MethodName("last", "the deepest layers first"),
        MethodName("first", "the shallowest layers first"),
    )
}
"""The methods [`macattr.ranking.methods`][macattr.ranking.methods] registers, in order."""

__all__ = [
    "BUILT_IN_METHODS",
    "COMPARE_KINDS",
    "FIGURE_KINDS",
    "MethodName",
    "NORMALIZATIONS",
    "RULES",
    "SEGMENT_RULES",
    "STEP_RULES",
    "STRATEGIES",
    "TARGET_NAMES",
]
