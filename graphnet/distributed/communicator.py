"""The communicator protocol the plan's collective steps call, and the group of one.

Every collective takes NumPy arrays and works in place. A non-blocking allreduce is
``start_allreduce(array)`` followed, later in the plan, by ``wait(array)``: in between
the array belongs to the communicator. Every wait is bounded by ``timeout_seconds()``
(``GRAPHNET_DIST_TIMEOUT``, default 120): a process that died or stopped calling the plan
makes the others raise DistributedTimeoutError instead of hanging.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError

DEFAULT_TIMEOUT = 120.0


def timeout_seconds() -> float:
    """How long a collective waits for the other processes (``GRAPHNET_DIST_TIMEOUT``)."""
    text = os.environ.get("GRAPHNET_DIST_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"GRAPHNET_DIST_TIMEOUT={text!r} is not a number of seconds") from None
    if not value > 0:
        raise ConfigError(f"GRAPHNET_DIST_TIMEOUT={text!r} must be positive")
    return value


class Communicator(Protocol):
    """What data-parallel plans need of a process group."""

    rank: int
    size: int

    def allreduce(self, array: np.ndarray, what: str = "") -> None:
        """Replace ``array`` by its elementwise sum over the group (blocking)."""

    def start_allreduce(self, array: np.ndarray, what: str = "") -> None:
        """Begin summing ``array`` over the group in place; ``wait(array)`` completes it."""

    def wait(self, array: np.ndarray) -> None:
        """Complete the ``start_allreduce`` of ``array``."""

    def broadcast(self, array: np.ndarray, root: int = 0, what: str = "") -> None:
        """Overwrite ``array`` everywhere with ``root``'s."""

    def allgather_object(self, value: Any) -> list[Any]:
        """Every process's ``value`` (small and JSON-able: fingerprints, counts), in rank order."""

    def barrier(self) -> None:
        """Return once every process has called it."""


class SingleProcess:
    """The group of one: each collective leaves its arrays as they are."""

    rank = 0
    size = 1

    def allreduce(self, array: np.ndarray, what: str = "") -> None:
        return None

    def start_allreduce(self, array: np.ndarray, what: str = "") -> None:
        return None

    def wait(self, array: np.ndarray) -> None:
        return None

    def broadcast(self, array: np.ndarray, root: int = 0, what: str = "") -> None:
        return None

    def allgather_object(self, value: Any) -> list[Any]:
        return [value]

    def barrier(self) -> None:
        return None

    def __repr__(self) -> str:
        return "SingleProcess()"
