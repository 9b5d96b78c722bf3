"""Atomic file replacement: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import stat
import tempfile

from ..errors import PlanFileError


def atomic_write(path: str | os.PathLike[str], data: bytes) -> str:
    """Write ``data`` to ``path`` so that a crash at any point leaves the previous file intact.

    The bytes go to a temporary file in the same folder (same file system, so the rename
    is atomic), which is flushed and fsynced, renamed over ``path``, and then the folder
    is fsynced so that the rename itself survives a power cut.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise PlanFileError(f"cannot save to {path!r}: it is a folder")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PlanFileError(f"cannot save to {path!r}: the folder {folder!r} does not exist")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
