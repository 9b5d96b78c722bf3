"""numpy's own BLAS matrix product, callable from numba-compiled loops without the GIL.

A convolution split among threads runs, per part, a loop over chunks of images: copy a chunk
to columns, one matrix product, copy the product out. Written in Python, each of those calls
takes the GIL, and two parts pass it back and forth some hundred times per step: the ResNet's
convolutions took 21 ms on two threads where two processes, each with half the images,
took 16.4. Called from one compiled loop, a part never takes the GIL.

numba only reaches BLAS through SciPy, so the product here is numpy's bundled OpenBLAS's
``cblas_?gemm``, found by its address when numpy ships the 64-bit-integer build (its symbols
end in ``64_``; numpy's own wheels do). Elsewhere ``gemm_address`` is 0 and the callers keep
their Python loops. Thread counts set on that library (threadpoolctl) apply to these calls
too.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: cblas's enums: row-major storage, an operand as stored or transposed
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

_SYMBOLS = {np.dtype(np.float32): ("scipy_cblas_sgemm64_", "cblas_sgemm64_"),
            np.dtype(np.float64): ("scipy_cblas_dgemm64_", "cblas_dgemm64_")}


@functools.cache
def gemm_address(dtype: np.dtype) -> int:
    """The address of the 64-bit-integer ``cblas_sgemm`` (float32) or ``cblas_dgemm``
    (float64) of the BLAS numpy uses, or 0 where there is none to call safely."""
    names = _SYMBOLS.get(np.dtype(dtype))
    if names is None:
        return 0
    from threadpoolctl import threadpool_info  # (a dependency already: graphnet sets BLAS threads with it)

    for library in threadpool_info():
        if library.get("user_api") != "blas" or library.get("internal_api") != "openblas":
            continue
        try:
            handle = ctypes.CDLL(library["filepath"])
        except OSError:
            continue
        for name in names:
            function = getattr(handle, name, None)
            if function is not None:
                return int(ctypes.cast(function, ctypes.c_void_p).value or 0)
    return 0


@intrinsic
def gemm(typingctx, address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # pragma: no cover
    """``c = alpha * op(a) @ op(b) + beta * c`` through the row-major cblas ``?gemm`` at
    ``address`` (gemm_address): op(a) is (m, k), op(b) (k, n), c (m, n); ``lda``, ``ldb``
    and ``ldc`` are the arrays' row strides in elements, ``trans_*`` is NO_TRANS or TRANS.
    a, b and c are arrays of one float dtype whose first element starts the matrix."""
    if not all(isinstance(t, types.Array) for t in (a, b, c)) or len({a.dtype, b.dtype, c.dtype}) != 1 \
            or c.dtype not in (types.float32, types.float64):
        return None
    integers = (address, trans_a, trans_b, m, n, k, lda, ldb, ldc)
    if not all(isinstance(t, types.Integer) for t in integers):
        return None
    signature = types.void(address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        (address_v, trans_a_v, trans_b_v, m_v, n_v, k_v, alpha_v, a_v, lda_v, b_v, ldb_v, beta_v, c_v,
         ldc_v) = args
        argtypes = sig.args
        int32, int64 = ir.IntType(32), ir.IntType(64)
        real = context.get_value_type(c.dtype)
        pointer = real.as_pointer()

        def integer(value, index, width):
            return context.cast(builder, value, argtypes[index], types.int32 if width == 32 else types.int64)

        def data(value, index):
            return builder.bitcast(context.make_array(argtypes[index])(context, builder, value).data, pointer)

        function_type = ir.FunctionType(ir.VoidType(), [int32, int32, int32, int64, int64, int64, real, pointer,
                                                         int64, pointer, int64, real, pointer, int64])
        function = builder.inttoptr(integer(address_v, 0, 64), function_type.as_pointer())
        builder.call(function, [
            cgutils.int32_t(ROW_MAJOR), integer(trans_a_v, 1, 32), integer(trans_b_v, 2, 32),
            integer(m_v, 3, 64), integer(n_v, 4, 64), integer(k_v, 5, 64),
            context.cast(builder, alpha_v, argtypes[6], c.dtype), data(a_v, 7), integer(lda_v, 8, 64),
            data(b_v, 9), integer(ldb_v, 10, 64),
            context.cast(builder, beta_v, argtypes[11], c.dtype), data(c_v, 12), integer(ldc_v, 13, 64)])
        return context.get_dummy_value()

    return signature, codegen
