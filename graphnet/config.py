"""Debug flags read from the environment, each also settable with a context manager.

``GRAPHNET_DEBUG`` (or ``DEBUG``):
  0  quiet (default)
  1  print which compile passes ran and how each changed the node count
  2  also print the graph after every pass
  3  also print the final plan
  4  also time every executed step (printed per run)
``GRAPHNET_VERIFY=1`` runs the IR checker between every pair of passes.
``GRAPHNET_DISABLE_PASSES=cse,constant_fold`` skips optional passes by name.
``GRAPHNET_FUSE=0`` turns elementwise fusion off (on by default: the pipeline is the same
whatever is installed, and each backend decides how a fused step runs).
``GRAPHNET_CODEGEN=numba`` (default) compiles fused groups to numba kernels; ``numpy`` runs
them as NumPy ufunc calls (also what happens where numba is not installed).
``GRAPHNET_CACHE_DIR``: generated kernels, numba's code for them and timed convolution choices
go to ``$GRAPHNET_CACHE_DIR/kernels`` (default ``~/.cache/graphnet/kernels``, or under
``$XDG_CACHE_HOME``), kept private (graphnet/codegen/cache.py).
``GRAPHNET_NUM_THREADS=4`` sets the threads of BLAS and of numba's loops (default: the cores this
process may use; ``gn.set_num_threads`` changes it later).
``GRAPHNET_AUTOTUNE=1`` times each convolution's candidate algorithms once per shape and keeps
the fastest (remembered in the kernel cache). Off by default: which algorithm wins depends on
timing under load, and algorithms round differently, so results would depend on timing; the
default is a fixed cost rule, a function of the shapes alone (bit-identical from run to run,
process to process and machine to machine with the same libraries), as PyTorch keeps
``cudnn.benchmark`` off.
``GRAPHNET_MEMORY_LIMIT=8G`` refuses runs whose temporaries would need more (bytes; K, M, G
suffixes); by default the machine's available memory when the plan is first run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Iterator

from .errors import ConfigError


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


    memory_limit: int | None = field(default_factory=lambda: _env_bytes("GRAPHNET_MEMORY_LIMIT"))
    codegen: str = field(default_factory=lambda: os.environ.get("GRAPHNET_CODEGEN", "numba").strip().lower()
                         or "numba")
    fuse: bool = field(default_factory=lambda: _fuse_default())
    # time each convolution algorithm once per shape and keep the fastest (opt-in: which one
    # wins depends on timing under load, so results would depend on it); off, the cost rule
    autotune: bool = field(default_factory=lambda: os.environ.get("GRAPHNET_AUTOTUNE", "0").strip().lower()
                           in ("1", "true", "yes", "on"))


def _fuse_default() -> bool:
    """GRAPHNET_FUSE=0/1 if set, else on: the pass pipeline does not depend on what is
    installed (a backend without generated kernels runs a fused group's reference kernel)."""
    value = os.environ.get("GRAPHNET_FUSE", "").strip()
    return not value or value not in ("0", "false", "no", "off")


def _env_bytes(name: str) -> int | None:
    value = os.environ.get(name, "").strip().upper()
    if not value:
        return None
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(value[-1], 1)
    try:
        return int(float(value.rstrip("KMGTB") or "0") * scale)
    except ValueError:
        return None


def available_memory() -> int | None:
    """Bytes the machine can still give (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


flags = Flags()


@contextlib.contextmanager
def options(
    *, debug: int | None = None, verify: bool | None = None, disabled_passes: frozenset[str] | set[str] | None = None,
    memory_limit: int | None = None, fuse: bool | None = None, codegen: str | None = None,
    autotune: bool | None = None,
) -> Iterator[Flags]:
    """Temporarily override debug flags: ``with gn.config.options(debug=2): gn.compile(...)``."""
    saved = (flags.debug, flags.verify, flags.disabled_passes, flags.memory_limit, flags.fuse, flags.codegen,
             flags.autotune)
    if autotune is not None:
        flags.autotune = bool(autotune)
    if codegen is not None:
        if codegen not in ("numba", "numpy"):
            raise ConfigError(f"codegen must be 'numba' or 'numpy', got {codegen!r}")
        flags.codegen = codegen
    if fuse is not None:
        flags.fuse = bool(fuse)
    if memory_limit is not None:
        flags.memory_limit = int(memory_limit)
    if debug is not None:
        flags.debug = debug
    if verify is not None:
        flags.verify = verify
    if disabled_passes is not None:
        flags.disabled_passes = frozenset(disabled_passes)
    try:
        yield flags
    finally:
        (flags.debug, flags.verify, flags.disabled_passes, flags.memory_limit, flags.fuse, flags.codegen,
         flags.autotune) = saved
