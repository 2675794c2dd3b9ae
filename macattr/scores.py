"""``LayerScores``: per-layer importance, the decision it supports, its files, and agreement between scorings."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from macattr.confidence import Confidence, bootstrap_selection
from macattr.files import PathLike, write_text_atomic
from macattr.selection import TIE, block_units, check_strategy, fill_budget, units


def check_k(k: object) -> Union[int, float]:
    """``k`` if it is a fraction in (0, 1] or a count >= 1 (before the number of layers is known).

    Examples:
        >>> check_k(0.1), check_k(3)
        (0.1, 3)
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise TypeError(f"k must be a fraction in (0, 1] or a count >= 1, got {k!r}")
    if isinstance(k, numbers.Integral):
        if k < 1:
            raise ValueError(f"k must be a fraction in (0, 1] or a count >= 1, got {k}")
        return int(k)
    if not 0 < k <= 1:  # NaN fails too
        raise ValueError(f"k must be a fraction in (0, 1] or an integer count >= 1, got {k}")
    return float(k)


def _parameter_budget(k: Union[int, float], total: int) -> int:
    """Parameter elements ``k`` allows: a fraction in (0, 1] of ``total``, or a count."""
    k = check_k(k)
    return k if isinstance(k, int) else int(k * total + 1e-9)


def resolve_k(k: Union[int, float], n_layers: int, rounding: str = "up") -> int:
    """How many layers ``k`` selects out of ``n_layers``.

    A float in (0, 1] is a fraction, rounded up (at least one layer; ``rounding="down"`` rounds down, as the
    RAM authors' code does, still at least one); an int in [1, n_layers] is a count.

    Examples:
        >>> resolve_k(0.1, 176), resolve_k(0.3, 10), resolve_k(3, 10), resolve_k(0.1, 263, "down")
        (18, 3, 3, 26)
    """
    k = check_k(k)
    if rounding not in ("up", "down"):
        raise ValueError(f"rounding must be 'up' or 'down', got {rounding!r}")
    if isinstance(k, int):
        if k > n_layers:
            raise ValueError(f"k must be a count in [1, {n_layers}] (the number of candidate layers), got {k}")
        return k
    if rounding == "down":
        return max(1, math.floor(k * n_layers + 1e-9))
    return max(1, math.ceil(k * n_layers - 1e-9))


