"""Channels-last columns for the CPU: im2col from an NHWC copy of each chunk of images.

The per-image algorithm (``batched_gemm``) builds NCHW columns, whose rows are runs of one
output row (4 to 28 values on the reference networks, strided at stride 2). Here each chunk
of images is first copied to zero-padded NHWC, after which one output pixel's column row is
kh runs of ``kw * C`` contiguous values (48 to 192 on the ResNet), and the product
``(pixels, K) @ (K, O)`` is one BLAS call per chunk, whose result is NHWC and is transposed
back while it is in cache. The input gradient adds the columns' gradient back into a zeroed
NHWC chunk (col2im) and copies it out to NCHW. One group only (``groups=1``): grouped and
depthwise convolutions take the other algorithms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from .common import Workspace, _gemm_address, _Geometry, _geometry, _result, _target, allocator, weight_result

#: images go through in chunks whose columns take about this many bytes, per op, on one thread
#: or in each part of a split (timed with the compiled chunk loops on the reference layers, on
#: one and two threads: small chunks keep the forward and weight gradient in the L2 cache (the
#: weight gradient's products accumulate over chunks before each float64 sum:
#: nhwc_chunks.FLUSH_PIXELS), where the input gradient's (pixels, O) @ (O, K) product
#: gains from more pixels, up to 256 KB: 512 KB was 2% faster on the ResNet but took the seed
#: CNN's peak memory over PyTorch's)
CHUNK_BYTES = {"conv2d": 64 * 1024, "conv2d_grad_weight": 64 * 1024, "conv2d_grad_input": 256 * 1024}


@functools.lru_cache(maxsize=1)
def _loops() -> dict[str, Callable[..., None]]:
    from . import loops as compiled_loops, nhwc_chunks  # only plans with convolutions pay for importing numba

    loops = {name: getattr(compiled_loops, name)
             for name in ("to_padded_nhwc", "from_padded_nhwc", "im2col_nhwc", "col2im_nhwc")}
    loops.update({name: getattr(nhwc_chunks, name)
                  for name in ("forward_chunks", "grad_input_chunks", "grad_weight_chunks")})
    return loops


def applies(x_shape: tuple, w_shape: tuple, attrs: dict[str, Any]) -> bool:
    return int(attrs["groups"]) == 1


def _checked(x_shape: tuple, w_shape: tuple, attrs: dict[str, Any]) -> _Geometry:
    if not applies(x_shape, w_shape, attrs):  # refuse rather than compute something else
        raise ValueError("nhwc takes convolutions in one group")
    return _geometry(x_shape, w_shape, attrs)


def chunk_images(op: str, geo: _Geometry, itemsize: int) -> int:
    """How many images one chunk of ``op`` takes."""
    per_image = max(1, geo.p * geo.k * itemsize)
    return max(1, min(geo.n, CHUNK_BYTES[op] // per_image))


def scratch_bytes(op: str, geo: _Geometry, itemsize: int) -> int:
    """Bytes one call takes from its workspace: the weights as (K, O), a chunk's padded NHWC
    images, columns and (pixels, O) product or gradient; the weight gradient also its chunk's
    product and float64 sum."""
    n = chunk_images(op, geo, itemsize)
    padded = n * (geo.h + 2 * geo.ph) * (geo.w + 2 * geo.pw) * geo.c
    weights = geo.k * geo.o
    extra = 3 * weights if op == "conv2d_grad_weight" else 0  # (float64 sum: two itemsizes)
    return (weights + padded + n * geo.p * geo.k + n * geo.p * geo.o + extra) * itemsize + 6 * 64 * 2


class _Chunks:
    """A call's chunks of images and its scratch arrays."""

    def __init__(self, op: str, geo: _Geometry, dtype: Any, workspace: Workspace | None) -> None:
        self.geo, self.dtype = geo, np.dtype(dtype)
        self.hp, self.wp = geo.h + 2 * geo.ph, geo.w + 2 * geo.pw
        self.step = chunk_images(op, geo, self.dtype.itemsize)
        self.allocate = allocator(workspace)
        self.padded = self.allocate((self.step * self.hp * self.wp * geo.c,), self.dtype)
        self.cols = self.allocate((self.step * geo.p * geo.k,), self.dtype)
        self.pixels = self.allocate((self.step * geo.p * geo.o,), self.dtype)

    def spans(self) -> list[tuple[int, int]]:
        return [(start, min(start + self.step, self.geo.n)) for start in range(0, self.geo.n, self.step)]

    def compiled_args(self, address: int) -> tuple[Any, ...]:
        """The scratch and sizes the compiled chunk loops (nhwc_chunks) take."""
        geo = self.geo
        return (self.padded, self.cols, self.pixels, self.step, geo.ph, geo.pw, self.hp, self.wp, geo.kh, geo.kw,
                geo.sh, geo.sw, geo.dh, geo.dw, address)

    def loop_args(self, n: int) -> tuple[int, ...]:
        geo = self.geo
        return (n, self.hp, self.wp, geo.c, geo.kh, geo.kw, geo.sh, geo.sw, geo.dh, geo.dw, geo.ho, geo.wo)

    def columns(self, images: np.ndarray) -> np.ndarray:
        """The chunk's (pixels, K) column matrix."""
        n, geo, loops = images.shape[0], self.geo, _loops()
        padded = self.padded[:n * self.hp * self.wp * geo.c]
        loops["to_padded_nhwc"](images, padded, geo.ph, geo.pw, self.hp, self.wp)
        cols = self.cols[:n * geo.p * geo.k]
        loops["im2col_nhwc"](padded, cols, *self.loop_args(n))
        return cols.reshape(n * geo.p, geo.k)

    def gradient(self, g: np.ndarray) -> np.ndarray:
        """The chunk's output gradient (n, O, Ho, Wo) as (pixels, O)."""
        n, geo = g.shape[0], self.geo
        pixels = self.pixels[:n * geo.p * geo.o].reshape(n, geo.ho, geo.wo, geo.o)
        np.copyto(pixels, g.transpose(0, 2, 3, 1))
        return pixels.reshape(n * geo.p, geo.o)


