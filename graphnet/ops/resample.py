"""Resampling: interpolation (nearest, bilinear, area) and adaptive max pooling, with PyTorch's index rules.

Each spatial axis of a resampling is a small sparse matrix: output position ``o`` reads a few
input positions ("taps") with weights. The taps of one axis are computed once per (sizes,
mode) on the host with NumPy, in the precision PyTorch uses (nearest indices in float32;
bilinear positions and weights in float32 for float32 and float16 inputs, float64 for
float64), and cached; the kernels then loop only
over the few taps, each a vectorised gather (``xp.take``) along the axis. The adjoint of an
interpolation is the transposed matrix, turned into taps the same way, so gradients are
gathers too (no scatter).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..ir import TensorType
from ..tensor import Tensor
from .common import declare, dims_equal, require_float
from .registry import defop

#: interpolation modes: PyTorch's "nearest" (floor(dst * scale)), "nearest-exact" (floor((dst + 0.5) * scale)),
#: "bilinear" (align_corners False or True) and "area" (adaptive average pooling's windows)
MODES = ("nearest", "nearest-exact", "bilinear", "area")

Taps = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def _opmath(dtype: str) -> type:
    """The float type PyTorch computes source indices and weights in for ``dtype``."""
    return np.float64 if dtype == "float64" else np.float32


def _scale(n_in: int, n_out: int, scale: float, ft: type) -> Any:
    """PyTorch's compute_scales_value: 1 / scale_factor where one was given, else in / out."""
    return ft(1.0 / scale) if scale > 0 else ft(n_in) / ft(n_out)


def windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive pooling's windows: start = floor(o * In / Out), end = ceil((o + 1) * In / Out)."""
    o = np.arange(n_out, dtype=np.int64)
    return (o * n_in) // n_out, ((o + 1) * n_in + n_out - 1) // n_out


def _window_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(index (Out, T), valid (Out, T)): each window's positions, the last repeated to fill T taps."""
    start, end = windows(n_in, n_out)
    width = int((end - start).max())
    pos = start[:, None] + np.arange(width)[None, :]
    return np.minimum(pos, end[:, None] - 1), pos < end[:, None]


@functools.lru_cache(maxsize=512)
def axis_taps(mode: str, n_in: int, n_out: int, align_corners: bool, scale: float, dtype: str) -> Taps:
    """The taps of one axis: (index (Out, T) int64, weight (Out, T), valid (Out, T) bool or None when every
    tap is used). Weights are in ``dtype``; a tap that is not valid has weight 0 and must not be read."""
    ft = _opmath(dtype)
    o = np.arange(n_out)
    valid = None
    if mode in ("nearest", "nearest-exact"):
        # PyTorch computes nearest indices in float32 whatever the dtype; "nearest" copies at equal
        # sizes and halves at double sizes, whatever the scale factor
        s = _scale(n_in, n_out, scale, np.float32)
        if mode == "nearest" and n_out == n_in:
            src = o
        elif mode == "nearest" and n_out == 2 * n_in:
            src = o // 2
        elif mode == "nearest":
            src = np.floor(o.astype(np.float32) * s)
        else:  # (dst + 0.5) * scale in double, rounded to float32 before the floor
            src = np.floor(((o + 0.5) * np.float64(s)).astype(np.float32))
        src = np.minimum(src.astype(np.int64), n_in - 1)
        index, weight = src[:, None], np.ones((n_out, 1), ft)
    elif mode == "bilinear":
        if n_out == n_in:  # PyTorch copies: both taps on the same position
            i0, i1, lam1 = o, o, np.zeros(n_out, ft)
        else:
            if align_corners:
                ratio = ft(n_in - 1) / ft(n_out - 1) if n_out > 1 else ft(0)
                real = ratio * o.astype(ft)
            else:
                ratio = _scale(n_in, n_out, scale, ft)
                real = np.maximum(ratio * (o.astype(ft) + ft(0.5)) - ft(0.5), ft(0))
            i0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
            lam1 = np.clip(real - i0.astype(ft), ft(0), ft(1)).astype(ft)
            i1 = i0 + (i0 < n_in - 1)
        index, weight = np.stack([i0, i1], 1), np.stack([ft(1) - lam1, lam1], 1)
    elif mode == "area":
        index, valid = _window_taps(n_in, n_out)
        weight = np.where(valid, ft(1) / valid.sum(1, keepdims=True).astype(ft), ft(0)).astype(ft)
        if valid.all():
            valid = None
    else:
        raise ShapeError(f"mode must be one of {MODES}, got {mode!r}")
    return _frozen(index.astype(np.int64), weight.astype(dtype), valid)


