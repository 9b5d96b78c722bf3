"""Convolution algorithms for the CPU, compiled with numba: the candidates graphnet.kernels.cpu.conv.chooser
chooses among per shape.

``conv2d``, ``conv2d_grad_input`` and ``conv2d_grad_weight`` are defined once, in
graphnet/ops/nn.py, with the ``xp`` kernels of graphnet/ops/conv_kernels.py (shared with
CuPy). Those build their im2col matrices from whole-array copies: a padded copy, a
channels-last transpose, then the strided gather, then a transpose of the result back to
NCHW. On the CPU that memory traffic costs more than the arithmetic. The algorithms here
(each ``kernel(*inputs, out=None, workspace=None, **attrs)``, writing into ``out``):

* ``batched_gemm``: one numba pass gathers each image's columns ``(K, Ho*Wo)`` straight from
  the NCHW input (padding written as zeros, no padded copy), and one BLAS product per image
  writes the NCHW result in place; the input gradient scatters the columns' gradient back
  in one numba pass (col2im), and the weight gradient sums per-image products. With numpy's
  own OpenBLAS the whole loop over chunks is one compiled call (image_chunks.py).
* ``pointwise``: a 1x1 convolution without padding as a plain product per image.
* ``xp``: the shared kernel, over chunks of images.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ....ops import conv_kernels
from . import nhwc, shifted
from .common import (Workspace, _aligned, _gemm_address, _Geometry, _geometry, _result, _scratch, _target,
                          _weights, allocator, shapes_of, weight_result)

CONV_OPS = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")


@functools.lru_cache(maxsize=1)
def _loops() -> dict[str, Callable[..., None]]:
    from . import image_chunks, loops as compiled_loops  # only plans with convolutions pay for importing numba

    return {"im2col": compiled_loops.im2col, "col2im": compiled_loops.col2im,
            **{name: getattr(image_chunks, name)
               for name in ("forward_images", "grad_input_images", "grad_weight_images")}}


# --- batched_gemm: per-image columns and one BLAS product per image ------------------------
# Images go through in chunks whose columns take about CHUNK_BYTES, so that the columns are
# still in cache when the product reads them: as fast as all at once or faster, and the
# workspace stays small (a loop over a handful of chunks, not over images).

CHUNK_BYTES = 256 * 1024


def chunk_images(n: int, groups: int, k: int, p: int, itemsize: int) -> int:
    """How many images' columns (groups * k * p elements each) one chunk holds."""
    return max(1, min(n, CHUNK_BYTES // max(1, groups * k * p * itemsize)))


def _chunks(geo: _Geometry, itemsize: int) -> tuple[int, list[tuple[int, int]]]:
    step = chunk_images(geo.n, geo.groups, geo.k, geo.p, itemsize)
    return step, [(start, min(start + step, geo.n)) for start in range(0, geo.n, step)]


def gemm_forward(x: np.ndarray, w: np.ndarray, *, out: np.ndarray | None = None,
                 workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    geo = _geometry(x.shape, w.shape, attrs)
    product = _target(out, (geo.n, geo.groups, geo.og, geo.p), x.dtype)
    weights, images = _weights(geo, w), np.ascontiguousarray(x)
    step, chunks = _chunks(geo, x.dtype.itemsize)
    cols = _scratch(workspace, (step, geo.groups, geo.k, geo.p), x.dtype)
    address = _gemm_address(images, weights, product)
    if address:  # the whole loop compiled, without the GIL
        _loops()["forward_images"](images, weights, product, cols.reshape(-1), step, *geo.loop_args(), address)
        return _result(product, out, (geo.n, geo.o, geo.ho, geo.wo))
    for start, stop in chunks:
        part = cols[:stop - start]
        _loops()["im2col"](images[start:stop], part.reshape(stop - start, geo.groups * geo.k, geo.p),
                           *geo.loop_args())
        np.matmul(weights, part, out=product[start:stop])  # (G, Og, K) @ (n, G, K, P)
    return _result(product, out, (geo.n, geo.o, geo.ho, geo.wo))


def gemm_grad_input(g: np.ndarray, w: np.ndarray, x: Any, *, out: np.ndarray | None = None,
                    workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    geo = _geometry(x.shape, w.shape, attrs)
    grads = np.ascontiguousarray(g).reshape(geo.n, geo.groups, geo.og, geo.p)
    weights = _weights(geo, w)
    dx = _target(out, (geo.n, geo.c, geo.h, geo.w), g.dtype)
    step, chunks = _chunks(geo, g.dtype.itemsize)
    cols = _scratch(workspace, (step, geo.groups, geo.k, geo.p), g.dtype)
    address = _gemm_address(grads, weights, dx)
    if address:
        _loops()["grad_input_images"](grads, weights, dx, cols.reshape(-1), step, *geo.loop_args(), address)
        return _result(dx, out, (geo.n, geo.c, geo.h, geo.w))
    for start, stop in chunks:
        part = cols[:stop - start]
        np.matmul(weights.transpose(0, 2, 1), grads[start:stop], out=part)  # (n, G, K, P)
        _loops()["col2im"](part.reshape(stop - start, geo.groups * geo.k, geo.p), dx[start:stop],
                           *geo.loop_args())
    return _result(dx, out, (geo.n, geo.c, geo.h, geo.w))


def gemm_grad_weight(x: np.ndarray, g: np.ndarray, w: Any, *, out: np.ndarray | None = None,
                     workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    geo = _geometry(x.shape, w.shape, attrs)
    grads = np.ascontiguousarray(g).reshape(geo.n, geo.groups, geo.og, geo.p)
    images = np.ascontiguousarray(x)
    step, chunks = _chunks(geo, x.dtype.itemsize)
    cols = _scratch(workspace, (step, geo.groups, geo.k, geo.p), x.dtype)
    offset = _aligned(cols.nbytes)
    per_image = _scratch(workspace, (step, geo.groups, geo.og, geo.k), g.dtype, offset)
    offset += _aligned(per_image.nbytes)
    total = _scratch(workspace, (geo.groups, geo.og, geo.k), np.float64, offset)  # summed in float64
    chunk_sum = _scratch(workspace, total.shape, np.float64, offset + _aligned(total.nbytes))
    address = _gemm_address(images, grads, per_image)
    if address:
        part = per_image.reshape(-1)[:total.size].reshape(total.shape)  # the images' float32 sums
        _loops()["grad_weight_images"](images, grads, part, total, cols.reshape(-1), step, *geo.loop_args(), address)
        return weight_result(total.reshape(geo.o, geo.cg, geo.kh, geo.kw), out, g.dtype)
    total.fill(0)
    for start, stop in chunks:
        part, products = cols[:stop - start], per_image[:stop - start]
        _loops()["im2col"](images[start:stop], part.reshape(stop - start, geo.groups * geo.k, geo.p),
                           *geo.loop_args())
        np.matmul(grads[start:stop], part.transpose(0, 1, 3, 2), out=products)  # (n, G, Og, K)
        np.sum(products, axis=0, dtype=np.float64, out=chunk_sum)
        total += chunk_sum
    return weight_result(total.reshape(geo.o, geo.cg, geo.kh, geo.kw), out, g.dtype)


# --- pointwise: a 1x1 convolution is a matrix product per image, with no columns at all -----

def _pointwise(xs: tuple, ws: tuple, attrs: dict[str, Any]) -> bool:
    return ws[2] == ws[3] == 1 and tuple(attrs["padding"]) == (0, 0) and attrs["groups"] == 1


def _pointwise_geometry(x_shape: tuple, w_shape: tuple, attrs: dict[str, Any]) -> _Geometry:
    if not _pointwise(x_shape, w_shape, attrs):  # refuse rather than compute something else
        raise ValueError("pointwise takes 1x1 kernels without padding, in one group")
    return _geometry(x_shape, w_shape, attrs)


def _sampled(x: np.ndarray, attrs: dict[str, Any], workspace: Workspace | None = None) -> np.ndarray:
    """The input positions a 1x1 convolution reads, (N, C, Ho*Wo) (a copy only with stride,
    into the workspace when given)."""
    sh, sw = attrs["stride"]
    if (sh, sw) == (1, 1) and x.flags.c_contiguous:
        return x.reshape(x.shape[0], x.shape[1], -1)
    view = x[:, :, ::sh, ::sw]
    copy = _scratch(workspace, view.shape, x.dtype)
    copy[...] = view
    return copy.reshape(x.shape[0], x.shape[1], -1)


def pointwise_forward(x: np.ndarray, w: np.ndarray, *, out: np.ndarray | None = None,
                      workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    geo = _pointwise_geometry(x.shape, w.shape, attrs)
    product = _target(out, (geo.n, geo.o, geo.p), x.dtype)
    np.matmul(np.ascontiguousarray(w).reshape(geo.o, geo.c), _sampled(x, attrs, workspace), out=product)
    return _result(product, out, (geo.n, geo.o, geo.ho, geo.wo))


def pointwise_grad_input(g: np.ndarray, w: np.ndarray, x: Any, *, out: np.ndarray | None = None,
                         workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    geo = _pointwise_geometry(x.shape, w.shape, attrs)
    transposed = np.ascontiguousarray(w).reshape(geo.o, geo.c).T
    grads = np.ascontiguousarray(g).reshape(geo.n, geo.o, geo.p)
    if tuple(attrs["stride"]) == (1, 1):
        dx = _target(out, (geo.n, geo.c, geo.p), g.dtype)
        np.matmul(transposed, grads, out=dx)
        return _result(dx, out, (geo.n, geo.c, geo.h, geo.w))
    product = _scratch(workspace, (geo.n, geo.c, geo.p), g.dtype)  # the sampled positions' gradient
    np.matmul(transposed, grads, out=product)
    dx = out if out is not None else np.empty((geo.n, geo.c, geo.h, geo.w), g.dtype)
    dx[...] = 0
    sh, sw = attrs["stride"]
    dx[:, :, ::sh, ::sw] = product.reshape(geo.n, geo.c, geo.ho, geo.wo)
    return dx


def pointwise_grad_weight(x: np.ndarray, g: np.ndarray, w: Any, *, out: np.ndarray | None = None,
                          workspace: Workspace | None = None, **attrs: Any) -> np.ndarray:
    geo = _pointwise_geometry(x.shape, w.shape, attrs)
    grads = np.ascontiguousarray(g).reshape(geo.n, geo.o, geo.p)
    sampled = _sampled(x, attrs, workspace)
    per_image = _scratch(workspace, (geo.n, geo.o, geo.c), g.dtype, _aligned(sampled.nbytes))
    np.matmul(grads, sampled.transpose(0, 2, 1), out=per_image)  # (N, O, C)
    total = _scratch(workspace, (geo.o, geo.c), np.float64, _aligned(sampled.nbytes) + _aligned(per_image.nbytes))
    np.sum(per_image, axis=0, dtype=np.float64, out=total)
    return weight_result(total.reshape(geo.o, geo.c, 1, 1), out, g.dtype)


# --- xp: the shared kernel's single large product, over chunks of about XP_CHUNK_BYTES of
# columns: as fast as the whole batch at once on the reference layers (within noise), with
# its scratch (padded input, columns, product) a chunk's instead of the batch's.

XP_CHUNK_BYTES = 512 * 1024


def xp_chunk_images(n: int, groups: int, k: int, p: int, itemsize: int) -> int:
    """How many images the shared kernel takes at once."""
    return max(1, min(n, XP_CHUNK_BYTES // max(1, groups * k * p * itemsize)))


def _shared(op: str) -> Callable[..., np.ndarray]:
    kernel = functools.partial(getattr(conv_kernels, op), np)

    def shared(*arrays: Any, out: np.ndarray | None = None, workspace: Workspace | None = None,
               **attrs: Any) -> np.ndarray:
        x_shape, w_shape = shapes_of(op, arrays)
        geo = _geometry(x_shape, w_shape, attrs)
        step = xp_chunk_images(geo.n, geo.groups, geo.k, geo.p, arrays[0].dtype.itemsize)

        def scratch() -> Callable[..., np.ndarray] | None:  # each call's temporaries, reused
            return workspace.bump() if workspace is not None else None
        if step >= geo.n:
            return kernel(*arrays, out=out, scratch=scratch(), **attrs)
        spans = [(start, min(start + step, geo.n)) for start in range(0, geo.n, step)]
        if op == "conv2d_grad_weight":
            x, g, w = arrays
            # the float64 sum first in the workspace, each chunk's temporaries after it
            total = allocator(workspace)(w.shape, np.float64)
            total.fill(0)
            part = None
            for start, stop in spans:
                allocate = None if workspace is None else workspace.bump(_aligned(total.nbytes))
                if allocate is not None:  # the chunk's result sits past what the kernel takes
                    part = allocate(w.shape, g.dtype)
                total += kernel(x[start:stop], g[start:stop], w, out=part, scratch=allocate, **attrs)
            return weight_result(total, out, g.dtype)
        if op == "conv2d":
            x, w = arrays
            result = out if out is not None else np.empty((geo.n, geo.o, geo.ho, geo.wo), x.dtype)
            for start, stop in spans:
                kernel(x[start:stop], w, out=result[start:stop], scratch=scratch(), **attrs)
            return result
        g, w, x = arrays
        result = out if out is not None else np.empty(x_shape, g.dtype)
        for start, stop in spans:
            kernel(g[start:stop], w, x[start:stop], out=result[start:stop], scratch=scratch(), **attrs)
        return result
    return shared


def _any_shape(x_shape: tuple, w_shape: tuple, attrs: dict[str, Any]) -> bool:
    return True


#: algorithm -> (its kernels in CONV_OPS order: forward, input gradient, weight gradient;
#: applies(x_shape, w_shape, attrs))
_FAMILIES: dict[str, tuple[tuple[Callable[..., np.ndarray], ...], Callable[..., bool]]] = {
    "xp": ((_shared("conv2d"), _shared("conv2d_grad_input"), _shared("conv2d_grad_weight")), _any_shape),
    "batched_gemm": ((gemm_forward, gemm_grad_input, gemm_grad_weight), _any_shape),
    "pointwise": ((pointwise_forward, pointwise_grad_input, pointwise_grad_weight), _pointwise),
    "shifted": ((shifted.shifted_forward, shifted.shifted_grad_input, shifted.shifted_grad_weight), _any_shape),
    "nhwc": ((nhwc.nhwc_forward, nhwc.nhwc_grad_input, nhwc.nhwc_grad_weight), nhwc.applies),
}

#: op -> algorithm -> (kernel taking the step's inputs and attributes, applies(x_shape, w_shape, attrs))
ALGORITHMS: dict[str, dict[str, tuple[Callable[..., np.ndarray], Callable[..., bool]]]] = {
    op: {name: (kernels[k], applies) for name, (kernels, applies) in _FAMILIES.items()}
    for k, op in enumerate(CONV_OPS)
}
