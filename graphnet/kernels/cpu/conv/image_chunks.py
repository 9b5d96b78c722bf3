"""The per-image-columns convolution's loop over chunks of images, compiled whole
(algorithms.py's ``batched_gemm``).

Like nhwc_chunks.py for the channels-last columns: one call builds each chunk's NCHW
columns (compiled_loops.im2col) and runs one BLAS product per image and group
(blas.gemm), without taking the GIL. ``weights`` is (G, Og, K); results and gradients are
(N, G, Og, P) with P = Ho * Wo; ``cols`` is flat, one chunk's (n, G * K, P) columns.
"""

from __future__ import annotations

import numpy as np

from ..blas import NO_TRANS, TRANS, gemm
from .loops import col2im, im2col, jit
from .nhwc_chunks import FLUSH_PIXELS


@jit
def forward_images(x, weights, y, cols, step, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                   address):  # pragma: no cover - compiled
    """y (N, G, Og, P) <- x (N, C, H, W) convolved with weights (G, Og, K)."""
    n_total = x.shape[0]
    groups, og, k = weights.shape
    p = ho * wo
    for start in range(0, n_total, step):
        n = min(step, n_total - start)
        im2col(x[start:start + n], cols[:n * groups * k * p].reshape((n, groups * k, p)),
               kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
        for i in range(n):
            for group in range(groups):
                gemm(address, NO_TRANS, NO_TRANS, og, p, k, 1.0, weights[group], k,
                     cols[(i * groups + group) * k * p:], p, 0.0, y[start + i, group], p)


@jit
def grad_input_images(g, weights, dx, cols, step, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                      address):  # pragma: no cover - compiled
    """dx (N, C, H, W) <- the output gradient g (N, G, Og, P) through weights (G, Og, K)."""
    n_total = g.shape[0]
    groups, og, k = weights.shape
    p = ho * wo
    for start in range(0, n_total, step):
        n = min(step, n_total - start)
        for i in range(n):
            for group in range(groups):
                gemm(address, TRANS, NO_TRANS, k, p, og, 1.0, weights[group], k, g[start + i, group], p, 0.0,
                     cols[(i * groups + group) * k * p:], p)
        col2im(cols[:n * groups * k * p].reshape((n, groups * k, p)), dx[start:start + n],
               kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)


@jit
def grad_weight_images(x, g, part, total, cols, step, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                       address):  # pragma: no cover - compiled
    """total (G, Og, K, float64) <- the sum over images of g's image (Og, P) times its
    columns (K, P) transposed, per group; ``part`` (G, Og, K) sums the images since the last
    flush (BLAS's beta = 1), as in nhwc_chunks.grad_weight_chunks."""
    n_total = x.shape[0]
    groups, og, k = part.shape
    p = ho * wo
    size = groups * og * k
    flat_part = part.reshape(size)
    flat_total = total.reshape(size)
    for t in range(size):
        flat_total[np.uint64(t)] = 0
    summed = 0
    for start in range(0, n_total, step):
        n = min(step, n_total - start)
        im2col(x[start:start + n], cols[:n * groups * k * p].reshape((n, groups * k, p)),
               kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
        for i in range(n):
            beta = 1.0 if summed else 0.0
            for group in range(groups):
                gemm(address, NO_TRANS, TRANS, og, k, p, 1.0, g[start + i, group], p,
                     cols[(i * groups + group) * k * p:], p, beta, part[group], k)
            summed += p
            if summed >= FLUSH_PIXELS or (start + i + 1 == n_total):
                for t in range(size):
                    flat_total[np.uint64(t)] += flat_part[np.uint64(t)]
                summed = 0
