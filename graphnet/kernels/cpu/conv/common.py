"""What the CPU convolution algorithms share: a convolution's sizes, the scratch workspace the
executor lends them, and how a kernel writes into ``out=``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ....ops import conv_kernels


class _Geometry:
    """Sizes of one convolution, from the input and weight shapes and the step's attributes."""

    def __init__(self, x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: tuple, padding: tuple,
                 dilation: tuple, groups: int) -> None:
        self.n, self.c, self.h, self.w = (int(v) for v in x_shape)
        self.o, self.cg, self.kh, self.kw = (int(v) for v in w_shape)
        self.groups = int(groups)
        self.sh, self.sw = stride
        self.ph, self.pw = padding
        self.dh, self.dw = dilation
        if self.c % self.groups or self.o % self.groups or self.cg != self.c // self.groups:
            raise ValueError(f"conv2d: incompatible shapes x{tuple(x_shape)} w{tuple(w_shape)} groups={groups}")
        self.ho = conv_kernels._out_size(self.h, self.kh, self.sh, self.ph, self.dh)
        self.wo = conv_kernels._out_size(self.w, self.kw, self.sw, self.pw, self.dw)
        if self.ho < 1 or self.wo < 1:
            raise ValueError("conv2d: kernel larger than (padded) input")
        self.og = self.o // self.groups
        self.k = self.cg * self.kh * self.kw  # one group's column count
        self.p = self.ho * self.wo

    def loop_args(self) -> tuple[int, ...]:
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw, self.ho, self.wo)


class Workspace:
    """Scratch memory the convolution kernels of one executor share (their column matrices):
    one buffer, grown to the largest request and then reused, so a steady-state step asks
    the allocator for none of it (and touches no fresh pages). The executor runs one step
    at a time, so no two kernels use it at once."""

    def __init__(self) -> None:
        self._buffer = np.empty(0, np.uint8)
        self._start = 0  # where the buffer's first 64-byte boundary is

    @property
    def nbytes(self) -> int:
        return self._buffer.nbytes

    def array(self, shape: tuple[int, ...], dtype: Any, offset: int = 0) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` from byte ``offset`` of the buffer
        (64-byte aligned); a second array in use at once takes an offset past the first."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize  # (called per kernel call: no numpy reductions)
        if self._start + offset + nbytes > self._buffer.nbytes:
            # arrays handed out before keep the old buffer alive for as long as they are used
            self._buffer = np.empty(offset + nbytes + 64, np.uint8)
            self._start = (-self._buffer.ctypes.data) % 64
        start = self._start + offset
        return self._buffer[start:start + nbytes].view(dtype).reshape(shape)

    def bump(self, start: int = 0) -> Callable[[tuple[int, ...], Any], np.ndarray]:
        """An allocator handing out successive, non-overlapping arrays of the buffer from byte
        ``start`` on: the ``scratch`` of one shared-kernel call (its padded input, columns and
        product)."""
        used = start

        def allocate(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            nonlocal used
            array = self.array(shape, dtype, used)
            used += _aligned(array.nbytes)
            return array
        return allocate


def allocator(workspace: Workspace | None) -> Callable[[tuple[int, ...], Any], np.ndarray]:
    """Successive, non-overlapping arrays of ``workspace`` (``Workspace.bump``), or fresh
    arrays without one."""
    if workspace is None:
        return lambda shape, dtype: np.empty(shape, dtype)
    return workspace.bump()


def _scratch(workspace: Workspace | None, shape: tuple[int, ...], dtype: Any, offset: int = 0) -> np.ndarray:
    return np.empty(shape, dtype) if workspace is None else workspace.array(shape, dtype, offset)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // 64) * 64 + 64


def _geometry(x_shape: tuple, w_shape: tuple, attrs: dict[str, Any]) -> _Geometry:
    return _Geometry(x_shape, w_shape, attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])


def _weights(geo: _Geometry, w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w).reshape(geo.groups, geo.og, geo.k)


def _target(out: np.ndarray | None, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``out`` when a kernel may write into it directly, else a new array."""
    if out is not None and out.flags.c_contiguous:
        return out.reshape(shape)
    return np.empty(shape, dtype)


def _result(value: np.ndarray, out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return value.reshape(shape)
    if not np.shares_memory(value, out):
        np.copyto(out, value.reshape(shape))
    return out


def weight_result(total: np.ndarray, out: np.ndarray | None, dtype: Any) -> np.ndarray:
    """A weight gradient summed in float64 (any layout), rounded once to ``dtype``: written
    into ``out`` when given, else a new C-contiguous array."""
    if out is None:
        return np.ascontiguousarray(total, dtype=dtype)
    np.copyto(out, total, casting="same_kind")
    return out


def _gemm_address(*arrays: np.ndarray) -> int:
    """The BLAS product the compiled chunk loops (nhwc_chunks, image_chunks) call
    for these arrays' dtype, or 0: then the chunks run in Python (blas.py says where)."""
    dtype = arrays[0].dtype
    if any(a.dtype != dtype for a in arrays):
        return 0
    from ..blas import gemm_address

    return gemm_address(dtype)


def shapes_of(op: str, arrays: tuple[Any, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input shape, weight shape) of a convolution step from its input arrays."""
    if op == "conv2d":
        return tuple(arrays[0].shape), tuple(arrays[1].shape)
    if op == "conv2d_grad_input":
        return tuple(arrays[2].shape), tuple(arrays[1].shape)
    return tuple(arrays[0].shape), tuple(arrays[2].shape)