def _weight_columns(w: np.ndarray, geo: _Geometry, allocate: Callable[..., np.ndarray]) -> np.ndarray:
    """The weights as (K, O), K ordered (i, j, c) like the columns."""
    matrix = allocate((geo.kh, geo.kw, geo.c, geo.o), w.dtype)
    np.copyto(matrix, w.transpose(2, 3, 1, 0))
    return matrix.reshape(geo.k, geo.o)


def nhwc_forward(x: np.ndarray, w: np.ndarray, *, out: np.ndarray | None = None,
                 workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    """conv2d: (N, C, H, W), (O, C, kh, kw) -> (N, O, Ho, Wo)."""
    geo = _checked(x.shape, w.shape, attrs)
    chunks = _Chunks("conv2d", geo, x.dtype, workspace)
    weights = _weight_columns(w, geo, chunks.allocate)
    y = _target(out, (geo.n, geo.o, geo.ho, geo.wo), x.dtype)
    address = _gemm_address(x, weights, y)
    if address:
        _loops()["forward_chunks"](x, weights, y, *chunks.compiled_args(address))
        return _result(y, out, (geo.n, geo.o, geo.ho, geo.wo))
    for start, stop in chunks.spans():
        n = stop - start
        product = chunks.pixels[:n * geo.p * geo.o].reshape(n * geo.p, geo.o)
        np.matmul(chunks.columns(x[start:stop]), weights, out=product)
        np.copyto(y[start:stop], product.reshape(n, geo.ho, geo.wo, geo.o).transpose(0, 3, 1, 2))
    return _result(y, out, (geo.n, geo.o, geo.ho, geo.wo))


def nhwc_grad_input(g: np.ndarray, w: np.ndarray, x: Any, *, out: np.ndarray | None = None,
                    workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    """conv2d's input gradient: (N, O, Ho, Wo), weight, x (read for its shape) -> (N, C, H, W)."""
    geo = _checked(x.shape, w.shape, attrs)
    chunks = _Chunks("conv2d_grad_input", geo, g.dtype, workspace)
    weights = _weight_columns(w, geo, chunks.allocate)
    dx = _target(out, (geo.n, geo.c, geo.h, geo.w), g.dtype)
    loops = _loops()
    address = _gemm_address(g, weights, dx)
    if address:
        loops["grad_input_chunks"](g, weights, dx, *chunks.compiled_args(address))
        return _result(dx, out, (geo.n, geo.c, geo.h, geo.w))
    for start, stop in chunks.spans():
        n = stop - start
        cols = chunks.cols[:n * geo.p * geo.k]
        np.matmul(chunks.gradient(g[start:stop]), weights.T, out=cols.reshape(n * geo.p, geo.k))
        padded = chunks.padded[:n * chunks.hp * chunks.wp * geo.c]
        loops["col2im_nhwc"](cols, padded, *chunks.loop_args(n))
        loops["from_padded_nhwc"](padded, dx[start:stop], geo.ph, geo.pw, chunks.hp, chunks.wp)
    return _result(dx, out, (geo.n, geo.c, geo.h, geo.w))


def nhwc_grad_weight(x: np.ndarray, g: np.ndarray, w: Any, *, out: np.ndarray | None = None,
                     workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    """conv2d's weight gradient, summed over chunks in float64: x, (N, O, Ho, Wo), weight
    (read for its shape) -> (O, C, kh, kw)."""
    geo = _checked(x.shape, w.shape, attrs)
    chunks = _Chunks("conv2d_grad_weight", geo, x.dtype, workspace)
    part = chunks.allocate((geo.o, geo.k), g.dtype)
    total = chunks.allocate((geo.o, geo.k), np.float64)
    address = _gemm_address(x, g, part)
    if address:
        _loops()["grad_weight_chunks"](x, g, part, total, *chunks.compiled_args(address))
        return weight_result(total.reshape(geo.o, geo.kh, geo.kw, geo.c).transpose(0, 3, 1, 2), out, g.dtype)
    total.fill(0)
    for start, stop in chunks.spans():
        cols = chunks.columns(x[start:stop])
        np.matmul(chunks.gradient(g[start:stop]).T, cols, out=part)  # (O, K)
        total += part
    return weight_result(total.reshape(geo.o, geo.kh, geo.kw, geo.c).transpose(0, 3, 1, 2), out, g.dtype)
