"""Reductions (sum, mean, max) and the broadcasting ops their gradients need."""

from __future__ import annotations

import math
from typing import Any

from .. import dtypes
from ..errors import ShapeError
from ..ir import Shape, TensorType
from ..tensor import Tensor
from .common import broadcast_shapes, declare, normalize_axes, prod, require_float


def _reduce_infer(t: TensorType, *, axes: tuple[int, ...], keepdims: bool) -> TensorType:
    for a in axes:
        if not 0 <= a < t.ndim:
            raise ShapeError(f"axis {a} is out of range for a {t.ndim}-d input")
    if keepdims:
        shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape))
    else:
        shape = tuple(d for i, d in enumerate(t.shape) if i not in axes)
    return TensorType(shape, t.dtype)


def _restore(g: Tensor, x: Tensor, axes: tuple[int, ...], keepdims: bool) -> Tensor:
    """``g`` reshaped so that it broadcasts against ``x`` again."""
    return g if keepdims or not axes else expand_dims(g, axes)


def _sum_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...], axes: tuple[int, ...], keepdims: bool) -> tuple:
    return (broadcast_like(_restore(g, ins[0], axes, keepdims), ins[0]),)


def _mean_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...], axes: tuple[int, ...], keepdims: bool) -> tuple:
    x = ins[0]
    return (broadcast_like(_restore(g, x, axes, keepdims) / numel(x, axes), x),)


def _max_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...], axes: tuple[int, ...], keepdims: bool) -> tuple:
    # ties share the gradient equally, as jnp.max and torch.amax do
    x = ins[0]
    from .elementwise import equal

    mask = equal(x, _restore(out, x, axes, keepdims)).astype(x.dtype)
    share = mask / sum(mask, axes, keepdims=True)
    return (share * _restore(g, x, axes, keepdims),)


