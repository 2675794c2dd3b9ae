"""RAM's layer files: ``filter_name.txt``, ``filter_cond.txt`` and ``filter_index.txt``, as RAM's configs read them."""

from __future__ import annotations

from pathlib import Path
from typing import List

from macattr.files import PathLike, write_text_atomic
from macattr.scores import LayerScores


def write_ram_files(scores: LayerScores, directory: PathLike) -> List[Path]:
    """Write the three files into ``directory``, one entry per line, score descending: the layer names,
    their scores, and their depth indices (position in execution order). Returns the paths.

    Examples:
        >>> import tempfile
        >>> scores = LayerScores({"head": 0.2, "tail": 0.9}, "mac")
        >>> files = write_ram_files(scores, tempfile.mkdtemp())
        >>> [f.name for f in files], files[2].read_text()
        (['filter_name.txt', 'filter_cond.txt', 'filter_index.txt'], '1\\n0\\n')
    """
    ranked = scores.ranked()
    folder = Path(directory)
    contents = {
        "filter_name.txt": [name for name, _ in ranked],
        "filter_cond.txt": [repr(score) for _, score in ranked],
        "filter_index.txt": [str(scores.depth_index(name)) for name, _ in ranked],
    }
    return [write_text_atomic(folder / file, "\n".join(lines) + "\n") for file, lines in contents.items()]


__all__ = [
    "write_ram_files",
]
