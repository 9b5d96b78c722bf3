"""Debug flags read from the environment, each also settable with a context manager.

``GRAPHNET_DEBUG`` (or ``DEBUG``):
  0  quiet (default)
  1  print which compile passes ran and how each changed the node count
  2  also print the graph after every pass
  3  also print the final plan
  4  also time every executed step (printed per run)
``GRAPHNET_VERIFY=1`` runs the IR checker between every pair of passes.
``GRAPHNET_DISABLE_PASSES=cse,constant_fold`` skips optional passes by name.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Iterator


def _env_int(*names: str, default: int = 0) -> int:
    for name in names:
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                return default
    return default


@dataclass
class Flags:
    debug: int = field(default_factory=lambda: _env_int("GRAPHNET_DEBUG", "DEBUG"))
    verify: bool = field(default_factory=lambda: bool(_env_int("GRAPHNET_VERIFY")))
    disabled_passes: frozenset[str] = field(
        default_factory=lambda: frozenset(
            p.strip() for p in os.environ.get("GRAPHNET_DISABLE_PASSES", "").split(",") if p.strip()
        )
    )


flags = Flags()


@contextlib.contextmanager
def options(
    *, debug: int | None = None, verify: bool | None = None, disabled_passes: frozenset[str] | set[str] | None = None
) -> Iterator[Flags]:
    """Temporarily override debug flags: ``with gn.config.options(debug=2): gn.compile(...)``."""
    saved = (flags.debug, flags.verify, flags.disabled_passes)
    if debug is not None:
        flags.debug = debug
    if verify is not None:
        flags.verify = verify
    if disabled_passes is not None:
        flags.disabled_passes = frozenset(disabled_passes)
    try:
        yield flags
    finally:
        flags.debug, flags.verify, flags.disabled_passes = saved
