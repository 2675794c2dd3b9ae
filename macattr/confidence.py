"""How sure a top k is: a bootstrap over the analysed images, within their groups.

A ranking sums per-image scores. Drawing the images again with replacement,
group by group (as many from each group as it had), and summing again gives
what the ranking might have been on other images from the same source: each
layer's score interval, its probability of being among the top k, the
probability that the top k comes out the same, and the expected overlap of the
top k of two independent runs. Each resample is selected with the same rule as
the scores themselves ([`LayerScores.top_k()`][macattr.scores.LayerScores.top_k]),
so budgets in parameters and the rounding of k carry over.

A group needs two images at least: with one, every resample draws the same
image and the bootstrap would claim a certainty it does not have.

Images made from one source (the same photograph under five degradations) are
not independent: given their ``sources``, the bootstrap draws sources with
replacement and takes all of a drawn source's images. When every source's
images lie in one group, sources are drawn group by group (as many as the group
has); otherwise from all sources at once. Images without a source are their own.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from macattr._checks import check_int


@dataclass(frozen=True)
class Confidence:
    """The bootstrap's answer for one selection rule.

    Attributes:
        names: the layers, in depth order.
        selected: the top k of the scores themselves, best first.
        low, high: name → the ``level`` percentile interval of the layer's score (same units as the scores).
        in_top_k: name → the share of resamples whose top k holds the layer, in [0, 1].
        same_top_k: the share of resamples whose top k is ``selected`` (as a set), in [0, 1].
        expected_overlap: the mean share of the top k that two independent resamples have in common
            (|A ∩ B| / |A|), an estimate of the overlap with a rerun on new images, in [0, 1].
        resamples, level, k, budget: how it was computed; images: analysed images; groups: group → images;
            sources: how many sources were resampled (0: the images themselves).
    """

    names: List[str]
    selected: List[str]
    low: Dict[str, float]
    high: Dict[str, float]
    in_top_k: Dict[str, float]
    same_top_k: float
    expected_overlap: float
    resamples: int
    level: float
    k: Union[int, float]
    budget: str
    images: int
    groups: Dict[str, int]
    sources: int = 0

    def table(self, limit: Optional[int] = None) -> str:
        """One line per layer, best score first (the first ``limit``), then the summary line."""
        ranked = sorted(self.names, key=lambda n: -self.in_top_k[n])
        ranked = [n for n in self.selected] + [n for n in ranked if n not in self.selected]
        width = max(5, *(len(n) for n in self.names))
        percent = f"{100 * self.level:g} %"
        lines = [f"{'layer':{width}s}  {'P(top k)':>8s}  {percent + ' interval':>26s}"]
        for name in ranked[:limit]:
            mark = "*" if name in self.selected else " "
            lines.append(f"{name:{width}s}  {self.in_top_k[name]:8.3f}  "
                         f"[{self.low[name]:11.5g}, {self.high[name]:11.5g}] {mark}")  # fmt: skip
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        """One sentence: the chance the top k stays the same and the expected overlap with a rerun."""
        groups = f" within {len(self.groups)} groups" if len(self.groups) > 1 else ""
        sources = f" from {self.sources} sources" if self.sources else ""
        return (f"P(same top k) = {self.same_top_k:.3f}, expected overlap with a rerun {self.expected_overlap:.3f} "
                f"({self.resamples} bootstrap resamples of {self.images} images{sources}{groups})")  # fmt: skip

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready record (the scores file's ``confidence`` entry)."""
        return {
            "k": self.k, "budget": self.budget, "resamples": self.resamples, "level": self.level,
            "images": self.images, "groups": self.groups, "sources": self.sources, "selected": self.selected,
            "same_top_k": self.same_top_k, "expected_overlap": self.expected_overlap,
            "layers": {n: {"in_top_k": self.in_top_k[n], "low": self.low[n], "high": self.high[n]}
                       for n in self.names},
        }  # fmt: skip


def resampled_sums(per_image: np.ndarray, groups: List[str], resamples: int, seed: int,
                   sources: Optional[List[str]] = None) -> np.ndarray:  # fmt: skip
    """(resamples, layers) sums of ``per_image`` (images, layers) over images drawn with replacement, each group
    contributing as many draws as it has images; with ``sources``, over sources drawn with replacement (see the
    module's description).

    Examples:
        >>> rows = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> resampled_sums(rows, ["a", "a", "b"], 3, seed=0)[:, 1]  # group b's one image is always drawn
        array([1., 1., 1.])
        >>> sums = resampled_sums(rows, ["", "", ""], 200, seed=0, sources=["p", "p", "q"])
        >>> sorted(set(sums[:, 0].tolist()))  # p's two images come together: 0, 2 or 4 of them
        [0.0, 2.0, 4.0]
    """
    generator = np.random.default_rng(seed)
    units = _units(groups, sources)
    total = np.zeros((resamples, per_image.shape[1]), dtype=np.float64)
    for members in units.values():  # stratum → its units, each a list of image rows
        unit_sums = np.stack([per_image[rows].sum(axis=0) for rows in members])
        draws = generator.integers(0, len(members), size=(resamples, len(members)))
        total += unit_sums[draws].sum(axis=1)
    return total


