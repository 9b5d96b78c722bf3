"""How many threads the CPU kernels use, and how the large ones share their work.

``GRAPHNET_NUM_THREADS`` (default: the cores this process may run on) or
``gn.set_num_threads`` sets the count. Plans with convolutions split their large kernels'
work themselves (matrix products by columns or rows, convolutions by images, batch norm by
channels, generated elementwise loops by ranges: ``run_parts``), on a team of plain Python
threads that poll and then wait on a lock between tasks, while BLAS runs single-threaded for
the length of each run (``splitting``). Other plans, whose work is mostly matrix products,
leave the threads to BLAS: on the reference MLP, splitting everything was level with
OpenBLAS's own threading (per-round ratio 1.00 at batch 256, 1.01 at 128: the split products
lose what the split update gains), and splitting only the optimizer update, after setting
BLAS to one thread, made steps 10-17% slower (OpenBLAS's worker goes on spinning a while).

Why not leave the products to BLAS's own threads: OpenBLAS's worker spins for a while after
every multi-threaded product, holding the second core, so any of graphnet's own kernels
split among threads in the same step lost that core (splitting batch norm alone, with BLAS
threaded, made ResNet steps 2-5% slower). With BLAS single-threaded and each product split
here, the products run about as fast as OpenBLAS's own threading (0.59 against 0.68 ms for
256x784 @ 784x512 alone), and every other kernel may use the cores too: the ResNet's step
took 0.73 of its time with everything on one thread but BLAS, the seed CNN's 0.89. Handing
a task to a helper and back costs some 10 microseconds, so only work well above that is
split. Between tasks a helper polls for the next one for SPIN_SECONDS before it blocks (an
idle core took 170 microseconds to wake here: spin.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ... import interrupts
from ...errors import ExecutorError

_applied: list[int] = []
_limiter: list[Any] = []  # threadpoolctl's limit, kept so that it lasts
_blas: list[Any] = []  # threadpoolctl's controllers of the loaded BLAS libraries, for quick changes
_state_lock = threading.Lock()
_single_depth = [0]  # plan runs in progress that asked for single-threaded BLAS


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
    """Use ``count`` threads from now on: in graphnet's split kernels, in BLAS outside plan
    runs, and in numba's parallel loops."""
    if not isinstance(count, int) or count < 1:
        raise ExecutorError(f"the thread count must be a positive integer, got {count!r}")
    from threadpoolctl import ThreadpoolController  # imported when first applied: it scans loaded libraries

    controller = ThreadpoolController()
    with _state_lock:
        _limiter[:] = [controller.limit(limits=count, user_api="blas")]
        _blas[:] = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
        if _single_depth[0]:  # a run in progress keeps BLAS single-threaded until it ends
            for lib in _blas:
                lib.set_num_threads(1)
        _applied[:] = [count]
    try:
        import numba

        numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def apply_once() -> None:
    """Apply GRAPHNET_NUM_THREADS the first time an executor is made (not at import)."""
    if not _applied:
        set_num_threads(requested())


def count() -> int:
    """The thread count in force: how many parts a split kernel makes at most."""
    apply_once()
    return _applied[0]


