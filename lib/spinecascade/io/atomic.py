"""Atomic file writes: a reader sees either the old file or the complete new one, never a partial file.

A crash, a full disk or an exception while writing leaves the previous version of a user's file in place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path


def _reserve_temporary(target: Path) -> Path:
    """Create an empty, hidden sibling of ``target`` that keeps its suffixes (libraries pick formats by them).

    Created with O_EXCL rather than mkstemp so that the final file gets the usual umask permissions.
    """
    while True:
        candidate = target.with_name(f".tmp-{secrets.token_hex(4)}-{target.name}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable where the platform allows it (not Windows, not some network mounts)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same directory; on success it replaces ``path``, on error it is deleted.

    For libraries that insist on writing to a file name themselves (scipy.io.savemat, safetensors, Pillow).
    An existing file's permission bits are kept.
    """
    target = Path(path)
    temporary = _reserve_temporary(target)
    try:
        if target.exists():
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file is never seen half-written."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, byte for byte (no newline translation)."""
    atomic_write_bytes(path, text.encode(encoding))
