"""Which layers fill a budget: the units a selection counts, and the strategies of
``LayerScores.top_k(strategy=...)``.

A selection counts *units*, not layers. Layers whose scores agree to a relative ``TIE`` (1e-6) and are not
zero are one unit: their outputs are, as a rule, affine images of each other (a convolution and the eval-mode
BatchNorm after it; an attention module and its output projection, whose output it returns), conductance is
the same for both, and which of the two is first is rounding noise. A unit is selected whole, counts once
against a budget in layers, and costs its layers' summed parameters ([`units()`][macattr.selection.units]).
With ``strategy="blocks"`` a unit is a whole block instead ([`block_units()`][macattr.selection.block_units]).

A budget in parameters is a cap ``allowed`` on the summed sizes of the chosen units. The ways to fill it,
each returning the chosen names best score first:

- ``"greedy"`` (the default): down the ranking, taking every layer that still fits (a layer that would go over
  the cap is passed over and the walk goes on).
- ``"per_parameter"``: the same walk, ordered by score per parameter element (small layers with high scores
  first).
- ``"knapsack"``: the set of layers with the largest summed score whose sizes fit the cap (0/1 knapsack,
  solved by dynamic programming over sizes in units of ``unit``: the greatest common divisor of the sizes, or
  ``allowed / 4096`` rounded up when that is larger, with sizes rounded up to whole units, so the cap always
  holds; the optimum is exact when the sizes' common divisor is the unit).
- ``"blocks"``: whole blocks ([`block_of`][macattr.layers.block_of]: a transformer layer, a Swin block), each
  scored by its layers' summed score, greedily down that order.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping

import numpy as np

from macattr.layers import block_of
from macattr.vocabulary import STRATEGIES

UNITS = 4096  # the knapsack's capacity in units at most
TIE = 1e-6  # scores this close (relative) are one unit


def units(scores: Mapping[str, float], tie: float = TIE) -> List[List[str]]:
    """The layers grouped into units, best score first: a unit holds the layers whose nonzero scores agree
    with its first one's to a relative ``tie`` (``tie=0``: every layer a unit of its own); within a unit, best
    first (equal scores in the order of ``scores``).

    Examples:
        >>> units({"conv": 2.0, "bn": 2.0 + 1e-9, "out": 1.0, "a": 0.0, "b": 0.0})
        [['bn', 'conv'], ['out'], ['a'], ['b']]
    """
    if not isinstance(tie, (int, float)) or not 0 <= tie < 1:
        raise ValueError(f"tie must be a relative tolerance in [0, 1), got {tie!r}")
    ranked = sorted(scores, key=lambda name: -scores[name])
    grouped: List[List[str]] = []
    for name in ranked:
        first = scores[grouped[-1][0]] if grouped else 0.0
        if tie > 0 and first != 0 and abs(scores[name] - first) <= tie * abs(first):
            grouped[-1].append(name)
        else:
            grouped.append([name])
    return grouped


def block_units(scores: Mapping[str, float]) -> List[List[str]]:
    """The layers grouped by block ([`block_of`][macattr.layers.block_of]), the block of largest summed score
    first; within a block, the order of ``scores``.

    Examples:
        >>> block_units({"blocks.0.attn": 1.0, "blocks.0.mlp": 1.0, "blocks.1.attn": 1.5, "head": 0.1})
        [['blocks.0.attn', 'blocks.0.mlp'], ['blocks.1.attn'], ['head']]
    """
    blocks: Dict[str, List[str]] = {}
    for name in scores:
        blocks.setdefault(block_of(name), []).append(name)
    return sorted(blocks.values(), key=lambda members: -sum(scores[n] for n in members))


def check_strategy(strategy: object) -> str:
    """``strategy`` if it is one of ``STRATEGIES``.

    Examples:
        >>> check_strategy("knapsack")
        'knapsack'
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    return str(strategy)


def fill_budget(scores: Dict[str, float], sizes: Dict[str, int], allowed: int, strategy: str = "greedy") -> List[str]:
    """The layers ``strategy`` chooses within ``allowed`` parameter elements, best score first (scores and sizes
    by name; ties keep the order of ``scores``).

    Examples:
        >>> scores, sizes = {"a": 10.0, "b": 6.0, "c": 6.0}, {"a": 60, "b": 50, "c": 50}
        >>> fill_budget(scores, sizes, 100), fill_budget(scores, sizes, 100, "knapsack")  # 10 against 6 + 6
        (['a'], ['b', 'c'])
        >>> fill_budget({"a": 10.0, "b": 3.0}, {"a": 90, "b": 10}, 50, "per_parameter")
        ['b']
    """
    check_strategy(strategy)
    names = list(scores)
    if strategy == "knapsack":
        picked = {names[i] for i in _knapsack([scores[n] for n in names], [sizes[n] for n in names], allowed)}
    else:
        by_density = strategy == "per_parameter"
        order = sorted(names, key=lambda n: -scores[n] / max(sizes[n], 1)) if by_density else names
        picked, used = set(), 0
        for name in order:
            if used + sizes[name] <= allowed:
                picked.add(name)
                used += sizes[name]
    return [name for name in names if name in picked]


def _knapsack(values: List[float], weights: List[int], capacity: int) -> List[int]:
    """Indices of the items of largest summed value whose weights fit ``capacity`` (see the module text)."""
    common = 0
    for weight in weights:
        common = math.gcd(common, int(weight))
    unit = max(common, 1, math.ceil(capacity / UNITS))
    units = [math.ceil(w / unit) for w in weights]
    cap = capacity // unit
    best = np.zeros(cap + 1)  # best[c]: the largest value within c units
    taken = np.zeros((len(values), cap + 1), dtype=bool)
    for i, (value, size) in enumerate(zip(values, units)):
        if size > cap or value <= 0:
            continue
        with_item = np.full(cap + 1, -np.inf)
        with_item[size:] = best[: cap + 1 - size] + value
        taken[i] = with_item > best
        best = np.maximum(best, with_item)
    chosen, c = [], int(np.argmax(best))
    for i in range(len(values) - 1, -1, -1):
        if taken[i, c]:
            chosen.append(i)
            c -= units[i]
    return chosen


__all__ = ["STRATEGIES", "TIE", "block_units", "check_strategy", "fill_budget", "units"]