def current() -> dict[str, int]:
    """Threads per library now: {"blas": n, "numba": m, "graphnet": k} (for the compile report
    and tests); ``blas`` is what BLAS uses outside plan runs."""
    from threadpoolctl import threadpool_info

    counts = {"blas": max((info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"),
                          default=0)}
    if _single_depth[0] and counts["blas"] and _applied:
        counts["blas"] = _applied[0]
    try:
        import numba

        counts["numba"] = numba.get_num_threads()
    except ImportError:
        pass
    if _applied:
        counts["graphnet"] = _applied[0]
    return counts


_local = threading.local()  # .splitting: whether this thread is inside ``splitting()``


@contextlib.contextmanager
def splitting() -> Iterator[None]:
    """While the block runs, this thread's kernels split their work (``parts_for``) and BLAS
    runs single-threaded (the products are split too); nested and concurrent blocks restore
    BLAS's count when the last one ends."""
    apply_once()
    if _applied[0] == 1 or getattr(_local, "splitting", False):
        yield
        return
    _local.splitting = True
    with _state_lock:
        _single_depth[0] += 1
        if _single_depth[0] == 1:
            for lib in _blas:
                lib.set_num_threads(1)
    try:
        yield
    finally:
        _local.splitting = False
        with _state_lock:
            _single_depth[0] -= 1
            if _single_depth[0] == 0:
                for lib in _blas:
                    lib.set_num_threads(_applied[0])


#: how long a helper polls for its next task, and a caller for a helper's result, before
#: blocking on a lock (spin.py says why: an idle core is slow to wake here)
SPIN_SECONDS = 3e-4


@functools.lru_cache(maxsize=1)
def _counter_type() -> Any:
    """spin.Counter, or None without numba or where its poll cannot be compiled (then waits
    block at once: slower to wake, never wrong)."""
    try:
        from .spin import Counter

        Counter().wait_while(1, 0.0)  # compiles (or loads) and calibrates the poll here
    except Exception:  # noqa: BLE001 - any failure only costs the poll, so it is not fatal
        return None
    return Counter


class _Helper:
    """One helper thread: runs a task each time it is started, polling for the next one a
    short while and then blocking on a lock. The locks hand the tasks over; the counters
    only let either side see, without blocking, that the other has moved on."""

    def __init__(self, name: str) -> None:
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._task: Callable[[], Any] | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        counter = _counter_type()
        self._started = counter() if counter else None  # tasks handed over so far
        self._finished = counter() if counter else None  # tasks run so far
        self._handed = 0
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        finished = 0
        while True:
            if self._started is not None:
                self._started.wait_while(finished, SPIN_SECONDS)
            self._go.acquire()
            try:
                self._result, self._error = self._task(), None  # type: ignore[misc]
            except BaseException as exc:  # handed to the caller of finish()
                self._result, self._error = None, exc
            self._task = None
            finished += 1
            if self._finished is not None:
                self._finished.set(finished)
            self._done.release()

    def start(self, task: Callable[[], Any]) -> None:
        self._task = task
        self._handed += 1
        if self._started is not None:
            self._started.set(self._handed)
        self._go.release()

    def finish(self) -> tuple[Any, BaseException | None]:
        if self._finished is not None:
            self._finished.wait_while(self._handed - 1, SPIN_SECONDS)
        self._done.acquire()
        result, error = self._result, self._error
        self._result = self._error = None
        return result, error


_helpers: list[_Helper] = []
_team_lock = threading.Lock()  # held while the helpers work for one caller (and while they grow)


def run_parts(tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """``[task() for task in tasks]``, the first on this thread and the others at once on
    helper threads; returns when every task has finished, raising the first error then (so
    no task is still writing). Where the helpers are busy (another thread's run, or a task
    that splits again) the tasks run one after another here. The tasks should release the
    GIL (BLAS products, numba loops) to gain anything."""
    if len(tasks) <= 1:
        return [task() for task in tasks]
    with interrupts.deferred():  # a Ctrl-C waits for the handover: the helpers never fall out of step
        return _run_on_team(tasks)


def _run_on_team(tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    if not _team_lock.acquire(blocking=False):
        return [task() for task in tasks]
    try:
        while len(_helpers) < len(tasks) - 1:
            _helpers.append(_Helper(f"graphnet-{len(_helpers) + 1}"))
        started = []
        try:
            for helper, task in zip(_helpers, tasks[1:]):
                helper.start(task)
                started.append(helper)
            first: Any = tasks[0]()
            error: BaseException | None = None
        except BaseException as exc:
            first, error = None, exc
        results = [first]
        for helper in started:
            result, failed = helper.finish()
            results.append(result)
            error = error or failed
        if error is not None:
            raise error
        return results
    finally:
        _team_lock.release()


def split_first_dim(fn: Callable[..., Any], arrays: Sequence[Any], rows: int, work: int, minimum: int) -> None:
    """``fn(*arrays)``, the ``rows`` of the arrays' first dim shared among the threads (see
    ``parts_for``): every array spanning that dim is sliced alike, any other (broadcast along
    it) passed whole. For loops whose rows are independent."""
    parts = parts_for(work, minimum, rows)
    if parts == 1:
        fn(*arrays)
        return
    run_parts([lambda s=s, e=e: fn(*[a[s:e] if a.shape[0] == rows else a for a in arrays])
               for s, e in spans(rows, parts)])


def spans(total: int, parts: int) -> list[tuple[int, int]]:
    """``total`` items cut into ``parts`` contiguous, near-equal (start, stop) ranges."""
    cuts = [total * k // parts for k in range(parts + 1)]
    return [(cuts[k], cuts[k + 1]) for k in range(parts)]


def parts_for(work: int, minimum: int, items: int, inside: bool | None = None) -> int:
    """How many parts to cut ``items`` into: the thread count inside ``splitting()`` (or where
    ``inside`` says so: the memory formula asks ahead of a run), no more parts than items,
    and one part outside it or where ``work`` (in the caller's unit) is under ``minimum``."""
    if inside is None:
        inside = getattr(_local, "splitting", False)
    if work < minimum or not inside:
        return 1
    return max(1, min(count(), items))



def _after_fork_in_child() -> None:
    """A child made by ``fork`` has only the forking thread: forget the helpers (their threads
    were not copied, so waiting for them would hang), and make new locks in place of ones that
    another thread may have held at the fork. BLAS's own pool is threadpoolctl's to restore."""
    global _team_lock, _state_lock, _local
    _helpers.clear()
    _team_lock = threading.Lock()
    _state_lock = threading.Lock()
    _local = threading.local()
    _single_depth[0] = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
