"""Files that long runs can trust: atomic, durable writes, and exclusive use while a run works on a file.

- [`write_atomic()`][macattr.files.write_atomic], [`write_text_atomic()`][macattr.files.write_text_atomic]: a
  crash leaves either the old file or the new one, never half of one.
- [`exclusive()`][macattr.files.exclusive]: one process at a time works on a file (a checkpoint, a scores file);
  a second one is refused with the holder's process id. The lock is an operating-system lock on a small
  ``.name.lock`` file beside it, so a process that dies releases it: a stale lock file never blocks.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    The file gets the permissions an ordinary ``open(path, "w")`` would give it
    (``0o666`` less the umask), and the folder entry is synced after the rename.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        descriptor = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _sync_folder(target.parent)
    return target


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some systems cannot open folders; the rename itself is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(text)

    return write_atomic(path, write)


class FileInUse(RuntimeError):
    """Another process holds the file's lock; the message names it."""


def lock_path(path: PathLike) -> Path:
    """The lock file of ``path``: ``.name.lock`` beside it.

    Examples:
        >>> lock_path("runs/ck.json").as_posix()
        'runs/.ck.json.lock'
    """
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _try_lock(descriptor: int) -> bool:
    """Take the operating system's exclusive lock on the open lock file, without waiting."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def exclusive(path: PathLike, what: str = "file") -> Iterator[Path]:
    """Hold the exclusive use of ``path`` while the body runs; released on exit, also after an error or when the
    process dies. ``what`` names the file in the refusal ("checkpoint", "output file", ...).

    Raises:
        FileInUse: another process holds it; the message gives that process's id, host and start time.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "scores.json"
        >>> with exclusive(target, "output file"):
        ...     with exclusive(target, "output file"):  # doctest: +ELLIPSIS
        ...         pass
        Traceback (most recent call last):
        ...
        macattr.files.FileInUse: output file ... is in use by process ...; wait for it to finish, or use another path
    """
    where = lock_path(path)
    where.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(where, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        if not _try_lock(descriptor):
            os.lseek(descriptor, 0, os.SEEK_SET)
            holder = os.read(descriptor, 200).decode(errors="replace").strip() or "another process"
            raise FileInUse(f"{what} {path} is in use by {holder}; wait for it to finish, or use another path")
        stamp = f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(descriptor, 0)
        os.lseek(descriptor, 0, os.SEEK_SET)
        os.write(descriptor, stamp.encode())
        yield Path(path)
    finally:
        os.close(descriptor)  # closing releases the lock


__all__ = ["FileInUse", "PathLike", "exclusive", "lock_path", "write_atomic", "write_text_atomic"]