class LayerScores(Mapping[str, float]):
    """An ordered name → score mapping in depth order, with the method and settings it came from.

    Iteration and ``names`` follow depth order (the order in which the layers
    run in a forward pass, as given by [`rank_layers()`][macattr.ranking.rank_layers]);
    [`ranked()`][macattr.scores.LayerScores.ranked] and [`top_k()`][macattr.scores.LayerScores.top_k] follow
    the score, descending, with ties broken by depth (the shallower layer first). ``skipped`` holds layers that
    could not be scored (name → reason); they are not in the mapping.

    ``parameters`` (name → the parameter elements the layer owns, what fine-tuning it trains, frozen now or not)
    and ``model_parameters`` (the model's parameter elements) let a selection be budgeted and reported in
    parameters; ``rank_layers`` records both.

    ``per_image`` (images, layers) float64, in depth order, holds each analysed image's own scores (they sum to
    the scores) and ``groups`` each image's group label (``""`` without groups); ``rank_layers`` keeps both, and
    [`confidence()`][macattr.scores.LayerScores.confidence] resamples them to say how sure the top k is.

    ``sources`` names each image's source (the photograph it was made from; ``""`` unknown), which the bootstrap
    resamples instead of the images.

    ``errors`` (images, layers) float64 holds each per-image score's estimated absolute error against the
    integral along the path, and ``input_gaps`` (images,) each image's completeness gap at the input (the
    certificate of the step sum; ``rank_layers`` keeps both for "mac" and "conductance"):
    [`error()`][macattr.scores.LayerScores.error] and [`relative_errors()`][macattr.scores.LayerScores.relative_errors]
    give each layer's, [`certificate()`][macattr.scores.LayerScores.certificate] the verdict.

    Examples:
        >>> scores = LayerScores({"head": 0.2, "body.0": 0.9, "tail": 0.5}, "mac", images=4,
        ...                      parameters={"head": 10, "body.0": 80, "tail": 10}, model_parameters=100)
        >>> scores.top_k(2), scores.names
        (['body.0', 'tail'], ['head', 'body.0', 'tail'])
        >>> scores.top_k(0.25, budget="parameters"), scores.share(["tail", "head"])  # body.0 alone is 80 %
        (['tail', 'head'], 0.2)
    """

    def __init__(
        self,
        scores: Mapping[str, float],
        method: str,
        config: Optional[Dict[str, Any]] = None,
        images: int = 0,
        skipped: Optional[Mapping[str, str]] = None,
        parameters: Optional[Mapping[str, int]] = None,
        model_parameters: Optional[int] = None,
        per_image: Optional[Any] = None,
        groups: Optional[Sequence[str]] = None,
        errors: Optional[Any] = None,
        input_gaps: Optional[Any] = None,
        sources: Optional[Sequence[str]] = None,
    ) -> None:
        if not scores:
            raise ValueError("scores must hold at least one layer")
        words = [name for name, score in scores.items() if isinstance(score, (str, bytes, bool))]
        if words:
            raise ValueError(f"scores must be numbers; not numbers for {words}")
        values = {str(name): float(score) for name, score in scores.items()}
        bad = [name for name, score in values.items() if not math.isfinite(score)]
        if bad:
            raise ValueError(f"scores must be finite; not finite for {bad}")
        self._scores = values
        self.method = str(method)
        self.config = dict(config or {})
        if isinstance(images, bool) or not isinstance(images, numbers.Integral) or images < 0:
            raise ValueError(f"images must be a count >= 0, got {images!r}")
        self.images = int(images)
        self.skipped = {str(name): str(reason) for name, reason in (skipped or {}).items()}
        self.parameters = None if parameters is None else {str(n): int(c) for n, c in parameters.items()}
        self.model_parameters = None if model_parameters is None else int(model_parameters)
        if self.parameters is not None:
            negative = [name for name, count in self.parameters.items() if count < 0]
            if negative or (self.model_parameters or 0) < 0:
                raise ValueError(f"parameter counts must be >= 0; negative for {negative or ['model_parameters']}")
            missing = [name for name in values if name not in self.parameters]
            if missing or self.model_parameters is None or self.model_parameters < max(self.parameters.values()):
                raise ValueError("parameters must give every layer's count, and model_parameters at least each one")
        self.per_image, self.groups = _per_image_rows(per_image, groups, list(values.values()))
        self.errors, self.input_gaps = _certificate_rows(errors, input_gaps, self.per_image)
        self.sources = _source_labels(sources, self.per_image)

    def __getitem__(self, name: str) -> float:
        return self._scores[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)

    def __repr__(self) -> str:
        top = ", ".join(f"{n}={s:.3g}" for n, s in self.ranked()[:3])
        return f"LayerScores(method={self.method!r}, layers={len(self)}, images={self.images}, top: {top})"

    def _repr_html_(self) -> str:
        """A notebook's view: a summary and the ten best layers, each with a bar of its score."""
        import html

        best = max((abs(score) for _, score in self.ranked()[:1]), default=0.0) or 1.0
        rows = "".join(
            f"<tr><td>{rank}</td><td><code>{html.escape(name)}</code></td><td>{score:.4g}</td>"
            f"<td>{self.depth_index(name)}</td><td><div style='background:#0072B2;height:0.8em;"
            f"width:{100 * abs(score) / best:.0f}px'></div></td></tr>"
            for rank, (name, score) in enumerate(self.ranked()[:10], start=1)
        )
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return (f"<p><b>LayerScores</b>: {html.escape(self.method)}, {self.images} images, {len(self)} layers"
                f"{skipped}</p><table><tr><th>rank</th><th>layer</th><th>score</th><th>depth</th><th></th></tr>"
                f"{rows}</table>")  # fmt: skip

    @property
    def names(self) -> List[str]:
        """Layer names in depth order."""
        return list(self._scores)

    def ranked(self) -> List[Tuple[str, float]]:
        """(name, score) pairs, score descending, ties in depth order."""
        return sorted(self._scores.items(), key=lambda item: -item[1])

    def top_k(self, k: Union[int, float] = 0.1, budget: str = "layers", model: Optional[Any] = None,
              strategy: str = "greedy", ties: Optional[str] = None) -> List[str]:  # fmt: skip
        """The best layers within the budget ``k``, best first.

        A selection counts [`units()`][macattr.scores.LayerScores.units]: layers whose scores tie (agree to a
        relative 1e-6, as a convolution and its eval-mode BatchNorm do under MAC) are taken together and counted
        once (``ties="together"``, the default of ``mac``, ``conductance`` and ``random_blocks``), or each on its
        own (``ties="apart"``, the default of every other method and of scores made in the RAM authors' mode).

        ``budget="layers"``: ``k`` units, a fraction in (0, 1] of them rounded up or a count.
        ``budget="parameters"``: units until ``k`` of the model's parameters (a fraction in (0, 1], or a number
        of parameter elements) are trained. The budget is a cap, filled by ``strategy``
        ([`macattr.selection`][macattr.selection]): ``"greedy"`` walks down the ranking and passes over a unit
        that would take the total over it, ``"per_parameter"`` walks by score per parameter element,
        ``"knapsack"`` takes the set of largest summed score that fits, ``"blocks"`` takes whole blocks (a
        transformer layer, a Swin block) by their summed score. With a budget in layers, ``"per_parameter"``
        takes the ``k`` best by score per parameter and the others the ``k`` best scores (``"blocks"``: ``k``
        blocks). The counts come from ``model`` when given, else from the ones recorded with the scores.

        Examples:
            >>> scores = LayerScores({"a": 10.0, "b": 6.0, "c": 6.0}, "mac", parameters={"a": 60, "b": 50, "c": 50},
            ...                      model_parameters=200)
            >>> scores.top_k(100, "parameters"), scores.top_k(100, "parameters", strategy="knapsack")
            (['a'], ['b', 'c'])
            >>> scores.top_k(2), scores.top_k(2, ties="apart")  # b and c tie: one unit
            (['a', 'b', 'c'], ['a', 'b'])
        """
        check_strategy(strategy)
        if budget not in ("layers", "parameters"):
            raise ValueError(f"budget must be 'layers' or 'parameters', got {budget!r}")
        groups = self.units(ties, blocks=strategy == "blocks")
        value = {group[0]: sum(self._scores[n] for n in group) for group in groups}  # in the units' order
        members = {group[0]: group for group in groups}
        if budget == "layers":  # a ranking made in the RAM authors' mode rounds a fraction down, as their code
            if isinstance(check_k(k), int) and len(groups) < min(k, len(self)):  # ties make fewer units than k
                apart = " or ties='apart' to count every layer" if k <= len(self) else ""
                raise ValueError(f"k={k} units asked, but these {len(self)} layers make {len(groups)} units "
                                 f"(tied layers count once); pass a k in [1, {len(groups)}]{apart}")  # fmt: skip
            count = resolve_k(k, len(groups), self.config.get("k_rounding", "up"))
            if strategy == "per_parameter":
                sizes, _ = self._counts(model)
                chosen = sorted(value, key=lambda u: -value[u] / max(sum(sizes[n] for n in members[u]), 1))[:count]
            else:
                chosen = list(value)[:count]
        else:
            sizes, total = self._counts(model)
            allowed = _parameter_budget(k, total)
            chosen = fill_budget(value, {u: sum(sizes[n] for n in members[u]) for u in value}, allowed, strategy)
            if not chosen:
                smallest = min(sum(sizes[n] for n in group) for group in groups)
                raise ValueError(f"k={k} allows {allowed:,} parameters, fewer than the smallest unit's {smallest:,}; "
                                 "pass a larger k")  # fmt: skip
        picked = {name for unit in chosen for name in members[unit]}
        return [name for name, _ in self.ranked() if name in picked]

    def units(self, ties: Optional[str] = None, blocks: bool = False) -> List[List[str]]:
        """The units a selection counts, best first (see [`macattr.selection`][macattr.selection]): with
        ``ties="together"`` the layers whose nonzero scores agree to a relative 1e-6 form one unit; with
        ``ties="apart"`` each layer is a unit; with ``blocks=True`` each block is, ordered by its summed score.

        The default is ``"together"`` for the methods whose ties mark one unit (``mac`` and ``conductance``,
        which score two layers whose outputs are per-channel affine images of each other alike, as a convolution
        and its eval-mode BatchNorm; ``random_blocks``, whose blocks share one draw). It is ``"apart"`` for every
        other method (equal weights copied into several layers tie under ``kappa`` and are not one unit) and for
        scores made in the RAM authors' mode, whose code counts layers.

        Examples:
            >>> LayerScores({"conv": 3.0, "bn": 3.0, "head": 1.0}, "mac").units()
            [['conv', 'bn'], ['head']]
        """
        if blocks:
            return block_units(self._scores)
        if ties is None:
            counted = _ties_are_one_unit(self.method) and self.config.get("k_rounding") != "down"
            ties = "together" if counted else "apart"
        if ties not in ("together", "apart"):
            raise ValueError(f"ties must be 'together' or 'apart', got {ties!r}")
        return units(self._scores, TIE if ties == "together" else 0.0)

    def confidence(self, k: Union[int, float] = 0.1, budget: str = "layers", model: Optional[Any] = None,
                   resamples: int = 1000, level: float = 0.95, seed: int = 0,
                   strategy: str = "greedy", ties: Optional[str] = None) -> Confidence:  # fmt: skip
        """How sure the top ``k`` is: a bootstrap over the analysed images, within their groups.

        Each resample draws every group's images again with replacement (with ``sources``, their source
        images: all images made from one photograph come together, see
        [`macattr.confidence`][macattr.confidence]), sums the per-image scores and selects with
        [`top_k()`][macattr.scores.LayerScores.top_k] (same ``k``, ``budget``, ``model``, ``strategy`` and ``ties``).
        Returns a [`Confidence`][macattr.confidence.Confidence]: per layer a ``level`` score interval and its
        probability of being in the top k, the probability that the top k stays the same, and the expected overlap with
        the top k of a rerun on new images. Needs the per-image scores (``rank_layers`` keeps them) and two
        images in every group.

        Examples:
            >>> scores = LayerScores({"a": 6.0, "b": 2.0}, "mac", images=2, per_image=[[3.0, 1.0], [3.0, 1.0]])
            >>> scores.confidence(k=1, resamples=10).same_top_k
            1.0
        """
        if self.per_image is None:
            raise ValueError("these scores hold no per-image scores: rank_layers keeps them (and save() writes "
                             "them); scores built without them cannot be bootstrapped")  # fmt: skip
        self.top_k(k, budget, model, strategy, ties)  # the arguments checked once, before the resamples

        def select(values: np.ndarray) -> List[str]:
            again = LayerScores(dict(zip(self.names, values.tolist())), self.method, self.config,
                                parameters=self.parameters, model_parameters=self.model_parameters)  # fmt: skip
            return again.top_k(k, budget, model, strategy, ties)

        return bootstrap_selection(self.per_image, self.groups, self.names, select, resamples, level, seed, k, budget,
                                   self.sources)  # fmt: skip

    def lower_bounds(self, level: float = 0.95, resamples: int = 1000, seed: int = 0) -> LayerScores:
        """These scores replaced by the lower ends of their ``level`` bootstrap intervals (resampled as
        ``confidence()`` does, by source where known): a selection made on them (``.top_k(...)``) prefers layers
        that score high on every resample of the images over layers that score high on a few.

        Examples:
            >>> rows = [[3.0, 2.0], [3.0, 1.5], [3.0, 6.0]]  # "b" sums higher, "a" is as high on every image
            >>> scores = LayerScores({"a": 9.0, "b": 9.5}, "mac", images=3, per_image=rows)
            >>> scores.top_k(1), scores.lower_bounds(resamples=200).top_k(1)
            (['b'], ['a'])
        """
        from macattr.confidence import score_intervals

        if not self.bootstrappable:
            raise ValueError("lower_bounds() resamples the per-image scores: it needs them, with two images (or "
                             "sources) in every group")  # fmt: skip
        low, _ = score_intervals(self.per_image, self.groups, level, resamples, seed, self.sources)
        return LayerScores(dict(zip(self.names, low.tolist())), self.method,
                           {**self.config, "selected_on": f"{level:g} lower bounds"}, self.images, self.skipped,
                           self.parameters, self.model_parameters)  # fmt: skip

    @property
    def bootstrappable(self) -> bool:
        """Whether [`confidence()`][macattr.scores.LayerScores.confidence] can resample these scores: per-image
        scores with two images (or, given ``sources``, two sources) in every group."""
        from macattr.confidence import check_bootstrap

        if self.per_image is None:
            return False
        try:
            check_bootstrap(self.groups, 2, 0.95, self.sources)
        except ValueError:
            return False
        return True

    def error(self, name: str) -> float:
        """The estimated absolute error of ``name``'s score against the integral (same units as the score): the sum
        of its per-image errors. ``ValueError`` for scores without errors (a method that integrates no steps, or
        scores built by hand)."""
        if self.errors is None:
            raise ValueError(f"these scores carry no error estimate (method {self.method!r}; rank_layers keeps one "
                             "for 'mac' and 'conductance')")  # fmt: skip
        return float(self.errors[:, self.depth_index(name)].sum())

    def relative_errors(self) -> Dict[str, float]:
        """Each layer's estimated error over its score, name → value in [0, ∞) (``inf`` for a zero score with a
        nonzero error, 0 for a zero score without one)."""
        out = {}
        for name, score in self._scores.items():
            error = self.error(name)
            out[name] = error / abs(score) if score else (math.inf if error else 0.0)
        return out

    def certificate(self, tolerance: float = 0.1, k: Union[int, float, None] = None,
                    budget: str = "layers") -> Certificate:  # fmt: skip
        """Whether the scores can be trusted to ``tolerance`` (a relative error, in (0, 1)).

        The layers that count are the top ``k`` (by ``budget``, as in ``top_k``) when ``k`` is given, else every
        layer whose score is at least 1e-6 of the largest (the relative error of a score near zero says nothing
        about the ranking). They pass when each one's estimated relative error is at most ``tolerance`` and every
        image's completeness gap at the input is too.

        Examples:
            >>> scores = LayerScores({"a": 2.0, "b": 1.0}, "mac", images=1, per_image=[[2.0, 1.0]],
            ...                      errors=[[0.02, 0.3]], input_gaps=[0.001])
            >>> verdict = scores.certificate(0.05)
            >>> verdict.trusted, verdict.worst_layer, round(verdict.worst_error, 3)
            (False, 'b', 0.3)
            >>> scores.certificate(0.05, k=1).trusted  # the top 1 alone is within 5 %
            True
        """
        check_tolerance(tolerance)
        relative = self.relative_errors()
        if k is not None:
            counted = self.top_k(k, budget)
        else:
            largest = max(abs(v) for v in self._scores.values())
            counted = [n for n, v in self._scores.items() if abs(v) >= 1e-6 * largest] or self.names
        worst = max(counted, key=lambda n: relative[n])
        gap = float(self.input_gaps.max())
        over = [n for n in counted if relative[n] > tolerance]
        return Certificate(tolerance, worst, relative[worst], over, gap, float(np.median(self.input_gaps)),
                           len(counted))  # fmt: skip

    def share(self, names: Sequence[str], model: Optional[Any] = None) -> float:
        """The share of the model's parameters that fine-tuning ``names`` trains, in [0, 1] (a
        parameter shared by two layers, such as tied embeddings, counts for each)."""
        sizes, total = self._counts(model)
        unknown = [name for name in names if name not in sizes]
        if unknown:
            raise ValueError(f"names holds {unknown}, which these scores do not hold")
        return min(1.0, sum(sizes[name] for name in names) / max(total, 1))

    def _counts(self, model: Optional[Any]) -> Tuple[Dict[str, int], int]:
        """Each layer's parameter elements and the model's, from ``model`` or as recorded."""
        if model is not None:
            from macattr.finetune import parameter_counts

            return parameter_counts(model, self.names)
        if self.parameters is None:
            raise ValueError("a budget in parameters needs the parameter counts: pass model=, or scores made by "
                             "rank_layers (which records them)")  # fmt: skip
        return self.parameters, self.model_parameters

    def depth_index(self, name: str) -> int:
        """Position of ``name`` in depth order (0 = first candidate layer)."""
        return self.names.index(name)

    # files ------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        """The JSON document: method, config, images, layers sorted by score descending, and the per-image scores
        (rows of images, columns in depth order) with their groups when they are kept."""
        order = {name: index for index, name in enumerate(self._scores)}
        return {
            "method": self.method,
            "config": self.config,
            "images": self.images,
            "layers": [{"name": n, "score": s, "index": order[n],
                        **({} if self.parameters is None else {"parameters": self.parameters[n]}),
                        **({} if self.errors is None else {"error": self.error(n)})}
                       for n, s in self.ranked()],
            "skipped": self.skipped,
            **({} if self.model_parameters is None else {"model_parameters": self.model_parameters}),
            **({} if self.per_image is None else
               {"per_image": {"groups": self.groups, "scores": self.per_image.tolist(),
                              **({} if self.sources is None else {"sources": self.sources})}}),
            **({} if self.errors is None else
               {"certificate": {"errors": self.errors.tolist(), "input_gaps": self.input_gaps.tolist()}}),
        }  # fmt: skip

    def save(self, path: PathLike, confidence: Optional[Confidence] = None) -> Path:
        """Write the JSON document atomically, with ``confidence`` (from
        [`confidence()`][macattr.scores.LayerScores.confidence]) as its ``confidence`` entry when given."""
        if confidence is not None and not isinstance(confidence, Confidence):
            raise TypeError(f"confidence must be a Confidence, got {type(confidence).__name__}")
        if confidence is not None and confidence.names != self.names:
            raise ValueError("confidence was computed for other layers than these scores'")
        document = self.to_dict() | ({} if confidence is None else {"confidence": confidence.to_dict()})
        return write_text_atomic(path, json.dumps(document, indent=2) + "\n")

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> LayerScores:
        try:
            layers = sorted(document["layers"], key=lambda entry: entry.get("index", 0))
            names = [entry["name"] for entry in layers]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise ValueError(f"each layer must appear once; more than once: {twice}")
            scores = {entry["name"]: entry["score"] for entry in layers}
            counted = all("parameters" in entry for entry in layers) and "model_parameters" in document
            counts = {entry["name"]: entry["parameters"] for entry in layers} if counted else None
            rows = document.get("per_image")
            certified = document.get("certificate") or {}
            return cls(
                scores, document["method"], document.get("config", {}), document.get("images", 0),
                document.get("skipped", {}), counts, document.get("model_parameters") if counted else None,
                None if rows is None else rows["scores"], None if rows is None else rows["groups"],
                certified.get("errors"), certified.get("input_gaps"), None if rows is None else rows.get("sources"),
            )  # fmt: skip
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a LayerScores document (needs method and layers[name, score]): {error}") from None

    @classmethod
    def load(cls, path: PathLike) -> LayerScores:
        """Read a file written by [`save()`][macattr.scores.LayerScores.save]; a missing, binary or malformed
        file is a ``ValueError`` naming it."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not a scores file (pass the scores.json in it)")
        if not path.is_file():
            raise ValueError(f"scores file {path} does not exist")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except PermissionError:
            raise ValueError(f"cannot read the scores file {path}: permission denied") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a scores file (JSON written by LayerScores.save): {error}") from None
        try:
            return cls.from_dict(document)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def to_csv(self, path: Optional[PathLike] = None) -> str:
        """CSV with rank, name, score, depth index (score descending); written atomically if ``path`` is given."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["rank", "name", "score", "index"])
        for rank, (name, score) in enumerate(self.ranked(), start=1):
            writer.writerow([rank, name, repr(score), self.depth_index(name)])
        if path is not None:
            write_text_atomic(path, buffer.getvalue())
        return buffer.getvalue()

    # agreement ----------------------------------------------------------------

    def common_layers(self, other: LayerScores) -> List[str]:
        """The layers both scorings hold, in this one's depth order."""
        if not isinstance(other, LayerScores):
            raise TypeError(f"other must be LayerScores, got {type(other).__name__}")
        return [name for name in self._scores if name in other]

    def _common(self, other: LayerScores) -> Tuple[List[float], List[float]]:
        common = self.common_layers(other)
        if len(common) < 2:
            raise ValueError("rank correlation needs at least two layers present in both scores")
        return [self[n] for n in common], [other[n] for n in common]

    def spearman(self, other: LayerScores) -> float:
        """Spearman rank correlation with ``other`` over the layers both hold.

        Examples:
            >>> a = LayerScores({"x": 1.0, "y": 2.0, "z": 3.0}, "mac")
            >>> round(a.spearman(LayerScores({"x": 10.0, "y": 30.0, "z": 20.0}, "ig")), 3)
            0.5
        """
        from scipy import stats

        a, b = self._common(other)
        return float(stats.spearmanr(a, b).statistic)

    def kendall(self, other: LayerScores) -> float:
        """Kendall's tau-b with ``other`` over the layers both hold."""
        from scipy import stats

        a, b = self._common(other)
        return float(stats.kendalltau(a, b).statistic)

    def overlap(self, other: LayerScores, k: Union[int, float] = 0.1) -> float:
        """Jaccard overlap of the two top-k sets, each taken over the layers both hold, in [0, 1].

        Examples:
            >>> a = LayerScores({"x": 3.0, "y": 2.0, "z": 1.0}, "mac")
            >>> a.overlap(LayerScores({"x": 1.0, "y": 3.0, "z": 2.0}, "ig"), k=2)  # {x, y} vs {y, z}
            0.3333333333333333
        """
        common = self.common_layers(other)
        if not common:
            raise ValueError("top-k overlap needs at least one layer present in both scores")
        mine = LayerScores({n: self[n] for n in common}, self.method).top_k(k)
        theirs = LayerScores({n: other[n] for n in common}, other.method).top_k(k)
        return len(set(mine) & set(theirs)) / len(set(mine) | set(theirs))