def _units(groups: List[str], sources: Optional[List[str]]) -> Dict[str, List[List[int]]]:
    """The bootstrap's strata, each a list of units (the image rows drawn together): every image its own unit
    within its group, or with ``sources`` every source one unit, in its group when its images share one, else
    in one stratum of all sources."""
    labels = sources if sources is not None else [""] * len(groups)
    keys = [label if label else f"\0image {i}" for i, label in enumerate(labels)]
    rows: Dict[str, List[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    nested = all(len({groups[i] for i in members}) == 1 for members in rows.values())
    strata: Dict[str, List[List[int]]] = {}
    for members in rows.values():
        strata.setdefault(groups[members[0]] if nested else "", []).append(members)
    return dict(sorted(strata.items()))


def score_intervals(per_image: np.ndarray, groups: List[str], level: float = 0.95, resamples: int = 1000,
                    seed: int = 0, sources: Optional[List[str]] = None) -> Tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The ``level`` percentile intervals (low, high), each (layers,), of the per-layer sums of ``per_image``
    (images, layers) under the bootstrap within ``groups``.

    Examples:
        >>> low, high = score_intervals(np.array([[1.0], [3.0]]), ["", ""], resamples=200)
        >>> float(low[0]), float(high[0])  # the sum of two draws from {1, 3}
        (2.0, 6.0)
    """
    check_bootstrap(groups, resamples, level, sources, seed)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled_sums(per_image, groups, int(resamples), seed, sources), [tail, 100 - tail],
                              axis=0)  # fmt: skip
    return low, high


def check_bootstrap(groups: List[str], resamples: int, level: float,
                     sources: Optional[List[str]] = None, seed: int = 0) -> Dict[str, int]:  # fmt: skip
    """Images per group, after checking the resamples, the level, the seed, and that every stratum has two units
    (images, or sources)."""
    check_int("seed", seed, 0)
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) or resamples < 2:
        raise ValueError(f"resamples must be an integer >= 2, got {resamples!r}")
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    counts = {g: groups.count(g) for g in sorted(set(groups))}
    thin = [g or "(all images)" for g, n in counts.items() if n < 2]
    if thin:
        raise ValueError(f"the bootstrap needs at least 2 images in every group; {thin} have one")
    if sources is not None:
        lonely = [g or "(all sources)" for g, units in _units(groups, sources).items() if len(units) < 2]
        if lonely:
            raise ValueError(f"the bootstrap draws sources and needs at least 2 in every group; {lonely} have one "
                             "(every image there comes from one source)")  # fmt: skip
    return counts


def bootstrap_selection(
    per_image: np.ndarray,
    groups: List[str],
    names: List[str],
    select: Callable[[np.ndarray], List[str]],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    k: Union[int, float] = 0.1,
    budget: str = "layers",
    sources: Optional[List[str]] = None,
) -> Confidence:
    """Bootstrap the selection ``select`` (layer scores (layers,) in ``names`` order → the chosen names) over
    the rows of ``per_image`` (images, layers), resampled within ``groups`` and by ``sources`` when given (see the
    module's description);
    ``k`` and ``budget`` are recorded. [`LayerScores.confidence()`][macattr.scores.LayerScores.confidence] is
    the usual way in.

    Examples:
        >>> rows = np.array([[3.0, 1.0, 0.0], [2.9, 1.1, 0.0], [3.1, 0.9, 0.1]])
        >>> best = lambda values: [["a", "b", "c"][int(np.argmax(values))]]
        >>> result = bootstrap_selection(rows, ["", "", ""], ["a", "b", "c"], best, resamples=100, k=1)
        >>> result.selected, result.same_top_k, result.in_top_k["b"]
        (['a'], 1.0, 0.0)
    """
    counts = check_bootstrap(groups, resamples, level, sources, seed)
    selected = select(per_image.sum(0))
    sums = resampled_sums(per_image, groups, int(resamples), seed, sources)
    tops = [set(select(row)) for row in sums]
    half = len(tops) // 2
    overlaps = [len(a & b) / max(len(a), 1) for a, b in zip(tops[:half], tops[half : 2 * half])]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(sums, [tail, 100 - tail], axis=0)
    return Confidence(
        names=list(names),
        selected=selected,
        low=dict(zip(names, low.tolist())),
        high=dict(zip(names, high.tolist())),
        in_top_k={n: sum(n in top for top in tops) / len(tops) for n in names},
        same_top_k=sum(top == set(selected) for top in tops) / len(tops),
        expected_overlap=float(np.mean(overlaps)),
        resamples=int(resamples),
        level=float(level),
        k=k,
        budget=budget,
        images=len(per_image),
        groups=counts,
        sources=0 if sources is None else sum(len(units) for units in _units(groups, sources).values()),
    )


__all__ = ["Confidence", "bootstrap_selection", "check_bootstrap", "resampled_sums", "score_intervals"]
