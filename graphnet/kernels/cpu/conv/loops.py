"""The numba loops of graphnet.kernels.cpu.conv.chooser: im2col and col2im straight from NCHW.

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
# The zero-fill and valid-range row copy below is written out in each loop on purpose: the
# same copy as a shared helper (numba-inlined or LLVM-inlined) measured 15-60% slower in
# im2col and phase_split (their rows are short: the copy must stay in the loop body).
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


# --- the shifted-columns algorithm (graphnet/kernels/cpu/conv/shifted.py) -----------------------
# An image's input, zero-padded, is split into stride_h * stride_w phases, phase (a, b) holding
# padded rows a, a + sh, ... and columns b, b + sw, ..., each phase a (hq, wq) grid, one after
# another in a row of ``length`` values per channel (the tail, past the last phase, is zeros).
# Kernel tap (i, j) then reads phase ((i*dh) % sh, (j*dw) % sw) at a fixed shift, so one
# column-matrix row is one contiguous run of the phases' row: a plain copy, not a gather.


@jit
def phase_split(x, phases, sh, sw, ph, pw, hq, wq):  # pragma: no cover - compiled
    n_count, channels, height, width = x.shape
    length = phases.shape[2]
    for n in range(n_count):
        for c in range(channels):
            dst = phases[n, c]
            for a in range(sh):
                for b in range(sw):
                    base = (a * sw + b) * hq * wq
                    off = b - pw
                    lo, hi = valid_range(off, sw, width, wq)
                    for u in range(hq):
                        iy = u * sh + a - ph
                        row = base + u * wq
                        if iy < 0 or iy >= height:
                            for v in range(wq):
                                dst[np.uint64(row + v)] = 0
                            continue
                        src = x[n, c, iy]
                        for v in range(lo):
                            dst[np.uint64(row + v)] = 0
                        for v in range(lo, hi):
                            dst[np.uint64(row + v)] = src[np.uint64(v * sw + off)]
                        for v in range(hi, wq):
                            dst[np.uint64(row + v)] = 0
            for t in range(sh * sw * hq * wq, length):
                dst[np.uint64(t)] = 0


@jit
def phase_merge(phases, dx, sh, sw, ph, pw, hq, wq):  # pragma: no cover - compiled
    """The adjoint of phase_split's copy: dx (n, C, H, W) read back from the phases."""
    n_count, channels, height, width = dx.shape
    for n in range(n_count):
        for c in range(channels):
            src = phases[n, c]
            for a in range(sh):
                for b in range(sw):
                    base = (a * sw + b) * hq * wq
                    off = b - pw
                    lo, hi = valid_range(off, sw, width, wq)
                    for u in range(hq):
                        iy = u * sh + a - ph
                        if iy < 0 or iy >= height:
                            continue
                        dst = dx[n, c, iy]
                        row = base + u * wq
                        for v in range(lo, hi):
                            dst[np.uint64(v * sw + off)] = src[np.uint64(row + v)]


