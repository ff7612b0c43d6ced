"""Atomic file writes: a temp file in the target's folder, fsync, then ``os.replace``.

Every module that writes a file the user or another program reads (models, weights,
exports, reports, plots) goes through here, so that an interrupted write never leaves a
half-written file and new files get the normal permissions (``0o666`` minus the umask;
``tempfile.mkstemp`` would give ``0o600``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


class AtomicWriteError(OSError):
    """A file could not be written (folder missing, not a folder, no permission, disk full).

    The message names the path and the reason.
    """


def describe_os_error(exc: BaseException) -> str:
    """A short human reason for an OS error ('the folder does not exist', ...)."""
    if isinstance(exc, FileNotFoundError):
        return "the folder does not exist"
    if isinstance(exc, NotADirectoryError):
        return "a part of the path is a file, not a folder"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "the path is a folder"
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on success it replaces ``path`` atomically.

    ``mode`` is ``"w"`` (UTF-8 text, newlines untranslated) or ``"wb"``. The data is
    fsync'ed before the replace. On any error the temp file is removed and ``path`` is left
    as it was; OS errors come out as :class:`AtomicWriteError` naming the path and the reason.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise AtomicWriteError(f"cannot write {path}: the path is a folder")
    binary = mode == "wb"
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # 0o666 minus the umask, like any new file (mkstemp would give 0o600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as exc:
        raise AtomicWriteError(f"cannot write {path}: {describe_os_error(exc)}") from exc
    try:
        kwargs: dict[str, Any] = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, "wb" if binary else "w", **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, AtomicWriteError):
            raise AtomicWriteError(f"cannot write {path}: {describe_os_error(exc)}") from exc
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temp file that then atomically replaces ``path``."""
    with atomic_open(path, "wb") as fh:
        write(fh)
    return Path(path)
