"""numba's on-disk cache, made non-fatal: a cache only saves compile time.

numba raises when it cannot write a compiled kernel to its cache (a full disk: ``OSError``) or
finds no folder to cache in at all (a read-only home and package: ``RuntimeError: cannot cache
function``). Either made ``gn.compile`` or a first run fail. ``guard()`` (called when a NumPy
backend executor is made, before any kernel is compiled) makes both a warning, once per
process: the kernel is compiled and runs, only not kept for the next process.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any


class KernelCacheWarning(UserWarning):
    """numba could not keep a compiled kernel for the next process (it still runs)."""


_warned: set[str] = set()


def _warn_once(what: str, exc: BaseException) -> None:
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"numba could not {what} ({type(exc).__name__}: {exc}); kernels still compile and run, but "
                      f"the next process compiles them again", KernelCacheWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def guard() -> bool:
    """Make numba's cache failures warnings (once per process); False without numba."""
    try:
        from numba.core import caching, dispatcher
    except ImportError:
        return False
    save = caching.FunctionCache.save_overload
    enable = dispatcher.Dispatcher.enable_caching

    def save_overload(self: Any, sig: Any, data: Any) -> None:
        try:
            save(self, sig, data)
        except OSError as exc:  # a full disk, a folder that went away
            _warn_once("write its cache", exc)

    def enable_caching(self: Any) -> None:
        try:
            enable(self)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            if "cannot cache" not in str(exc):
                raise
            _warn_once("find a folder to cache in", exc)

    caching.FunctionCache.save_overload = save_overload
    dispatcher.Dispatcher.enable_caching = enable_caching
    return True