@numba.njit(inline="always")
def tap_shift(i, j, sh, sw, dh, dw, hq, wq):  # pragma: no cover - compiled
    """Where tap (i, j) starts reading in a channel's row of phases."""
    return (((i * dh) % sh) * sw + (j * dw) % sw) * hq * wq + ((i * dh) // sh) * wq + (j * dw) // sw


@jit
def shifted_columns(phases, cols, kh, kw, sh, sw, dh, dw, hq, wq):  # pragma: no cover - compiled
    """cols (C * kh * kw, n, pq): row (c, i, j), image n is the phases' run from tap (i, j)."""
    n_count, channels, _ = phases.shape
    pq = cols.shape[2]
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                start = tap_shift(i, j, sh, sw, dh, dw, hq, wq)
                for n in range(n_count):
                    dst = cols[(c * kh + i) * kw + j, n]
                    src = phases[n, c]
                    for q in range(pq):
                        dst[np.uint64(q)] = src[np.uint64(start + q)]


@jit
def shifted_add(cols, phases, kh, kw, sh, sw, dh, dw, hq, wq):  # pragma: no cover - compiled
    """The adjoint of shifted_columns: every column row added back where it was read (into
    zeroed phases)."""
    n_count, channels, length = phases.shape
    pq = cols.shape[2]
    for n in range(n_count):
        for c in range(channels):
            dst = phases[n, c]
            for t in range(length):
                dst[np.uint64(t)] = 0
            for i in range(kh):
                for j in range(kw):
                    start = tap_shift(i, j, sh, sw, dh, dw, hq, wq)
                    src = cols[(c * kh + i) * kw + j, n]
                    for q in range(pq):
                        dst[np.uint64(start + q)] += src[np.uint64(q)]


# --- channels-last columns (graphnet/kernels/cpu/conv/nhwc.py) ----------------------------------
# Images copied to zero-padded NHWC (flat: image, row, column, channel), whose column-matrix
# row for one output pixel is kh runs of kw * C contiguous values (kh * kw runs of C with
# dilation): long copies where NCHW columns are runs of one output row.


@jit
def to_padded_nhwc(x, xh, ph, pw, hp, wp):  # pragma: no cover - compiled
    """xh (flat n * hp * wp * C) <- x (n, C, H, W), zero in the padding. From 16 channels on,
    each pixel's channels are written together (three times faster on 28x28x16 images);
    below, each channel's rows are read together."""
    n_count, channels, height, width = x.shape
    if channels < 16:
        for t in range(n_count * hp * wp * channels):
            xh[np.uint64(t)] = 0
        for n in range(n_count):
            for c in range(channels):
                for y in range(height):
                    row = x[n, c, y]
                    base = ((n * hp + y + ph) * wp + pw) * channels + c
                    for v in range(width):
                        xh[np.uint64(base + v * channels)] = row[np.uint64(v)]
        return
    for n in range(n_count):
        image = n * hp * wp * channels
        for t in range(ph * wp * channels):  # the padding rows above and below
            xh[np.uint64(image + t)] = 0
        for t in range((ph + height) * wp * channels, hp * wp * channels):
            xh[np.uint64(image + t)] = 0
        for y in range(height):
            row = image + (y + ph) * wp * channels
            for t in range(pw * channels):  # the padding columns
                xh[np.uint64(row + t)] = 0
            for t in range((pw + width) * channels, wp * channels):
                xh[np.uint64(row + t)] = 0
            for v in range(width):
                pixel = row + (v + pw) * channels
                for c in range(channels):
                    xh[np.uint64(pixel + c)] = x[n, c, y, v]


@jit
def from_padded_nhwc(xh, dx, ph, pw, hp, wp):  # pragma: no cover - compiled
    """dx (n, C, H, W) <- the unpadded part of xh (flat n * hp * wp * C), in the order
    to_padded_nhwc writes."""
    n_count, channels, height, width = dx.shape
    if channels < 16:
        for n in range(n_count):
            for c in range(channels):
                for y in range(height):
                    row = dx[n, c, y]
                    base = ((n * hp + y + ph) * wp + pw) * channels + c
                    for v in range(width):
                        row[np.uint64(v)] = xh[np.uint64(base + v * channels)]
        return
    for n in range(n_count):
        for y in range(height):
            row = ((n * hp + y + ph) * wp + pw) * channels
            for v in range(width):
                pixel = row + v * channels
                for c in range(channels):
                    dx[n, c, y, v] = xh[np.uint64(pixel + c)]


@jit
def im2col_nhwc(xh, cols, n_count, hp, wp, channels, kh, kw, sh, sw, dh, dw, ho, wo):  # pragma: no cover
    """cols (flat n * ho * wo * K, K = kh * kw * C ordered (i, j, c)) <- xh."""
    run = kw * channels
    k = kh * run
    for n in range(n_count):
        for yo in range(ho):
            for xo in range(wo):
                dst0 = ((n * ho + yo) * wo + xo) * k
                for i in range(kh):
                    src0 = ((n * hp + yo * sh + i * dh) * wp + xo * sw) * channels
                    if dw == 1:
                        d = dst0 + i * run
                        for t in range(run):
                            cols[np.uint64(d + t)] = xh[np.uint64(src0 + t)]
                    else:
                        for j in range(kw):
                            d = dst0 + (i * kw + j) * channels
                            s0 = src0 + j * dw * channels
                            for t in range(channels):
                                cols[np.uint64(d + t)] = xh[np.uint64(s0 + t)]


@jit
def col2im_nhwc(cols, xh, n_count, hp, wp, channels, kh, kw, sh, sw, dh, dw, ho, wo):  # pragma: no cover
    """The adjoint of im2col_nhwc: every column row added back where it was read (into a
    zeroed xh)."""
    run = kw * channels
    k = kh * run
    for t in range(n_count * hp * wp * channels):
        xh[np.uint64(t)] = 0
    for n in range(n_count):
        for yo in range(ho):
            for xo in range(wo):
                src0 = ((n * ho + yo) * wo + xo) * k
                for i in range(kh):
                    dst0 = ((n * hp + yo * sh + i * dh) * wp + xo * sw) * channels
                    if dw == 1:
                        s = src0 + i * run
                        for t in range(run):
                            xh[np.uint64(dst0 + t)] += cols[np.uint64(s + t)]
                    else:
                        for j in range(kw):
                            s = src0 + (i * kw + j) * channels
                            d0 = dst0 + j * dw * channels
                            for t in range(channels):
                                xh[np.uint64(d0 + t)] += cols[np.uint64(s + t)]
