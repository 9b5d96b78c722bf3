"""Backends by name: ``gn.compile(..., executor="numpy")`` looks its class up here."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import ExecutorError

_EXECUTORS: dict[str, Callable[[], type[Any]]] = {}


def register_executor(name: str, loader: Callable[[], type[Any]]) -> None:
    """Register a backend by name; ``loader`` imports it lazily (CuPy only when asked for).
    A backend from outside the package registers itself the same way (docs/backends.md)."""
    _EXECUTORS[name] = loader


def available_executors() -> list[str]:
    """The registered backends' names."""
    return sorted(_EXECUTORS)


def get_executor(name: str) -> type[Any]:
    """The executor class registered as ``name`` (its module imported now, if it was not)."""
    if name not in _EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; available: {sorted(_EXECUTORS)}")
    return _EXECUTORS[name]()
