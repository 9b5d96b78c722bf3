"""Atomic file replacement: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import re
import stat
import tempfile

from ..errors import PlanFileError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temporaries(path: str) -> list[str]:
    """Delete the temporary files that saves of ``path`` by processes no longer running left
    behind (``.<name>.<pid>.<random>.tmp``); returns what was removed."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    pattern = re.compile(re.escape(f".{os.path.basename(path)}.") + r"(\d+)\.[^.]+\.tmp$")
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def atomic_write(path: str | os.PathLike[str], data: bytes) -> str:
    """Write ``data`` to ``path`` so that a failure at any point leaves the previous file intact.

    The bytes go to a temporary file in the same folder (same file system, so the rename
    is atomic), named after this process (so a later save removes those of processes that
    died mid-save), which is flushed and fsynced, renamed over ``path``, and then the folder
    is fsynced so that the rename itself survives a power cut. A symbolic link is followed:
    the file it points to is replaced, the link stays. Every failure is a PlanFileError
    naming the path and the cause; the temporary file is removed.
    """
    given = os.fspath(path)
    try:
        path = os.path.realpath(given) if os.path.islink(given) else given
    except (OSError, ValueError) as exc:
        raise PlanFileError(f"cannot save to {given!r}: {exc}") from None
    if os.path.isdir(path):
        raise PlanFileError(f"cannot save to {given!r}: it is a folder")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PlanFileError(f"cannot save to {given!r}: the folder {folder!r} does not exist")
    remove_stale_temporaries(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o644
    except OSError as exc:
        raise PlanFileError(f"cannot save to {given!r}: {exc.strerror or exc}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise PlanFileError(f"cannot save to {given!r}: {exc.strerror or exc} (is the folder writable?)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise PlanFileError(f"cannot save to {given!r}: {exc.strerror or exc} (the previous file, if any, "
                                f"is unchanged)") from None
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # the file is in place; only its durability across a power cut is uncertain
    return given
