"""Pooling beyond the 2-d kernels: ceil_mode, count_include_pad, dilation, 1-d and adaptive pools.

Adaptive pools use PyTorch's windows for any sizes; their ops (``interpolate2d`` in mode "area",
``adaptive_max_pool2d``) live in resample.py.

The defaults call the ``max_pool2d`` / ``avg_pool2d`` kernels directly; the other options
are composed from them (and from pad, slices and maximum), so their gradients come for free.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..tensor import Tensor, constant
from . import resample  # noqa: F401  (registers interpolate2d and adaptive_max_pool2d)
from .common import declare
from .elementwise import maximum
from .nn import _pair, avg_pool2d, max_pool2d
from .reduce import expand_dims, mean, squeeze
from .shape import pad, slice_


def _out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    if span < 0:
        raise ShapeError(f"spatial size {size} is too small for kernel {k} (padding {p}, dilation {d})")
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:  # the last window must start inside the input or left padding
        out -= 1
    return out


def _geometry(x: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool) -> tuple:
    if x.ndim != 4:
        raise ShapeError(f"expected input of shape (N, C, H, W), got {x.shape}")
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    p, d = _pair(padding, "padding"), _pair(dilation, "dilation")
    if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ShapeError(f"kernel_size, stride and dilation must be >= 1 and padding >= 0, got {k}, {s}, {d}, {p}")
    if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        raise ShapeError(f"padding {p} must be at most half of kernel_size {k}")
    sizes = x.shape[2:]
    if not all(isinstance(v, int) for v in sizes):
        raise ShapeError(f"ceil_mode, dilation and count_include_pad=False need static spatial sizes, got {x.shape}")
    out = tuple(_out(sizes[i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(2))
    # padding after the input: the declared padding, plus what the last (ceil) window overhangs
    after = tuple(max(0, (out[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - sizes[i] - p[i]) for i in range(2))
    return k, s, p, d, out, after


def max_pool2d_ext(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                   ceil_mode: bool = False) -> Tensor:
    """Max pooling as PyTorch's ``F.max_pool2d``, with ``dilation`` and ``ceil_mode``."""
    if _pair(dilation, "dilation") == (1, 1) and not ceil_mode:
        return max_pool2d(x, kernel_size, stride, padding)
    k, s, p, d, out, after = _geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    padded = pad(x, ((0, 0), (0, 0), (p[0], after[0]), (p[1], after[1])), value=-math.inf)
    if d == (1, 1):
        return max_pool2d(padded, k, s, 0)
    result = None
    for i in range(k[0]):  # dilated windows: one strided view per kernel tap
        for j in range(k[1]):
            view = slice_(padded, ((None, None, None), (None, None, None),
                                   (i * d[0], i * d[0] + (out[0] - 1) * s[0] + 1, s[0]),
                                   (j * d[1], j * d[1] + (out[1] - 1) * s[1] + 1, s[1])))
            result = view if result is None else maximum(result, view)
    return result


def avg_pool2d_ext(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                   count_include_pad: bool = True) -> Tensor:
    """Average pooling as PyTorch's ``F.avg_pool2d``, with ``ceil_mode`` and ``count_include_pad``."""
    if not ceil_mode and count_include_pad:
        return avg_pool2d(x, kernel_size, stride, padding)
    k, s, p, _, out, after = _geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    padded = pad(x, ((0, 0), (0, 0), (p[0], after[0]), (p[1], after[1])))
    sums = avg_pool2d(padded, k, s, 0) * float(k[0] * k[1])
    counts = np.ones(out, np.float64)
    for axis in range(2):  # window sizes along each axis, clipped to what counts as input
        size = x.shape[2 + axis]
        lo, hi = (0, size) if not count_include_pad else (-p[axis], size + p[axis])
        starts = np.arange(out[axis]) * s[axis] - p[axis]
        n = np.minimum(starts + k[axis], hi) - np.maximum(starts, lo)
        counts *= n[:, None] if axis == 0 else n[None, :]
    return sums / constant(counts.astype(x.dtype))


def _as_2d(x: Tensor, what: str) -> Tensor:
    if x.ndim != 3:
        raise ShapeError(f"{what} expects (N, C, L) input, got {x.shape}")
    return expand_dims(x, 2)


