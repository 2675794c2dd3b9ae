"""Which layers fill a budget of parameters: the strategies of ``LayerScores.top_k(strategy=...)``.

A budget in parameters is a cap ``allowed`` on the summed sizes of the chosen layers. Three ways to fill it,
each returning the chosen names best score first:

- ``"greedy"`` (the default): down the ranking, taking every layer that still fits (a layer that would go over
  the cap is passed over and the walk goes on).
- ``"per_parameter"``: the same walk, ordered by score per parameter element (small layers with high scores
  first).
- ``"knapsack"``: the set of layers with the largest summed score whose sizes fit the cap (0/1 knapsack,
  solved by dynamic programming over sizes in units of ``unit``: the greatest common divisor of the sizes, or
  ``allowed / 4096`` rounded up when that is larger, with sizes rounded up to whole units, so the cap always
  holds; the optimum is exact when the sizes' common divisor is the unit).
"""

from __future__ import annotations

import math
from typing import Dict, List

import numpy as np

STRATEGIES = ("greedy", "per_parameter", "knapsack")
UNITS = 4096  # the knapsack's capacity in units at most


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
        order = names if strategy == "greedy" else sorted(names, key=lambda n: -scores[n] / max(sizes[n], 1))
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


__all__ = ["STRATEGIES", "check_strategy", "fill_budget"]