@functools.lru_cache(maxsize=512)
def adjoint_taps(mode: str, n_in: int, n_out: int, align_corners: bool, scale: float, dtype: str) -> Taps:
    """The taps of the transposed matrix (In, T'): where each input position's gradient comes from."""
    index, weight, valid = axis_taps(mode, n_in, n_out, align_corners, scale, dtype)
    dense = np.zeros((n_out, n_in), np.float64)
    used = np.ones(index.shape, bool) if valid is None else valid
    rows = np.broadcast_to(np.arange(n_out)[:, None], index.shape)
    np.add.at(dense, (rows[used], index[used]), weight[used].astype(np.float64))
    dense = dense.T
    nonzero = dense != 0
    width = max(int(nonzero.sum(1).max()), 1)
    order = np.argsort(~nonzero, axis=1, kind="stable")[:, :width]
    t_valid = np.take_along_axis(nonzero, order, 1)
    return _frozen(order.astype(np.int64), np.take_along_axis(dense, order, 1).astype(dtype),
                   None if t_valid.all() else t_valid)


def _frozen(*arrays: Any) -> Any:
    for a in arrays:
        if a is not None:
            a.setflags(write=False)
    return arrays


def apply_taps(xp: Any, x: Any, axis: int, taps: Taps) -> Any:
    """sum over taps t of weight[:, t] * x gathered at index[:, t] along ``axis`` (2 or 3)."""
    index, weight, valid = taps
    shape = (-1, 1) if axis == x.ndim - 2 else (-1,)
    unit = bool(np.all(weight == 1)) and valid is None
    out = None
    for t in range(index.shape[1]):
        v = xp.take(x, xp.asarray(index[:, t]), axis=axis)
        if not unit:
            v *= xp.asarray(weight[:, t]).reshape(shape)
            if valid is not None and not valid[:, t].all():
                v = xp.where(xp.asarray(valid[:, t]).reshape(shape), v, v.dtype.type(0))
        if out is None:
            out = v
        else:
            out += v
    return out


# --- interpolate2d: the linear resampling op, and its adjoint -----------------------------------

_INTERP_ATTRS = {"mode": "str", "size": "pair", "align_corners": "bool", "scale_h": "float", "scale_w": "float"}


def _check_interp(x: TensorType, mode: str, size: tuple, align_corners: bool) -> None:
    if x.ndim != 4:
        raise ShapeError(f"expected input of shape (N, C, H, W), got {x.ndim}-d")
    require_float(x)
    if mode not in MODES:
        raise ShapeError(f"mode must be one of {MODES}, got {mode!r}")
    if min(size) < 1:
        raise ShapeError(f"output size must be >= 1, got {size}")
    if align_corners and mode != "bilinear":
        raise ShapeError(f"align_corners applies to mode 'bilinear' only, not {mode!r}")


def _interp_infer(x: TensorType, *, mode: str, size: tuple, align_corners: bool, scale_h: float,
                  scale_w: float) -> TensorType:
    _check_interp(x, mode, size, align_corners)
    return TensorType(x.shape[:2] + tuple(size), x.dtype)


def _interp_kernel(xp: Any, x: Any, *, mode: str, size: tuple, align_corners: bool, scale_h: float,
                   scale_w: float) -> Any:
    dtype = x.dtype.name
    # along W first, then H: PyTorch's bilinear weighs each row's pair, then the two rows
    y = apply_taps(xp, x, 3, axis_taps(mode, x.shape[3], size[1], align_corners, scale_w, dtype))
    return apply_taps(xp, y, 2, axis_taps(mode, x.shape[2], size[0], align_corners, scale_h, dtype))


def _interp_grad_infer(g: TensorType, x: TensorType, **attrs: Any) -> TensorType:
    y = _interp_infer(x, **attrs)
    if g.ndim != 4 or g.dtype != x.dtype or not all(dims_equal(a, b) for a, b in zip(g.shape, y.shape)):
        raise ShapeError(f"interpolate2d_grad: gradient {g} does not fit the output {y}")
    return x


def _interp_grad_kernel(xp: Any, g: Any, x: Any, *, mode: str, size: tuple, align_corners: bool, scale_h: float,
                        scale_w: float) -> Any:
    dtype = g.dtype.name
    y = apply_taps(xp, g, 3, adjoint_taps(mode, x.shape[3], size[1], align_corners, scale_w, dtype))
    return apply_taps(xp, y, 2, adjoint_taps(mode, x.shape[2], size[0], align_corners, scale_h, dtype))