def _sum_kernel(xp: Any, x: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
    return xp.sum(x, axis=axes, keepdims=keepdims)


def _mean_kernel(xp: Any, x: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
    errstate = getattr(xp, "errstate", None)
    if errstate is None:
        result = xp.mean(x, axis=axes, keepdims=keepdims)
    else:
        with errstate(over="ignore"):  # an overflowing float32 sum is redone below
            result = xp.mean(x, axis=axes, keepdims=keepdims)
    if x.dtype.kind == "f" and x.dtype.itemsize < 8 and not bool(xp.all(xp.isfinite(result))):
        # a float32 sum can overflow where the mean cannot (values near 3e38): accumulate in float64
        wide = xp.mean(x, axis=axes, keepdims=keepdims, dtype="float64")
        result = xp.where(xp.isfinite(wide), wide, result).astype(x.dtype)
    return result


def _max_kernel(xp: Any, x: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
    # an empty axis gives -inf (ONNX's ReduceMax), not an error
    lowest = -math.inf if x.dtype.kind == "f" else xp.iinfo(x.dtype).min if x.dtype.kind in "iu" else False
    return xp.max(x, axis=axes, keepdims=keepdims, initial=lowest)


from .registry import defop  # noqa: E402

defop("sum", reduction="sum", attrs={"axes": "ints", "keepdims": "bool"}, category="reduction", infer=_reduce_infer, kernel=_sum_kernel, grad=_sum_grad)
defop("mean", reduction="mean", attrs={"axes": "ints", "keepdims": "bool"}, category="reduction", infer=lambda t, **a: (require_float(t), _reduce_infer(t, **a))[1], kernel=_mean_kernel, grad=_mean_grad)
defop("max", attrs={"axes": "ints", "keepdims": "bool"}, category="reduction", infer=_reduce_infer, kernel=_max_kernel, grad=_max_grad)


def sum(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (None: all axes). (N, C) -> (C,) with axis=0."""
    return declare("sum", [x], {"axes": normalize_axes(axis, x.ndim), "keepdims": bool(keepdims)})


def mean(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (None: all axes)."""
    return declare("mean", [x], {"axes": normalize_axes(axis, x.ndim), "keepdims": bool(keepdims)})


def max(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis`` (None: all axes); the gradient is shared among ties; -inf over an empty axis."""
    return declare("max", [x], {"axes": normalize_axes(axis, x.ndim), "keepdims": bool(keepdims)})


def min(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Minimum over ``axis`` (None: all axes); +inf over an empty axis."""
    from .elementwise import neg

    return neg(max(neg(x), axis, keepdims))


# --- the count of reduced elements, known only at run time for symbolic dims ---------------

def _numel_infer(t: TensorType, *, axes: tuple[int, ...]) -> TensorType:
    return TensorType((), t.dtype if dtypes.is_float(t.dtype) else "float32")


def _numel_kernel(xp: Any, x: Any, axes: tuple[int, ...]) -> Any:
    count = 1
    for a in axes:
        count *= x.shape[a]
    return xp.asarray(count, dtype=x.dtype if x.dtype.kind == "f" else "float32")


defop("numel", attrs={"axes": "ints"}, category="other", infer=_numel_infer, kernel=_numel_kernel, grad=lambda g, out, ins, axes: (None,))


def numel(x: Tensor, axis: Any = None) -> Tensor:
    """Number of elements of ``x`` along ``axis`` as a scalar of x's float dtype."""
    axes = normalize_axes(axis, x.ndim)
    static = prod([x.shape[a] for a in axes])
    if static is not None:
        from ..tensor import constant

        return constant(float(static), x.dtype if dtypes.is_float(x.dtype) else "float32")
    return declare("numel", [x], {"axes": axes})


# --- expand_dims / squeeze ------------------------------------------------------------------

def _expand_infer(t: TensorType, *, axes: tuple[int, ...]) -> TensorType:
    shape = list(t.shape)
    for a in axes:
        shape.insert(a, 1)
    return TensorType(tuple(shape), t.dtype)


def _squeeze_infer(t: TensorType, *, axes: tuple[int, ...]) -> TensorType:
    for a in axes:
        if t.shape[a] not in (1, None) and not isinstance(t.shape[a], str):
            raise ShapeError(f"cannot squeeze axis {a} of size {t.shape[a]}")
    return TensorType(tuple(d for i, d in enumerate(t.shape) if i not in axes), t.dtype)


defop("expand_dims", attrs={"axes": "ints"}, category="layout", views=((0, 0),), infer=_expand_infer, kernel=lambda xp, x, axes: xp.expand_dims(x, axes),
      grad=lambda g, out, ins, axes: (squeeze(g, axes),))
defop("squeeze", attrs={"axes": "ints"}, category="layout", views=((0, 0),), infer=_squeeze_infer, kernel=lambda xp, x, axes: xp.squeeze(x, axes),
      grad=lambda g, out, ins, axes: (expand_dims(g, axes),))


def expand_dims(x: Tensor, axis: Any) -> Tensor:
    """Insert size-1 axes at ``axis`` (positions in the result)."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    ndim = x.ndim + len(axes)
    return declare("expand_dims", [x], {"axes": tuple(sorted(a % ndim for a in axes))})


def squeeze(x: Tensor, axis: Any = None) -> Tensor:
    """Remove size-1 axes (all statically known ones when ``axis`` is None)."""
    if axis is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    else:
        axes = normalize_axes(axis, x.ndim)
    return declare("squeeze", [x], {"axes": axes})


# --- broadcasting and its adjoint -----------------------------------------------------------

def _broadcast_to_infer(t: TensorType, *, shape: Shape) -> TensorType:
    out = broadcast_shapes(t.shape, shape)
    if len(t.shape) > len(shape) or any(isinstance(a, int) and isinstance(b, int) and a != b
                                        for a, b in zip(out, shape)):
        raise ShapeError(f"cannot broadcast {t.shape} to {shape}")
    return TensorType(tuple(shape), t.dtype)


def _broadcast_like_infer(t: TensorType, like: TensorType) -> TensorType:
    return TensorType(broadcast_shapes(t.shape, like.shape), t.dtype)


def _sum_to_infer(t: TensorType, *, shape: Shape) -> TensorType:
    if len(shape) > len(t.shape):
        raise ShapeError(f"cannot sum {t.shape} down to {shape}")
    return TensorType(tuple(shape), t.dtype)


def _sum_to_kernel(xp: Any, x: Any, shape: Shape, out: Any = None) -> Any:
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1
    )
    if not axes:
        if out is None:
            return x
        out[...] = x
        return out
    if out is not None and lead >= 0 and out.ndim == len(shape):
        # the sum with every axis kept, written through a view of ``out``
        xp.sum(x, axis=axes, keepdims=True, out=out.reshape((1,) * lead + tuple(out.shape)))
        return out
    y = xp.sum(x, axis=axes, keepdims=True)
    y = y.reshape(y.shape[lead:]) if lead > 0 else y
    if out is not None:
        out[...] = y
        return out
    return y


defop("broadcast_to", attrs={"shape": "ints"}, category="layout", views=((0, 0),), infer=_broadcast_to_infer,
      kernel=lambda xp, x, shape: xp.broadcast_to(x, shape),
      grad=lambda g, out, ins, shape: (_sum_to(g, ins[0]),))
defop("broadcast_like", attrs={}, shape_only=(1,), category="layout", views=((0, 0),), infer=_broadcast_like_infer,
      kernel=lambda xp, x, like: xp.broadcast_to(x, xp.broadcast_shapes(x.shape, like.shape)),
      grad=lambda g, out, ins: (_sum_to(g, ins[0]), None))
defop("sum_to", reduction="sum_to", attrs={"shape": "ints"}, category="reduction", views=((0, 0),), infer=_sum_to_infer, kernel=_sum_to_kernel,
      accepts_out=True,
      grad=lambda g, out, ins, shape: (broadcast_like(g, ins[0]),))


def _sum_to(g: Tensor, like: Tensor) -> Tensor:
    from .common import sum_to

    return sum_to(g, like)


def _sum_like_kernel(xp: Any, x: Any, like: Any) -> Any:
    return _sum_to_kernel(xp, x, like.shape)


defop("sum_like", attrs={}, shape_only=(1,), category="reduction", views=((0, 0),), infer=lambda t, like: TensorType(like.shape, t.dtype), kernel=_sum_like_kernel,
      grad=lambda g, out, ins: (broadcast_like(g, ins[0]), None))


def broadcast_to(x: Tensor, shape: Shape) -> Tensor:
    """``x`` broadcast to a static ``shape`` (a read-only view at run time)."""
    if any(not isinstance(d, int) for d in shape):
        raise ShapeError(f"broadcast_to needs a static shape, got {shape}; use broadcast_like for symbolic dims")
    return declare("broadcast_to", [x], {"shape": tuple(int(d) for d in shape)})


def broadcast_like(x: Tensor, like: Tensor) -> Tensor:
    """``x`` broadcast against ``like``'s run-time shape (no gradient flows to ``like``)."""
    if tuple(x.shape) == tuple(like.shape) and None not in x.shape:
        return x
    return declare("broadcast_like", [x, like])
