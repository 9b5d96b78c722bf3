"""How many threads the CPU kernels use: BLAS (matrix products, the convolutions' products) and
numba's parallel loops. ``GRAPHNET_NUM_THREADS`` sets both (default: the cores this process may
run on). The executor runs one step at a time, so BLAS and numba never run at once: each may
use every core without the two oversubscribing them.

Splitting the single-threaded kernels' work among Python threads (batch norm by channels, a
convolution's images, the flat optimizer update) was measured and left out: alone each ran
up to 1.7x faster, but inside a training step OpenBLAS's worker, which spins for a while
after every multi-threaded product, holds the second core, and the steps got 2-5% slower."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ExecutorError

_applied: list[int] = []
_limiter: list[Any] = []  # threadpoolctl's controller, kept so the limit lasts


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def requested() -> int:
    """GRAPHNET_NUM_THREADS as a positive int, else the available cores; a bad value is an error."""
    text = os.environ.get("GRAPHNET_NUM_THREADS", "").strip()
    if not text:
        return available_cores()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ExecutorError(f"GRAPHNET_NUM_THREADS must be a positive integer, got {text!r}")
    return count


def set_num_threads(count: int) -> None:
    """Use ``count`` threads in BLAS and in numba's parallel loops from now on."""
    if not isinstance(count, int) or count < 1:
        raise ExecutorError(f"the thread count must be a positive integer, got {count!r}")
    from threadpoolctl import ThreadpoolController  # imported when first applied: it scans loaded libraries

    controller = ThreadpoolController()
    _limiter[:] = [controller.limit(limits=count, user_api="blas")]
    try:
        import numba

        numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    _applied[:] = [count]


def apply_once() -> None:
    """Apply GRAPHNET_NUM_THREADS the first time an executor is made (not at import)."""
    if not _applied:
        set_num_threads(requested())


def current() -> dict[str, int]:
    """Threads per library now: {"blas": n, "numba": m} (for the compile report and tests)."""
    from threadpoolctl import threadpool_info

    counts = {"blas": max((info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"),
                          default=0)}
    try:
        import numba

        counts["numba"] = numba.get_num_threads()
    except ImportError:
        pass
    return counts
