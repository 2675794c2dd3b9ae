"""RAM's layer files: ``filter_name.txt``, ``filter_cond.txt`` and ``filter_index.txt``, as RAM's configs read them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

from macattr.files import PathLike, write_text_atomic
from macattr.scores import LayerScores


def write_ram_files(scores: LayerScores, directory: PathLike) -> List[Path]:
    """Write the three files into ``directory``, one entry per line, score descending: the layer names,
    their scores, and their depth indices (position in execution order). Returns the paths.

    All three are written and flushed to disk under temporary names first, and then renamed over the old ones
    one after the other: a run stopped while writing leaves the old three; only a stop between the three
    renames (microseconds) could mix two runs.

    Examples:
        >>> import tempfile
        >>> scores = LayerScores({"head": 0.2, "tail": 0.9}, "mac")
        >>> files = write_ram_files(scores, tempfile.mkdtemp())
        >>> [f.name for f in files], files[2].read_text()
        (['filter_name.txt', 'filter_cond.txt', 'filter_index.txt'], '1\\n0\\n')
    """
    broken = [name for name in scores.names if "\n" in name or "\r" in name]
    if broken:
        raise ValueError(f"RAM's files hold one layer name per line; these names hold a line break: {broken}")
    ranked = scores.ranked()
    folder = Path(directory)
    contents = {
        "filter_name.txt": [name for name, _ in ranked],
        "filter_cond.txt": [repr(score) for _, score in ranked],
        "filter_index.txt": [str(scores.depth_index(name)) for name, _ in ranked],
    }
    staged = {file: write_text_atomic(folder / f".{file}.staged", "\n".join(lines) + "\n")
              for file, lines in contents.items()}  # fmt: skip
    for file, path in staged.items():
        os.replace(path, folder / file)
    return [folder / file for file in contents]


__all__ = [
    "write_ram_files",
]
