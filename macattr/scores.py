"""``LayerScores``: per-layer importance, the decision it supports, and its files."""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from scipy import stats

from macattr._io import PathLike, write_text_atomic


def resolve_k(k: Union[int, float], n_layers: int) -> int:
    """How many layers ``k`` selects out of ``n_layers``.

    A float in (0, 1] is a fraction, rounded up (at least one layer); an int in
    [1, n_layers] is a count.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise TypeError(f"k must be a fraction in (0, 1] or a count in [1, {n_layers}], got {k!r}")
    if isinstance(k, numbers.Integral):
        if not 1 <= k <= n_layers:
            raise ValueError(f"k must be a count in [1, {n_layers}] (the number of candidate layers), got {k}")
        return int(k)
    if not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1] or an integer count in [1, {n_layers}], got {k}")
    return max(1, math.ceil(k * n_layers - 1e-9))


class LayerScores(Mapping[str, float]):
    """An ordered name → score mapping in depth order, with the method and settings it came from.

    Iteration and ``names`` follow depth order (the model's ``named_modules()``
    order); :meth:`ranked` and :meth:`top_k` follow the score, descending, with
    ties broken by depth (the shallower layer first).
    """

    def __init__(
        self, scores: Mapping[str, float], method: str, config: Optional[Dict[str, Any]] = None, images: int = 0
    ) -> None:
        if not scores:
            raise ValueError("scores must hold at least one layer")
        values = {str(name): float(score) for name, score in scores.items()}
        bad = [name for name, score in values.items() if not math.isfinite(score)]
        if bad:
            raise ValueError(f"scores must be finite; not finite for {bad}")
        self._scores = values
        self.method = str(method)
        self.config = dict(config or {})
        self.images = int(images)

    def __getitem__(self, name: str) -> float:
        return self._scores[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)

    def __repr__(self) -> str:
        top = ", ".join(f"{n}={s:.3g}" for n, s in self.ranked()[:3])
        return f"LayerScores(method={self.method!r}, layers={len(self)}, images={self.images}, top: {top})"

    @property
    def names(self) -> List[str]:
        """Layer names in depth order."""
        return list(self._scores)

    def ranked(self) -> List[Tuple[str, float]]:
        """(name, score) pairs, score descending, ties in depth order."""
        return sorted(self._scores.items(), key=lambda item: -item[1])

    def top_k(self, k: Union[int, float] = 0.1) -> List[str]:
        """The ``k`` best layers' names (fraction in (0, 1] rounded up, or a count), best first."""
        return [name for name, _ in self.ranked()[: resolve_k(k, len(self))]]

    def depth_index(self, name: str) -> int:
        """Position of ``name`` in depth order (0 = first candidate layer)."""
        return self.names.index(name)

    # files ------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        """The JSON document: method, config, images, and layers sorted by score descending."""
        order = {name: index for index, name in enumerate(self._scores)}
        return {
            "method": self.method,
            "config": self.config,
            "images": self.images,
            "layers": [{"name": n, "score": s, "index": order[n]} for n, s in self.ranked()],
        }

    def save(self, path: PathLike) -> Path:
        """Write the JSON document atomically."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> LayerScores:
        try:
            layers = sorted(document["layers"], key=lambda entry: entry.get("index", 0))
            scores = {entry["name"]: entry["score"] for entry in layers}
            return cls(scores, document["method"], document.get("config", {}), document.get("images", 0))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a LayerScores document (needs method and layers[name, score]): {error}") from None

    @classmethod
    def load(cls, path: PathLike) -> LayerScores:
        """Read a file written by :meth:`save`."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        return cls.from_dict(document)

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

    def to_ram_files(self, directory: PathLike) -> List[Path]:
        """Write ``filter_name.txt``, ``filter_cond.txt`` and ``filter_index.txt`` as RAM's configs read them.

        One entry per line, score descending: the layer names, their scores, and
        their positions in depth order.
        """
        ranked = self.ranked()
        folder = Path(directory)
        contents = {
            "filter_name.txt": [name for name, _ in ranked],
            "filter_cond.txt": [repr(score) for _, score in ranked],
            "filter_index.txt": [str(self.depth_index(name)) for name, _ in ranked],
        }
        return [write_text_atomic(folder / file, "\n".join(lines) + "\n") for file, lines in contents.items()]

    # agreement ----------------------------------------------------------------

    def _common(self, other: LayerScores) -> Tuple[List[float], List[float]]:
        if not isinstance(other, LayerScores):
            raise TypeError(f"other must be LayerScores, got {type(other).__name__}")
        common = [name for name in self._scores if name in other]
        if len(common) < 2:
            raise ValueError("rank correlation needs at least two layers present in both scores")
        return [self[n] for n in common], [other[n] for n in common]

    def spearman(self, other: LayerScores) -> float:
        """Spearman rank correlation with ``other`` over the layers both hold."""
        a, b = self._common(other)
        return float(stats.spearmanr(a, b).statistic)

    def kendall(self, other: LayerScores) -> float:
        """Kendall's tau-b with ``other`` over the layers both hold."""
        a, b = self._common(other)
        return float(stats.kendalltau(a, b).statistic)
