"""The channels-last convolution's loop over chunks of images, compiled whole (nhwc.py).

One call runs every chunk of a call's images: copy to padded NHWC, columns, one BLAS
product (blas.gemm), and the copy out, without taking the GIL, so the parts of a
convolution split among threads never wait for each other (nhwc.py keeps the same loop
in Python for where blas.gemm_address finds no BLAS to call). The flat scratch arrays are
the chunk's: padded images, columns (pixels, K) and product (pixels, O); ``weights`` is the
(K, O) matrix of nhwc._weight_columns.
"""

from __future__ import annotations

import numpy as np

from ..blas import NO_TRANS, TRANS, gemm
from .loops import col2im_nhwc, from_padded_nhwc, im2col_nhwc, jit, to_padded_nhwc


@jit
def forward_chunks(x, weights, y, padded, cols, pixels, step, ph, pw, hp, wp, kh, kw, sh, sw, dh, dw,
                   address):  # pragma: no cover - compiled
    """y (N, O, Ho, Wo) <- x (N, C, H, W) convolved with weights (K, O)."""
    n_total, channels = x.shape[0], x.shape[1]
    k, o = weights.shape
    ho, wo = y.shape[2], y.shape[3]
    p = ho * wo
    for start in range(0, n_total, step):
        n = min(step, n_total - start)
        to_padded_nhwc(x[start:start + n], padded, ph, pw, hp, wp)
        im2col_nhwc(padded, cols, n, hp, wp, channels, kh, kw, sh, sw, dh, dw, ho, wo)
        gemm(address, NO_TRANS, NO_TRANS, n * p, o, k, 1.0, cols, k, weights, o, 0.0, pixels, o)
        for i in range(n):
            for c in range(o):
                for yo in range(ho):
                    row = y[start + i, c, yo]
                    base = (i * p + yo * wo) * o + c
                    for xo in range(wo):
                        row[np.uint64(xo)] = pixels[np.uint64(base + xo * o)]


@jit
def _chunk_gradient(g, pixels, start, n):  # pragma: no cover - compiled
    """pixels (flat n * Ho * Wo * O) <- g[start:start + n] (n, O, Ho, Wo), channels last."""
    o, ho, wo = g.shape[1], g.shape[2], g.shape[3]
    for i in range(n):
        for c in range(o):
            for yo in range(ho):
                row = g[start + i, c, yo]
                base = ((i * ho + yo) * wo) * o + c
                for xo in range(wo):
                    pixels[np.uint64(base + xo * o)] = row[np.uint64(xo)]


@jit
def grad_input_chunks(g, weights, dx, padded, cols, pixels, step, ph, pw, hp, wp, kh, kw, sh, sw, dh, dw,
                      address):  # pragma: no cover - compiled
    """dx (N, C, H, W) <- the output gradient g (N, O, Ho, Wo) through weights (K, O)."""
    n_total, channels = dx.shape[0], dx.shape[1]
    k, o = weights.shape
    ho, wo = g.shape[2], g.shape[3]
    p = ho * wo
    for start in range(0, n_total, step):
        n = min(step, n_total - start)
        _chunk_gradient(g, pixels, start, n)
        gemm(address, NO_TRANS, TRANS, n * p, k, o, 1.0, pixels, o, weights, o, 0.0, cols, k)
        col2im_nhwc(cols, padded, n, hp, wp, channels, kh, kw, sh, sw, dh, dw, ho, wo)
        from_padded_nhwc(padded, dx[start:start + n], ph, pw, hp, wp)


#: the weight gradient's chunk products accumulate in ``part`` (BLAS's beta = 1) until they
#: cover this many output pixels, then go into the float64 sum: adding an (O, K) product per
#: small chunk cost more than the products on the ResNet's 4x4 layer
FLUSH_PIXELS = 512


@jit
def grad_weight_chunks(x, g, part, total, padded, cols, pixels, step, ph, pw, hp, wp, kh, kw, sh, sw, dh, dw,
                       address):  # pragma: no cover - compiled
    """total (O, K, float64) <- the sum over chunks of g's chunk (pixels, O) transposed times
    x's columns (pixels, K); ``part`` (O, K) sums the chunks since the last flush."""
    n_total, channels = x.shape[0], x.shape[1]
    o, k = part.shape
    ho, wo = g.shape[2], g.shape[3]
    p = ho * wo
    flat_part = part.reshape(o * k)
    flat_total = total.reshape(o * k)
    for t in range(o * k):
        flat_total[np.uint64(t)] = 0
    summed = 0  # output pixels in ``part``
    for start in range(0, n_total, step):
        n = min(step, n_total - start)
        to_padded_nhwc(x[start:start + n], padded, ph, pw, hp, wp)
        im2col_nhwc(padded, cols, n, hp, wp, channels, kh, kw, sh, sw, dh, dw, ho, wo)
        _chunk_gradient(g, pixels, start, n)
        gemm(address, TRANS, NO_TRANS, o, k, n * p, 1.0, pixels, o, cols, k, 1.0 if summed else 0.0, part, k)
        summed += n * p
        if summed >= FLUSH_PIXELS or start + n == n_total:
            for t in range(o * k):
                flat_total[np.uint64(t)] += flat_part[np.uint64(t)]
            summed = 0