def max_pool1d(x: Tensor, kernel_size: int, stride: int | None = None, padding: int = 0, dilation: int = 1,
               ceil_mode: bool = False) -> Tensor:
    """1-d max pooling: x (N, C, L) -> (N, C, Lo)."""
    y = max_pool2d_ext(_as_2d(x, "max_pool1d"), (1, kernel_size), (1, stride or kernel_size), (0, padding),
                       (1, dilation), ceil_mode)
    return squeeze(y, 2)


def avg_pool1d(x: Tensor, kernel_size: int, stride: int | None = None, padding: int = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """1-d average pooling: x (N, C, L) -> (N, C, Lo)."""
    y = avg_pool2d_ext(_as_2d(x, "avg_pool1d"), (1, kernel_size), (1, stride or kernel_size), (0, padding),
                       ceil_mode, count_include_pad)
    return squeeze(y, 2)


def _adaptive(x: Tensor, output_size: Any, what: str) -> tuple[Tensor, tuple[int, int], bool]:
    """(x as (N, C, H, W), the output size with None resolved, whether x was an unbatched (C, H, W))."""
    if x.ndim not in (3, 4):
        raise ShapeError(f"{what} expects (N, C, H, W) or (C, H, W) input, got {x.shape}")
    size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(size) != 2 or not all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in size):
        raise ShapeError(f"{what}: output_size must be an int or a pair of ints (or None), got {output_size!r}")
    spatial = x.shape[-2:]
    target = tuple(spatial[i] if size[i] is None else int(size[i]) for i in range(2))
    if not all(isinstance(t, int) for t in target):
        raise ShapeError(f"{what}: output_size None keeps a dim, which must then be static; got input {x.shape}")
    if min(target) < 1:
        raise ShapeError(f"{what}: output_size must be >= 1, got {target}")
    return (expand_dims(x, 0) if x.ndim == 3 else x), target, x.ndim == 3  # type: ignore[return-value]


def adaptive_avg_pool2d(x: Tensor, output_size: Any) -> Tensor:
    """Average pooling of x (N, C, H, W) or (C, H, W) to ``output_size`` (an int or a pair; None keeps
    that dim), over PyTorch's windows: output ``i`` averages input rows floor(i * H / Ho) to
    ceil((i + 1) * H / Ho) - 1 (and likewise columns), so any sizes work, also larger than the input's.

    An output of 1 is a mean, sizes dividing the input's an ``avg_pool2d``, others one
    ``interpolate2d`` step in mode "area" (which also takes symbolic spatial sizes).
    """
    x4, target, unbatched = _adaptive(x, output_size, "adaptive_avg_pool2d")
    spatial = x4.shape[2:]
    if target == (1, 1):
        y = mean(x4, (2, 3), keepdims=True)
    elif all(isinstance(v, int) for v in spatial) and not any(h % o for h, o in zip(spatial, target)):
        kernel = tuple(h // o for h, o in zip(spatial, target))
        y = avg_pool2d(x4, kernel, kernel, 0)
    else:
        y = declare("interpolate2d", [x4], {"mode": "area", "size": target, "align_corners": False,
                                             "scale_h": 0.0, "scale_w": 0.0})
    return squeeze(y, 0) if unbatched else y


def adaptive_max_pool2d(x: Tensor, output_size: Any, return_indices: bool = False) -> Tensor:
    """Max pooling of x (N, C, H, W) or (C, H, W) to ``output_size`` (an int or a pair; None keeps that
    dim) over PyTorch's adaptive windows (rows floor(i * H / Ho) to ceil((i + 1) * H / Ho) - 1), which may
    overlap when the sizes do not divide: the gradient goes to each window's first maximum, summed
    where windows share it. ``return_indices=True`` is not supported.
    """
    if return_indices:
        raise ShapeError("adaptive_max_pool2d: return_indices=True is not supported")
    x4, target, unbatched = _adaptive(x, output_size, "adaptive_max_pool2d")
    y = declare("adaptive_max_pool2d", [x4], {"output_size": target})
    return squeeze(y, 0) if unbatched else y
