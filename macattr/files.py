"""Files that long runs can trust: atomic, durable writes, and exclusive use while a run works on a file.

- [`write_atomic()`][macattr.files.write_atomic], [`write_text_atomic()`][macattr.files.write_text_atomic]: a
  crash leaves either the old file or the new one, never half of one.
- [`exclusive()`][macattr.files.exclusive]: one process at a time works on a file (a checkpoint, a scores file);
  a second one is refused with the holder's process id. The lock is an operating-system lock on a small
  ``.name.lock`` file beside it, so a process that dies releases it: a stale lock file never blocks, and the
  holder removes it when it is done.
- [`output_file()`][macattr.files.output_file]: the checks an output path gets before a long run starts: a
  regular file or none (never a folder, a device or a pipe), a symbolic link followed to its target, the
  expected suffix, a folder that can be written.

Writes that fail (a full disk, a folder that is not writable) raise [`WriteFailed`][macattr.files.WriteFailed],
one line naming the file.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class WriteFailed(OSError):
    """A file could not be written (a full disk, a folder without write permission); the message names it."""


def output_file(path: PathLike, what: str = "output file", suffixes: Sequence[str] = ()) -> Path:
    """``path`` as a file to write: a symbolic link is followed to its target (the link stays); a folder, a
    device, a pipe or a socket is refused, and so is a suffix outside ``suffixes`` (when given) and a folder
    that exists but cannot be written. ``ValueError`` naming ``what`` and the path.

    Examples:
        >>> import tempfile
        >>> output_file(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: output file ... is a folder; name a file in it
        >>> output_file("scores.csv", "--out", [".json"])
        Traceback (most recent call last):
        ...
        ValueError: --out scores.csv must end in .json, the format it is written in
    """
    given = Path(path)
    if suffixes and given.suffix.lower() not in suffixes:
        raise ValueError(f"{what} {given} must end in {' or '.join(suffixes)}, the format it is written in")
    target = Path(os.path.realpath(given))
    if target.is_dir():
        raise ValueError(f"{what} {given} is a folder; name a file in it")
    if target.exists() and not target.is_file():
        raise ValueError(f"{what} {given} is not a regular file (a device, pipe or socket); name a file")
    folder = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
    if folder is not None and (not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK)):
        raise ValueError(f"{what} {given}: the folder {folder} cannot be written")
    return target


def write_atomic(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A symbolic link is followed (its target is replaced, the link stays); a folder, device, pipe or socket at
    ``path`` is refused (``ValueError``). The file gets the permissions an ordinary ``open(path, "w")`` would
    give it (``0o666`` less the umask), and the folder entry is synced after the rename. A write that fails is
    a ``WriteFailed`` naming ``path``, and leaves the old file as it was.
    """
    target = output_file(path, "file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise WriteFailed(f"cannot write {path}: {error.strerror or error}") from None
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
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError) and not isinstance(error, WriteFailed):
            raise WriteFailed(f"cannot write {path}: {error.strerror or error}") from None
        raise
    _sync_folder(target.parent)
    return Path(path)


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
    where = lock_path(os.path.realpath(path))
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        descriptor = _locked(where)
    except PermissionError:
        raise ValueError(f"{what} {path}: the folder {where.parent} cannot be written") from None
    if descriptor is None:
        try:
            with open(where, "rb") as file:
                holder = file.read(200).decode(errors="replace").strip() or "another process"
        except OSError:  # released and removed meanwhile
            holder = "another process"
        raise FileInUse(f"{what} {path} is in use by {holder}; wait for it to finish, or use another path")
    try:
        stamp = f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(descriptor, 0)
        os.lseek(descriptor, 0, os.SEEK_SET)
        os.write(descriptor, stamp.encode())
        yield Path(path)
    finally:
        try:
            os.remove(where)  # removed while still held: a process that opened it before sees another file
        except OSError:
            pass
        os.close(descriptor)  # closing releases the lock


def _locked(where: Path) -> Optional[int]:
    """A descriptor of the lock file ``where`` holding its lock, or None when another process holds it. A lock
    taken on a file that its holder removed meanwhile is dropped and taken again on the new one."""
    while True:
        descriptor = os.open(where, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        if not _try_lock(descriptor):
            os.close(descriptor)
            return None
        try:
            same = os.stat(where).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return descriptor
        os.close(descriptor)


__all__ = [
    "FileInUse",
    "PathLike",
    "WriteFailed",
    "exclusive",
    "lock_path",
    "output_file",
    "write_atomic",
    "write_text_atomic",
]
