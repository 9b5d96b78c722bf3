"""How many threads the CPU kernels use: BLAS (matrix products, the convolutions' products),
numba's loops, and the kernels that split their work among threads (``split``: training
batch norm shares its channels). ``GRAPHNET_NUM_THREADS`` sets them all (default: the cores
this process may run on).

The executor runs one step at a time, and a kernel that splits its work runs BLAS
single-threaded meanwhile (``split`` arranges it), so the threads never outnumber the count
asked for. The split runs on plain Python threads (numba loops release the GIL) that wait on
a lock between steps, so they do not spin the way an OpenMP pool does. Handing work to
another thread and back costs some 80 microseconds on this project's machines, so kernels
split only large work. (Splitting the convolutions' images among threads was tried: OpenBLAS's
own worker spins for a while after each multi-threaded product and takes the second core, so
it gained on some layers and lost on others.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from ..errors import ExecutorError

_applied: list[int] = []
_limiter: list[Any] = []  # threadpoolctl's controller, kept so the limit lasts
_blas: list[Any] = []  # threadpoolctl's controllers of the BLAS libraries, for quick changes
_pool: list[ThreadPoolExecutor] = []
_pool_lock = threading.Lock()
Result = TypeVar("Result")


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
    _blas[:] = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
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


def count() -> int:
    """The thread count in force (GRAPHNET_NUM_THREADS or ``set_num_threads``)."""
    apply_once()
    return _applied[0]


def _workers(size: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if not _pool or _pool[0]._max_workers < size:
            if _pool:
                _pool[0].shutdown(wait=False)
            _pool[:] = [ThreadPoolExecutor(max_workers=size, thread_name_prefix="graphnet")]
        return _pool[0]


def split(task: Callable[[int], Result], parts: int) -> list[Result]:
    """``[task(0), ..., task(parts - 1)]``, run at once on ``parts`` threads (this one runs
    ``task(0)``), with BLAS single-threaded meanwhile so that the parts are the only threads
    at work. The tasks must release the GIL to gain anything (numba loops, BLAS products)."""
    if parts <= 1:
        return [task(k) for k in range(parts)]
    pool = _workers(parts - 1)
    for lib in _blas:
        lib.set_num_threads(1)
    futures: list[Any] = []
    try:
        futures = [pool.submit(task, k) for k in range(1, parts)]
        first = task(0)
    finally:
        wait(futures)  # no part may still be writing when this returns or raises
        for lib in _blas:
            lib.set_num_threads(_applied[0])
    return [first] + [future.result() for future in futures]


def spans(total: int, parts: int) -> Sequence[tuple[int, int]]:
    """``total`` items cut into ``parts`` contiguous, near-equal (start, stop) ranges."""
    cuts = [total * k // parts for k in range(parts + 1)]
    return [(cuts[k], cuts[k + 1]) for k in range(parts)]
