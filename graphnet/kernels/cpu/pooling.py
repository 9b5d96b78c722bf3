"""The max-pool gradient from a saved arg-max on the CPU in one scatter, with numba.

``max_pool2d_grad_saved`` is defined once, in graphnet/ops/nn.py, with a kernel written
against ``xp`` (graphnet/ops/conv_kernels.py) that routes the gradient through 0/1 masks,
tap by tap; this loop adds each window's gradient to its arg-max element directly (twice as
fast on the seed CNN's pools). The common 2x2 window at stride 2 without padding also has its
own forward, which finds the maximum and both arg-max arrays in one pass (0.17 ms for the seed
CNN's first pool, against 0.39 ms for the ``xp`` kernel's whole-array passes), and its own
backward, which writes every element once instead of zeroing and scattering. The NumPy
executor uses them where numba is installed; tests hold them to the ``xp`` kernel.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from ...ops.common import into_each
from ...ops.conv_kernels import _pair
from . import threads


@functools.lru_cache(maxsize=1)
def _kernel() -> Callable[..., None]:
    import numba  # only plans with max pooling pay for importing it

    return numba.njit(cache=True, nogil=True, error_model="numpy")(_backward)


@functools.lru_cache(maxsize=1)
def _halving() -> tuple[Callable[..., None], Callable[..., None]]:
    import numba

    def jit(fn: Callable[..., None]) -> Callable[..., None]:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    return jit(_forward_2x2), jit(_backward_2x2)


def halves(kernel_size: Any, stride: Any, padding: Any) -> bool:
    """Whether the pool is the common 2x2 window at stride 2 without padding, which has its own
    loops here (the others take the ``xp`` forward and the general backward)."""
    return _pair(kernel_size) == (2, 2) and _pair(stride) == (2, 2) and _pair(padding) == (0, 0)


# Row views indexed with unsigned integers (numba checks a signed index for wrap-around per
# element). A window's maximum and arg-max follow the xp kernel exactly: the later element wins
# only when strictly greater, and the maximum is numpy's (NaN from either side).
def _forward_2x2(x, y, column_arg, row_arg):  # pragma: no cover - compiled
    n_count, channels = x.shape[0], x.shape[1]
    ho, wo = y.shape[2], y.shape[3]
    one = np.uint64(1)
    for n in range(n_count):
        for c in range(channels):
            for a in range(ho):
                top, bottom = x[n, c, 2 * a], x[n, c, 2 * a + 1]
                top_arg, bottom_arg = column_arg[n, c, 2 * a], column_arg[n, c, 2 * a + 1]
                maxima, rows = y[n, c, a], row_arg[n, c, a]
                for o in range(wo):
                    i, k = np.uint64(2 * o), np.uint64(o)
                    p, q, u, v = top[i], top[i + one], bottom[i], bottom[i + one]
                    upper = p if (p >= q or p != p) else q
                    lower = u if (u >= v or u != u) else v
                    top_arg[k] = q > p
                    bottom_arg[k] = v > u
                    rows[k] = lower > upper
                    maxima[k] = upper if (upper >= lower or upper != upper) else lower


def _backward_2x2(g, column_arg, row_arg, dx):  # pragma: no cover - compiled
    n_count, channels, height, width = dx.shape
    ho, wo = g.shape[2], g.shape[3]
    one = np.uint64(1)
    for n in range(n_count):
        for c in range(channels):
            for a in range(ho):
                top, bottom = dx[n, c, 2 * a], dx[n, c, 2 * a + 1]
                top_arg, bottom_arg = column_arg[n, c, 2 * a], column_arg[n, c, 2 * a + 1]
                grads, rows = g[n, c, a], row_arg[n, c, a]
                for o in range(wo):
                    i, k = np.uint64(2 * o), np.uint64(o)
                    value = grads[k]
                    upper = value if rows[k] == 0 else 0.0
                    lower = 0.0 if rows[k] == 0 else value
                    top[i] = upper if top_arg[k] == 0 else 0.0
                    top[i + one] = 0.0 if top_arg[k] == 0 else upper
                    bottom[i] = lower if bottom_arg[k] == 0 else 0.0
                    bottom[i + one] = 0.0 if bottom_arg[k] == 0 else lower
                for v in range(2 * wo, width):  # a last column no window reads
                    top[v] = 0.0
                    bottom[v] = 0.0
            for r in range(2 * ho, height):  # a last row no window reads
                for v in range(width):
                    dx[n, c, r, v] = 0.0


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
    arrays = np.ascontiguousarray(g), np.ascontiguousarray(column_arg), np.ascontiguousarray(row_arg), dx
    if halves(kernel_size, stride, padding):
        _by_images(_halving()[1], arrays)
    else:
        _by_images(lambda *parts: _kernel()(*parts, kh, kw, sh, sw, ph, pw), arrays)
    if out is not None and dx is not out:
        np.copyto(out, dx)
        return out
    return dx


def max_pool2d_saving(x: np.ndarray, *, kernel_size: Any, stride: Any, padding: Any,
                      out: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What graphnet.ops.conv_kernels' ``max_pool2d_saving`` computes, for a 2x2 window at
    stride 2 without padding (``halves``): (y, column arg-max, row arg-max), written into
    ``out``'s arrays where given."""
    if not halves(kernel_size, stride, padding):
        raise ValueError("this max-pool loop takes 2x2 windows at stride 2 without padding")
    n, c, h, w = x.shape
    shapes = ((n, c, h // 2, w // 2), (n, c, 2 * (h // 2), w // 2), (n, c, h // 2, w // 2))
    given = out if out is not None else (None,) * 3
    results = [target if target is not None and target.flags.c_contiguous else np.empty(shape, dtype)
               for target, shape, dtype in zip(given, shapes, (x.dtype, np.uint8, np.uint8))]
    _by_images(_halving()[0], (np.ascontiguousarray(x), *results))
    return into_each(np, tuple(results), out)


#: pools over fewer input elements run on one thread
SPLIT_MIN_ELEMENTS = 1 << 17


def _by_images(loop: Callable[..., None], arrays: tuple[np.ndarray, ...]) -> None:
    """``loop(*arrays)``, the images (every array's first dim) shared among the threads."""
    threads.split_first_dim(loop, arrays, arrays[0].shape[0], max(a.size for a in arrays), SPLIT_MIN_ELEMENTS)


#: op name -> the NumPy executor's numba implementation
def takes_attrs(kernel_size: Any, stride: Any, padding: Any, **_: Any) -> bool:
    """Whether ``max_pool2d_saving``'s numba loop takes these attributes (2x2 windows at stride
    2 without padding; else the reference kernel runs)."""
    return halves(kernel_size, stride, padding)