def _ties_are_one_unit(method: str) -> bool:
    """Whether ``method``'s tied scores mark layers that are one unit (its record's ``tied_units``)."""
    from macattr.ranking.methods import get_method

    try:
        return get_method(method).tied_units
    except ValueError:  # a method not registered here
        return False


def _per_image_rows(
    rows: Optional[Any], groups: Optional[Sequence[str]], totals: List[float]
) -> Tuple[Optional[np.ndarray], Optional[List[str]]]:
    """``rows`` as an (images, layers) float64 array whose columns sum to ``totals``, and one group per row."""
    if rows is None:
        if groups is not None:
            raise ValueError("groups label the rows of per_image; pass per_image with them")
        return None, None
    values = np.asarray(rows, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(totals) or values.shape[0] == 0:
        raise ValueError(f"per_image must have shape (images, {len(totals)}), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("per_image must be finite")
    if not np.allclose(values.sum(0), totals, rtol=1e-6, atol=1e-12 * max(1.0, np.abs(values).max())):
        raise ValueError("per_image must sum to the scores, layer by layer (the rows belong to other scores)")
    labels = [""] * len(values) if groups is None else [str(g) for g in groups]
    if len(labels) != len(values):
        raise ValueError(f"groups must label each of the {len(values)} rows of per_image, got {len(labels)}")
    return values, labels


def _source_labels(sources: Optional[Sequence[str]], per_image: Optional[np.ndarray]) -> Optional[List[str]]:
    """``sources`` as one string per row of ``per_image`` (``""``: unknown), or None."""
    if sources is None:
        return None
    if per_image is None or isinstance(sources, str) or len(sources) != len(per_image):
        raise ValueError("sources must name the source of each row of per_image (given with it)")
    return [str(s) for s in sources]


def _certificate_rows(
    errors: Optional[Any], gaps: Optional[Any], per_image: Optional[np.ndarray]
) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``errors`` (images, layers) and ``gaps`` (images,) as float64 arrays that fit ``per_image``, finite, >= 0."""
    if errors is None and gaps is None:
        return None, None
    if errors is None or gaps is None or per_image is None:
        raise ValueError("errors and input_gaps come together, with the per_image scores they belong to")
    errors, gaps = np.asarray(errors, dtype=np.float64), np.asarray(gaps, dtype=np.float64)
    if errors.shape != per_image.shape or gaps.shape != (per_image.shape[0],):
        raise ValueError(f"errors must have the shape of per_image {per_image.shape} and input_gaps "
                         f"({per_image.shape[0]},), got {errors.shape} and {gaps.shape}")  # fmt: skip
    if not (np.isfinite(errors).all() and np.isfinite(gaps).all()) or errors.min() < 0 or gaps.min() < 0:
        raise ValueError("errors and input_gaps must be finite and >= 0")
    return errors, gaps


def check_tolerance(tolerance: object) -> float:
    """``tolerance`` if it is a relative error in (0, 1).

    Examples:
        >>> check_tolerance(0.05)
        0.05
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be a relative error in (0, 1), got {tolerance!r}")
    return float(tolerance)


@dataclass(frozen=True)
class Certificate:
    """The verdict on how far a ranking's scores can be from the integral along their path.

    Attributes:
        tolerance: the relative error asked for.
        worst_layer, worst_error: the counted layer with the largest estimated relative error, and that error.
        over: the counted layers whose estimated relative error exceeds ``tolerance``, in depth order.
        worst_gap, median_gap: the largest and the median completeness gap at the input over the images.
        counted: how many layers were judged.
    """

    tolerance: float
    worst_layer: str
    worst_error: float
    over: List[str]
    worst_gap: float
    median_gap: float
    counted: int

    @property
    def trusted(self) -> bool:
        """Whether every counted layer and every image are within ``tolerance``."""
        return not self.over and self.worst_gap <= self.tolerance

    def summary(self) -> str:
        """One line: the verdict, the worst layer's estimated error and the input's completeness gap."""
        verdict = "within" if self.trusted else "NOT within"
        return (f"estimated error {verdict} {100 * self.tolerance:g} %: largest {100 * self.worst_error:.3g} % "
                f"({self.worst_layer}), {len(self.over)} of {self.counted} layers over; completeness gap at the "
                f"input {100 * self.worst_gap:.3g} % at most (median {100 * self.median_gap:.3g} %)")  # fmt: skip


@dataclass
class Agreement:
    """How several scorings of the same layers agree, pair by pair.

    Attributes:
        labels: one label per scoring.
        spearman, kendall: (n, n) rank correlations over the layers each pair shares.
        overlap: (n, n) Jaccard overlap of the two top-k sets (each taken over the shared layers).
        compared: (n, n) number of layers each pair shares.
        k: the top-k of ``overlap``.
    """

    labels: List[str]
    spearman: np.ndarray
    kendall: np.ndarray
    overlap: np.ndarray
    compared: np.ndarray
    k: Union[int, float]

    def table(self) -> str:
        """One line per pair: labels, layers compared, Spearman, Kendall, top-k overlap."""
        width = max(len(label) for label in self.labels)
        lines = [f"{'a':{width}s}  {'b':{width}s}  layers  Spearman  Kendall  top-k Jaccard (k={self.k})"]
        for i, j in itertools.combinations(range(len(self.labels)), 2):
            lines.append(
                f"{self.labels[i]:{width}s}  {self.labels[j]:{width}s}  {int(self.compared[i, j]):6d}  "
                f"{self.spearman[i, j]:8.4f}  {self.kendall[i, j]:7.4f}  {self.overlap[i, j]:.3f}"
            )
        return "\n".join(lines)


def agreement(
    sets: Sequence[LayerScores], k: Union[int, float] = 0.1, labels: Optional[Sequence[str]] = None
) -> Agreement:
    """Spearman, Kendall and top-k overlap between every pair of ``sets`` (at least two).

    ``labels`` name the scorings (default: their methods, numbered when they repeat).

    Examples:
        >>> a = LayerScores({"x": 1.0, "y": 2.0, "z": 3.0}, "mac")
        >>> b = LayerScores({"x": 1.0, "y": 3.0, "z": 2.0}, "ig")
        >>> result = agreement([a, b], k=1)
        >>> float(result.spearman[0, 1]), float(result.overlap[0, 1]), int(result.compared[0, 1])
        (0.5, 0.0, 3)
    """
    sets = list(sets)
    if len(sets) < 2 or not all(isinstance(s, LayerScores) for s in sets):
        raise TypeError("agreement needs a sequence of at least two LayerScores")
    if labels is None:
        methods = [s.method for s in sets]
        labels = [m if methods.count(m) == 1 else f"{m} #{methods[: i + 1].count(m)}" for i, m in enumerate(methods)]
    labels = list(labels)
    if len(labels) != len(sets):
        raise ValueError(f"labels must name each of the {len(sets)} scorings, got {len(labels)}")
    n = len(sets)
    tables = {name: np.eye(n) for name in ("spearman", "kendall", "overlap")}
    compared = np.zeros((n, n), dtype=int)
    for i, j in itertools.product(range(n), repeat=2):
        compared[i, j] = len(sets[i].common_layers(sets[j]))
        if i < j:
            for name, value in (("spearman", sets[i].spearman(sets[j])), ("kendall", sets[i].kendall(sets[j])),
                                ("overlap", sets[i].overlap(sets[j], k))):  # fmt: skip
                tables[name][i, j] = tables[name][j, i] = value
    return Agreement(labels, tables["spearman"], tables["kendall"], tables["overlap"], compared, k)


__all__ = [
    "Agreement",
    "Certificate",
    "LayerScores",
    "agreement",
    "check_k",
    "check_tolerance",
    "resolve_k",
]
