"""Holding Ctrl-C back while graphnet is in a state it must not be left in.

CPython runs signal handlers in the main thread only, between bytecodes, whichever thread the
operating system delivered the signal to (an OpenBLAS worker, a helper thread). Blocking
SIGINT in the main thread is therefore not enough: the handler still runs there as soon as
another thread has received the signal. What works is a Python-level handler that knows
when graphnet must not be interrupted: the first ``deferred()`` block installs one in front
of the handler in force (the user's, or Python's KeyboardInterrupt) and it stays there,
passing every SIGINT on unchanged outside such blocks. Inside one, a SIGINT is only
recorded, and it is passed on when the outermost block ends. ``allowed()`` lets it through
again for a stretch that may be interrupted (a run's pure steps), first passing on one that
arrived meanwhile. A block costs two function calls, not two ``sigaction`` calls, so the
helper threads' handover can use one per split kernel.

Graphnet defers interrupts while it takes and releases a run's locks, while a training step
writes its variables, and while helper threads and their caller hand work over; so Ctrl-C
never leaves a lock held, an update half-applied or the helpers out of step.
"""

from __future__ import annotations

import _signal
import signal
import threading
from typing import Any

_depth = [0]  # nested deferred() blocks open in the main thread (allowed() lowers it to 0)
_pending: list[tuple[int, Any]] = []  # the SIGINT held back, at most one
_chained: list[Any] = [None]  # the handler graphnet's stands in front of


def _handler(signum: int, frame: Any) -> None:
    if _depth[0] > 0:
        if not _pending:
            _pending.append((signum, frame))
        return
    _deliver((signum, frame))


def _deliver(pending: tuple[int, Any]) -> None:
    """Act on a SIGINT as the handler graphnet stands in front of would (Python's raises
    KeyboardInterrupt)."""
    handler = _chained[0]
    if callable(handler):
        handler(*pending)
    elif handler == signal.SIG_DFL:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.raise_signal(signal.SIGINT)


_MAIN = threading.main_thread().ident
_SIGINT = int(signal.SIGINT)


def _installed() -> bool:
    """Put graphnet's handler in front of the one in force, if it is not there already (the
    user may have installed theirs since). False where that cannot be done: outside the main
    thread (which never runs handlers), where SIGINT is ignored or handled from C. (The C
    module's getsignal: the ``signal`` module's wraps it in enums and costs 3 us a call.)"""
    if threading.get_ident() != _MAIN:
        return False
    try:
        current = _signal.getsignal(_SIGINT)
    except ValueError:  # not the main interpreter
        return False
    if current is _handler:
        return True
    if current in (None, signal.SIG_IGN, int(signal.SIG_IGN)):
        return False
    _chained[0] = current
    signal.signal(signal.SIGINT, _handler)
    return True


class _DeferredBlock:
    """``deferred()``'s context manager (a class: a generator-based one costs microseconds,
    and the helper threads' handover enters one per split kernel)."""

    __slots__ = ("active",)

    def __enter__(self) -> None:
        self.active = _installed()
        if self.active:
            _depth[0] += 1

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            _depth[0] -= 1
            if _depth[0] == 0 and _pending:
                _deliver(_pending.pop())


class _AllowedBlock:
    __slots__ = ("depth",)

    def __enter__(self) -> None:
        self.depth = 0
        if threading.get_ident() != _MAIN or _depth[0] == 0:
            return
        if _pending:  # passed on while still held, so that unwinding from it stays deferred
            _deliver(_pending.pop())  # raises KeyboardInterrupt (unless the user's handler does not)
        self.depth, _depth[0] = _depth[0], 0

    def __exit__(self, *exc: Any) -> None:
        if self.depth:
            _depth[0] = self.depth


def deferred() -> _DeferredBlock:
    """Hold SIGINT back for the block and pass it on when the outermost block ends. Outside the
    main thread, where Python never runs signal handlers, it does nothing."""
    return _DeferredBlock()


def allowed() -> _AllowedBlock:
    """Inside ``deferred()`` blocks, let SIGINT through for this stretch (passing on first one
    held back so far); held back again when it ends."""
    return _AllowedBlock()


def pending() -> bool:
    """Whether a SIGINT is being held back."""
    return bool(_pending)


def acquire_all(locks: list[threading.Lock], poll: float = 0.05) -> None:
    """Take every lock in order, inside a ``deferred()`` block. A wait stays interruptible: a
    SIGINT that arrives while waiting releases the locks taken so far and is then passed on,
    so an interrupted caller holds nothing."""
    taken: list[threading.Lock] = []
    while len(taken) < len(locks):
        lock = locks[len(taken)]
        if lock.acquire(timeout=poll):
            taken.append(lock)
        elif _pending:
            release_all(taken)
            taken = []
            with allowed():  # raises KeyboardInterrupt unless the user's handler chose not to
                pass


def release_all(locks: list[threading.Lock]) -> None:
    for lock in reversed(locks):
        lock.release()
