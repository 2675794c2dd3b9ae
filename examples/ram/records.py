"""The pipeline's one rule for reusing and resuming work: every file it makes carries the settings it is made with.

Before a stage makes a file (a network, scores, metrics), it writes the settings record of that file beside it
(``name.settings.json``, [`macattr.records`][macattr.records]); the work in progress that leads to the file
(the training loop's ``checkpoint.pt``, a ranking's ``.ckpt.json``) sits in the same folder and is guarded by the
same record. A rerun with the same settings reuses the finished file or resumes the work; a rerun with other
settings is refused, naming what changed, instead of mixing results. A record carries the record of what it is
made from (the pre-trained network of a fine-tuning, say), so work built on a replaced file is refused too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from macattr.records import differences, read_record, record_path, write_record


def finished(path: Path, made_with: Any) -> bool:
    """Whether ``path`` is finished and made with ``made_with``. Records ``made_with`` when the work begins;
    refuses (``ValueError``) a file, finished or begun, whose record differs."""
    before = read_record(path)
    if before is None:
        if path.exists():
            raise ValueError(f"{path} has no settings record ({record_path(path).name}), so it cannot be told apart "
                             "from a file made otherwise; delete it or use another --out")  # fmt: skip
        write_record(path, made_with)
        return False
    changed = differences(before, made_with)
    if changed:
        again = f"delete {path.parent} (or {path.name} and {record_path(path).name} in it) to make it anew"
        raise ValueError(f"{path} was made with other settings ({'; '.join(changed)}); use another --out, or {again}")
    return path.exists()


def made_with(path: Path) -> Any:
    """The settings record of a finished ``path`` (what later work records as its origin)."""
    record = read_record(path)
    if record is None:
        raise FileNotFoundError(f"{path} has no settings record; make it with this pipeline first")
    return record


__all__ = ["finished", "made_with"]
