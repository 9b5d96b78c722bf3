"""The numba loops of graphnet.executors.numba_conv: im2col and col2im straight from NCHW.

They live at module level, in a module of their own, so that numba's on-disk cache keeps
them between processes (a function defined inside another is compiled again in every
process: two seconds at a plan's first run).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

jit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")


@numba.njit(inline="always")
def valid_range(off, step, size, count):  # pragma: no cover - compiled
    """Output positions o in [lo, hi) with 0 <= o * step + off < size."""
    lo = 0 if off >= 0 else (-off + step - 1) // step
    hi = (size - off + step - 1) // step
    hi = min(max(hi, lo), count)
    return min(lo, count), hi


# Inner loops index 1-d row views with unsigned integers: numba wraps negative indices
# around, and that check per element keeps LLVM from vectorising the copy (3x slower).
@jit
def im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):  # pragma: no cover - compiled
    n_count, channels, height, width = x.shape
    for n in range(n_count):
        for c in range(channels):
            for i in range(kh):
                for j in range(kw):
                    dst = cols[n, (c * kh + i) * kw + j]
                    off = j * dw - pw
                    lo, hi = valid_range(off, sw, width, wo)
                    for y in range(ho):
                        iy = y * sh - ph + i * dh
                        base = y * wo
                        if iy < 0 or iy >= height:
                            for o in range(wo):
                                dst[np.uint64(base + o)] = 0
                            continue
                        src = x[n, c, iy]
                        for o in range(lo):
                            dst[np.uint64(base + o)] = 0
                        for o in range(lo, hi):
                            dst[np.uint64(base + o)] = src[np.uint64(o * sw + off)]
                        for o in range(hi, wo):
                            dst[np.uint64(base + o)] = 0


@jit
def col2im(cols, dx, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):  # pragma: no cover - compiled
    n_count, channels, height, width = dx.shape
    for n in range(n_count):
        for c in range(channels):
            dx[n, c] = 0
            for i in range(kh):
                for j in range(kw):
                    src = cols[n, (c * kh + i) * kw + j]
                    off = j * dw - pw
                    lo, hi = valid_range(off, sw, width, wo)
                    for y in range(ho):
                        iy = y * sh - ph + i * dh
                        if iy < 0 or iy >= height:
                            continue
                        dst = dx[n, c, iy]
                        base = y * wo
                        for o in range(lo, hi):
                            dst[np.uint64(o * sw + off)] += src[np.uint64(base + o)]
