"""The max-pool gradient from a saved arg-max on the CPU in one scatter, with numba.

``max_pool2d_grad_saved`` is defined once, in graphnet/ops/nn.py, with a kernel written
against ``xp`` (graphnet/ops/conv_kernels.py) that routes the gradient through 0/1 masks,
tap by tap; this loop adds each window's gradient to its arg-max element directly (twice as
fast on the seed CNN's pools). The NumPy executor uses it where numba is installed; tests
hold it to the ``xp`` kernel. (A numba forward with the arg-max was tried and dropped: its
per-element branches made it four times slower than the ``xp`` kernel's whole-array passes.)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from ..ops.conv_kernels import _pair


@functools.lru_cache(maxsize=1)
def _kernel() -> Callable[..., None]:
    import numba  # only plans with max pooling pay for importing it

    return numba.njit(cache=True, nogil=True, error_model="numpy")(_backward)


def _backward(g, column_arg, row_arg, dx, kh, kw, sh, sw, ph, pw):  # pragma: no cover - compiled
    n_count, channels, height, width = dx.shape
    ho, wo = g.shape[2], g.shape[3]
    for n in range(n_count):
        for c in range(channels):
            dx[n, c] = 0
            for a in range(ho):
                for o in range(wo):
                    r = a * sh + (row_arg[n, c, a, o] if kh > 1 else 0)
                    j = column_arg[n, c, r, o] if kw > 1 else 0
                    iy, ix = r - ph, o * sw + j - pw
                    if 0 <= iy < height and 0 <= ix < width:
                        dx[n, c, iy, ix] += g[n, c, a, o]


def max_pool2d_grad_saved(g: np.ndarray, column_arg: np.ndarray, row_arg: np.ndarray, x: Any, *,
                          kernel_size: Any, stride: Any, padding: Any, out: np.ndarray | None = None) -> np.ndarray:
    """What graphnet.ops.conv_kernels' ``max_pool2d_grad_saved`` computes, for NumPy arrays
    (``x`` only for its shape; written into ``out`` when given)."""
    kh, kw = _pair(kernel_size)
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    dx = out if out is not None and out.flags.c_contiguous else np.empty(x.shape, g.dtype)
    _kernel()(np.ascontiguousarray(g), np.ascontiguousarray(column_arg), np.ascontiguousarray(row_arg), dx,
                  kh, kw, sh, sw, ph, pw)
    if out is not None and dx is not out:
        np.copyto(out, dx)
        return out
    return dx


#: op name -> the NumPy executor's numba implementation
KERNELS: dict[str, Callable[..., Any]] = {"max_pool2d_grad_saved": max_pool2d_grad_saved}
