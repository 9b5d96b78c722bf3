"""Where generated kernels (and the choices timed for them) are kept between processes, kept
the way trusted caches keep theirs (pip's, CPython's bytecode, ccache).

What graphnet later imports from here runs in the user's process, so:

* the folder is created 0700 and every file 0600, whatever the umask;
* a folder owned by another user, or writable by its group or others, is not used: graphnet
  warns once and works in a private temporary folder for the rest of the process;
* files are written to a temporary name nobody can predict, created exclusively and never
  through a symbolic link (``O_CREAT | O_EXCL | O_NOFOLLOW``), then renamed into place;
* a file is read back, and its bytes compared with what graphnet means to run, and the
  verified bytes are what runs (``read_verified``): nothing is imported from a path that
  could change after the check, and no bytecode file is read;
* numba's own cache for generated kernels lives in the same checked folder (``__pycache__``,
  created 0700 here before numba makes it).
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
import threading
import warnings

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_lock = threading.Lock()
_fallback: list[str] = []  # the private folder used instead of an untrusted one
_holders: list[tempfile.TemporaryDirectory] = []  # removed (with their files) at interpreter exit
_checked: set[str] = set()


class UntrustedCacheWarning(UserWarning):
    """The kernel cache folder is not private to this user; a temporary one is used instead."""


def _root() -> str:
    return os.environ.get("GRAPHNET_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "graphnet")


def _private(path: str) -> bool:
    """Whether ``path`` is a real folder (no link) owned by this user that nobody else may write."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return stat.S_ISDIR(info.st_mode) and owner_ok and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _make_private(path: str) -> None:
    """Create ``path`` (and its missing parents) as 0700 folders, whatever the umask."""
    missing = []
    head = path
    while head and not os.path.lexists(head):
        missing.append(head)
        head = os.path.dirname(head)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask


def private_folder() -> str:
    """This process's private temporary folder (0700; removed at exit), for when the cache
    cannot be used."""
    if not _fallback:
        holder = tempfile.TemporaryDirectory(prefix="graphnet-kernels-")  # 0700 by construction
        _holders.append(holder)
        _fallback.append(holder.name)
    return _fallback[0]


def ensure_private(path: str) -> str:
    """``path`` created private if missing and checked once per process; a temporary private
    folder instead (with one warning) where it is not private or cannot be made."""
    with _lock:
        if path in _checked:
            return path
        try:
            _make_private(path)
        except OSError:
            return private_folder()
        if not _private(path):
            if not _fallback:
                warnings.warn(f"graphnet's kernel cache {path!r} is not private to this user (another owner, "
                              f"writable by group or others, or a link): using a temporary folder for this "
                              f"process instead", UntrustedCacheWarning, stacklevel=3)
            return private_folder()
        _checked.add(path)
        return path


def cache_dir() -> str:
    """Where generated sources, numba's compiled kernels for them and timed choices are kept:
    ``$GRAPHNET_CACHE_DIR/kernels`` (default ``~/.cache/graphnet/kernels``, or under
    ``$XDG_CACHE_HOME``), checked private (``ensure_private``)."""
    folder = ensure_private(os.path.join(_root(), "kernels"))
    ensure_private(os.path.join(folder, "__pycache__"))  # numba's cache of the generated files
    return folder


def write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) through an exclusive, unpredictable temporary file that
    is never opened through a link, then rename it into place."""
    temporary = os.path.join(os.path.dirname(path), f".{secrets.token_hex(12)}.tmp")
    fd = os.open(temporary, _FLAGS, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def read_verified(path: str, expected: bytes) -> bool:
    """Whether ``path`` is a regular file (not a link) holding exactly ``expected``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return False
        return f.read(len(expected) + 1) == expected