defop("interpolate2d", attrs=_INTERP_ATTRS, category="other", infer=_interp_infer, kernel=_interp_kernel,
      grad=lambda g, out, ins, **a: (declare("interpolate2d_grad", [g, ins[0]], a),),
      doc="Resampling of (N, C, H, W) to (N, C, *size): nearest, nearest-exact, bilinear or area (PyTorch's rules).")
# linear in g: its adjoint is interpolate2d itself
defop("interpolate2d_grad", attrs=_INTERP_ATTRS, category="other", shape_only=(1,), infer=_interp_grad_infer,
      kernel=_interp_grad_kernel, grad=lambda h, out, ins, **a: (declare("interpolate2d", [h], a), None),
      doc="The adjoint of interpolate2d (its gradient); x only for its shape.")


def _pair_or_none(v: Any, what: str) -> tuple | None:
    if v is None:
        return None
    pair = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(pair) != 2:
        raise ShapeError(f"{what} must be a number or a pair for a 4-d input, got {v!r}")
    return pair


def interpolate(x: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resample x (N, C, H, W) to (N, C, Ho, Wo), as PyTorch's ``F.interpolate``.

    Give ``size`` (an int or a pair) or ``scale_factor`` (a number or a pair: Ho = floor(H *
    scale), which needs static H and W). ``mode``: "nearest" (source floor(dst * scale), PyTorch's
    default), "nearest-exact" (floor((dst + 0.5) * scale)), "bilinear" (``align_corners``
    False, the default, or True) or "area" (adaptive average pooling). With a ``scale_factor``,
    the source positions use it (1 / scale_factor), unless ``recompute_scale_factor`` is True
    (then In / Out, as with ``size``).
    """
    if x.ndim != 4:
        raise ShapeError(f"interpolate supports 4-d (N, C, H, W) input, got shape {x.shape}")
    if mode not in MODES:
        raise ShapeError(f"interpolate: mode must be one of {MODES}, got {mode!r}")
    if antialias:
        raise ShapeError("interpolate: antialias=True is not supported")
    if mode != "bilinear" and align_corners is not None:
        raise ShapeError(f"interpolate: align_corners can only be set with mode 'bilinear', not {mode!r}")
    if (size is None) == (scale_factor is None):
        raise ShapeError("interpolate: give exactly one of size and scale_factor")
    if recompute_scale_factor and size is not None:
        raise ShapeError("interpolate: recompute_scale_factor applies only with scale_factor")
    scales = (0.0, 0.0)
    if size is not None:
        pair = _pair_or_none(size, "size")
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
            raise ShapeError(f"interpolate: size must be an int or a pair of ints, got {size!r}")
        out = (int(pair[0]), int(pair[1]))
    else:
        factors = _pair_or_none(scale_factor, "scale_factor")
        if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and v > 0 for v in factors):
            raise ShapeError(f"interpolate: scale_factor must be positive numbers, got {scale_factor!r}")
        spatial = x.shape[2:]
        if not all(isinstance(d, int) for d in spatial):
            raise ShapeError(f"interpolate with scale_factor needs static spatial sizes, got {x.shape}; give size")
        out = tuple(int(np.floor(float(d) * float(f))) for d, f in zip(spatial, factors))
        if mode != "area" and not recompute_scale_factor:
            scales = (float(factors[0]), float(factors[1]))
    if min(out) < 1:
        raise ShapeError(f"interpolate: output size {out} must be >= 1")
    attrs = {"mode": mode, "size": out, "align_corners": bool(align_corners), "scale_h": scales[0],
             "scale_w": scales[1]}
    return declare("interpolate2d", [x], attrs)


# --- adaptive max pooling ---------------------------------------------------------------------------


def _amax_infer(x: TensorType, *, output_size: tuple) -> TensorType:
    if x.ndim != 4:
        raise ShapeError(f"expected input of shape (N, C, H, W), got {x.ndim}-d")
    require_float(x)
    if min(output_size) < 1:
        raise ShapeError(f"output_size must be >= 1, got {output_size}")
    return TensorType(x.shape[:2] + tuple(output_size), x.dtype)


def _max_along(xp: Any, x: Any, axis: int, index: np.ndarray, with_arg: bool) -> tuple[Any, Any]:
    """The maximum over each window's taps along ``axis`` (NaN wins, as in PyTorch) and, with
    ``with_arg``, its position: the first maximum, or the last NaN."""
    shape = (-1, 1) if axis == 2 else (-1,)
    best = xp.take(x, xp.asarray(index[:, 0]), axis=axis)
    arg = xp.broadcast_to(xp.asarray(index[:, 0]).reshape(shape), best.shape) if with_arg else None
    for t in range(1, index.shape[1]):
        v = xp.take(x, xp.asarray(index[:, t]), axis=axis)
        if with_arg:
            better = (v > best) | (v != v)
            best = xp.where(better, v, best)
            arg = xp.where(better, xp.asarray(index[:, t]).reshape(shape), arg)
        else:
            best = xp.maximum(best, v)
    return best, arg


def _amax_argmax(xp: Any, x: Any, output_size: tuple) -> tuple[Any, Any]:
    """(pooled values, each window's arg-max as a flat position h * W + w within its (H, W) plane)."""
    rows, _ = _window_taps(x.shape[2], output_size[0])
    cols, _ = _window_taps(x.shape[3], output_size[1])
    along_w, arg_w = _max_along(xp, x, 3, cols, True)  # (N, C, H, Wo)
    best, arg_h = _max_along(xp, along_w, 2, rows, True)  # (N, C, Ho, Wo)
    return best, arg_h * x.shape[3] + xp.take_along_axis(arg_w, arg_h, axis=2)


def _amax_kernel(xp: Any, x: Any, *, output_size: tuple) -> Any:
    rows, _ = _window_taps(x.shape[2], output_size[0])
    cols, _ = _window_taps(x.shape[3], output_size[1])
    return _max_along(xp, _max_along(xp, x, 3, cols, False)[0], 2, rows, False)[0]


def _amax_grad_infer(g: TensorType, x: TensorType, *, output_size: tuple) -> TensorType:
    y = _amax_infer(x, output_size=output_size)
    if g.ndim != 4 or g.dtype != x.dtype or not all(dims_equal(a, b) for a, b in zip(g.shape, y.shape)):
        raise ShapeError(f"adaptive_max_pool2d_grad: gradient {g} does not fit the output {y}")
    return x


def _amax_grad_kernel(xp: Any, g: Any, x: Any, *, output_size: tuple) -> Any:
    """g added at each window's arg-max (windows may overlap, so several may add to one input)."""
    n, c, h, w = x.shape
    _, flat = _amax_argmax(xp, x, output_size)
    planes = xp.arange(n * c).reshape(n, c, 1, 1) * (h * w)
    summed = xp.bincount((flat + planes).ravel(), weights=g.ravel(), minlength=n * c * h * w)
    return summed.reshape(x.shape).astype(x.dtype, copy=False)


def _amax_select_infer(h: TensorType, x: TensorType, *, output_size: tuple) -> TensorType:
    if h.ndim != 4 or h.dtype != x.dtype or not all(dims_equal(a, b) for a, b in zip(h.shape, x.shape)):
        raise ShapeError(f"adaptive_max_pool2d_select: {h} does not have the input's shape {x}")
    return _amax_infer(x, output_size=output_size)


def _amax_select_kernel(xp: Any, h: Any, x: Any, *, output_size: tuple) -> Any:
    n, c = x.shape[:2]
    _, flat = _amax_argmax(xp, x, output_size)
    picked = xp.take_along_axis(h.reshape(n, c, -1), flat.reshape(n, c, -1), axis=2)
    return picked.reshape(flat.shape)


defop("adaptive_max_pool2d", attrs={"output_size": "pair"}, category="conv", infer=_amax_infer, kernel=_amax_kernel,
      grad=lambda g, out, ins, **a: (declare("adaptive_max_pool2d_grad", [g, ins[0]], a),),
      doc="Max pooling of (N, C, H, W) to (N, C, *output_size) over PyTorch's adaptive windows.")
# linear in g (its adjoint reads h at each window's arg-max), piecewise constant in x
defop("adaptive_max_pool2d_grad", attrs={"output_size": "pair"}, category="conv", infer=_amax_grad_infer,
      kernel=_amax_grad_kernel,
      grad=lambda h, out, ins, **a: (declare("adaptive_max_pool2d_select", [h, ins[1]], a), None),
      doc="The gradient of adaptive_max_pool2d: g added at each window's arg-max of x.")
defop("adaptive_max_pool2d_select", attrs={"output_size": "pair"}, category="conv", infer=_amax_select_infer,
      kernel=_amax_select_kernel,
      grad=lambda g, out, ins, **a: (declare("adaptive_max_pool2d_grad", [g, ins[1]], a), None),
      doc="h read at each adaptive window's arg-max of x: the adjoint of adaptive_max_pool2d_grad.")
