"""Waiting a short while for another thread without the GIL and without sleeping.

A thread blocked on a lock lets its core go idle, and on this kind of virtual machine
waking an idle core takes 100-200 microseconds (``run_parts`` with two empty tasks: 11 us
when the helper had just worked, 177 us after one millisecond apart), more than many split
kernels take. So the helpers of ``threads.run_parts``, and a caller waiting for them, first
poll a counter in compiled code for a bounded time (what OpenMP runtimes and OpenBLAS's
workers do), and only then block.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import time

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


@intrinsic
def _load_acquire(typingctx, counter):  # pragma: no cover - compiled
    """*counter, read afresh every time (an atomic load: the loop cannot keep it in a register)."""
    if not (isinstance(counter, types.CPointer) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(args[0], ordering="acquire", align=8)
    return types.int64(counter), codegen


@intrinsic
def _pause(typingctx):  # pragma: no cover - compiled
    """The x86 spin-wait hint (frees the core's shared resources while polling); nothing elsewhere."""
    def codegen(context, builder, signature, args):
        if _X86:
            function_type = ir.FunctionType(ir.VoidType(), [])
            pause = cgutils.get_or_insert_function(builder.module, function_type, "llvm.x86.sse2.pause")
            builder.call(pause, [])
        return context.get_dummy_value()
    return types.void(), codegen


@numba.cfunc(types.boolean(types.CPointer(types.int64), types.int64, types.int64), cache=True)
def _poll(counter, value, rounds):  # pragma: no cover - compiled
    # a C function called through ctypes, which lets go of the GIL for the call and costs
    # less to call than a numba dispatcher
    for _ in range(rounds):
        if _load_acquire(counter) != value:
            return True
        _pause()
    return False


_POLL = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(_poll.address)


@functools.lru_cache(maxsize=1)
def _rounds_per_second() -> float:
    counter = Counter()
    start = time.perf_counter()
    _POLL(counter.address, 0, 20000)
    return 20000 / max(time.perf_counter() - start, 1e-9)


class Counter:
    """A count one thread raises and another may wait on (``wait_while``)."""

    def __init__(self) -> None:
        self._array = np.zeros(1, np.int64)
        self.address = self._array.ctypes.data  # (computing it per call would cost microseconds)

    @property
    def value(self) -> int:
        return int(self._array[0])

    def set(self, value: int) -> None:
        self._array[0] = value

    def wait_while(self, value: int, seconds: float) -> bool:
        """Poll until the count is not ``value`` (True) or about ``seconds`` pass (False),
        without the GIL."""
        return bool(_POLL(self.address, value, max(1, int(seconds * _rounds_per_second()))))
