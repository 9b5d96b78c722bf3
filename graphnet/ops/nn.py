"""Neural-network ops: convolution, pooling, softmax, dropout masks, one-hot, state assignment."""

from __future__ import annotations

from typing import Any

from .. import dtypes
from ..errors import DTypeError, FeedError, ShapeError
from ..ir import Dim, TensorType, TupleType
from ..modes import ModeSwitch
from ..tensor import Tensor
from . import conv_kernels as K
from .common import declare, dims_equal, normalize_axis, require_float
from .reduce import sum
from .registry import defop

Pair = tuple[int, int]


def _pair(v: Any, what: str) -> Pair:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, int) for p in pair):
        raise ShapeError(f"{what} must be an int or a pair of ints, got {v!r}")
    return (int(pair[0]), int(pair[1]))


def _out_dim(size: Dim, k: int, s: int, p: int, d: int) -> Dim:
    if not isinstance(size, int):
        return size if size is None else None
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ShapeError(f"spatial size {size} is too small for kernel {k} (padding {p}, dilation {d})")
    return out


# --- conv2d -------------------------------------------------------------------------------

def _conv_infer(x: TensorType, w: TensorType, *, stride: Pair, padding: Pair, dilation: Pair,
                groups: int) -> TensorType:
    if x.ndim != 4:
        raise ShapeError("expected input of shape (N, C, H, W)")
    if w.ndim != 4:
        raise ShapeError("expected weight of shape (out_channels, in_channels // groups, kh, kw)")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or groups < 1:
        raise ShapeError(f"stride and dilation must be >= 1, padding >= 0 and groups >= 1, got stride {stride}, "
                         f"padding {padding}, dilation {dilation}, groups {groups}")
    require_float(x)
    if x.dtype != w.dtype:
        raise DTypeError(f"input dtype {x.dtype} differs from weight dtype {w.dtype}")
    if isinstance(x.shape[1], int) and x.shape[1] != w.shape[1] * groups:
        raise ShapeError(
            f"expected input with {w.shape[1] * groups} channels (weight in_channels {w.shape[1]} x groups {groups}), "
            f"got {x.shape[1]}"
        )
    if w.shape[0] % groups:
        raise ShapeError(f"out_channels {w.shape[0]} is not divisible by groups {groups}")
    ho = _out_dim(x.shape[2], w.shape[2], stride[0], padding[0], dilation[0])
    wo = _out_dim(x.shape[3], w.shape[3], stride[1], padding[1], dilation[1])
    return TensorType((x.shape[0], w.shape[0], ho, wo), x.dtype)


def _conv_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...], **attrs: Any) -> tuple:
    x, w = ins
    return (declare("conv2d_grad_input", [g, w, x], attrs), declare("conv2d_grad_weight", [x, g, w], attrs))


def _conv_gi_grad(h: Tensor, out: Tensor, ins: tuple[Tensor, ...], **attrs: Any) -> tuple:
    # conv2d_grad_input is linear in g and in w: <gi(g, w), h> = <g, conv(h, w)>
    g, w, _ = ins
    return (declare("conv2d", [h, w], attrs), declare("conv2d_grad_weight", [h, g, w], attrs), None)


def _conv_gw_grad(h: Tensor, out: Tensor, ins: tuple[Tensor, ...], **attrs: Any) -> tuple:
    # <gw(x, g), h> = <conv(x, h), g>
    x, g, _ = ins
    return (declare("conv2d_grad_input", [g, h, x], attrs), declare("conv2d", [x, h], attrs), None)


defop("conv2d", attrs={"stride": "pair", "padding": "pair", "dilation": "pair", "groups": "int"}, accepts_out=True, category="conv", infer=_conv_infer, kernel=K.conv2d, grad=_conv_grad)
defop("conv2d_grad_input", attrs={"stride": "pair", "padding": "pair", "dilation": "pair", "groups": "int"}, shape_only=(2,), accepts_out=True, category="conv", infer=lambda g, w, x, **a: x, kernel=K.conv2d_grad_input, grad=_conv_gi_grad)
defop("conv2d_grad_weight", attrs={"stride": "pair", "padding": "pair", "dilation": "pair", "groups": "int"}, shape_only=(2,), accepts_out=True, category="conv", infer=lambda x, g, w, **a: w, kernel=K.conv2d_grad_weight, grad=_conv_gw_grad)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-d cross-correlation as PyTorch's ``F.conv2d``.

    x (N, C, H, W), weight (O, C // groups, kh, kw), bias (O,) -> (N, O, Ho, Wo).
    """
    if groups < 1:
        raise ShapeError(f"groups must be >= 1, got {groups}")
    attrs = {"stride": _pair(stride, "stride"), "padding": _pair(padding, "padding"),
             "dilation": _pair(dilation, "dilation"), "groups": int(groups)}
    if min(attrs["stride"]) < 1 or min(attrs["dilation"]) < 1 or min(attrs["padding"]) < 0:
        raise ShapeError(f"conv2d: stride and dilation must be >= 1 and padding >= 0, got {attrs}")
    y = declare("conv2d", [x, weight], attrs)
    if bias is not None:
        from .shape import reshape

        if bias.ndim != 1 or not dims_equal(bias.shape[0], weight.shape[0]):
            raise ShapeError(f"conv2d: bias must have shape ({weight.shape[0]},), got {bias.shape}")
        y = y + reshape(bias, (1, bias.shape[0], 1, 1))
    return y


# --- pooling ------------------------------------------------------------------------------

def _pool_infer(x: TensorType, *, kernel_size: Pair, stride: Pair, padding: Pair) -> TensorType:
    if x.ndim != 4:
        raise ShapeError("expected input of shape (N, C, H, W)")
    if min(kernel_size) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ShapeError(f"kernel_size and stride must be >= 1 and padding >= 0, got {kernel_size}, {stride}, "
                         f"{padding}")
    if padding[0] * 2 > kernel_size[0] or padding[1] * 2 > kernel_size[1]:
        raise ShapeError(f"padding {padding} must be at most half of kernel_size {kernel_size}")
    ho = _out_dim(x.shape[2], kernel_size[0], stride[0], padding[0], 1)
    wo = _out_dim(x.shape[3], kernel_size[1], stride[1], padding[1], 1)
    return TensorType(x.shape[:2] + (ho, wo), x.dtype)


defop("max_pool2d", attrs={"kernel_size": "pair", "stride": "pair", "padding": "pair"}, category="conv", infer=_pool_infer, kernel=K.max_pool2d,
      grad=lambda g, out, ins, **a: (declare("max_pool2d_grad", [g, ins[0]], a),))
# max_pool2d_grad is linear in g (its adjoint reads g at each window's arg-max) and piecewise
# constant in x (no gradient), so gradient penalties through max pooling differentiate.
defop("max_pool2d_grad", attrs={"kernel_size": "pair", "stride": "pair", "padding": "pair"}, category="conv", infer=lambda g, x, **a: x, kernel=K.max_pool2d_grad,
      grad=lambda h, out, ins, **a: (declare("max_pool2d_select", [h, ins[1]], a), None))
defop("max_pool2d_select", attrs={"kernel_size": "pair", "stride": "pair", "padding": "pair"}, category="conv", infer=lambda h, x, **a: _pool_infer(x, **a), kernel=K.max_pool2d_select,
      grad=lambda g, out, ins, **a: (declare("max_pool2d_grad", [g, ins[1]], a), None),
      doc="h read at each window's first maximal element of x: the adjoint of max_pool2d_grad.")


# Training plans pool with max_pool2d_saving and differentiate with max_pool2d_grad_saved
# (graphnet.passes.save_pool_argmax): the forward keeps where each maximum was, as uint8, so
# the backward routes the gradient without searching the windows again, and x itself need
# not be kept for it.
def _saving_infer(x: TensorType, *, kernel_size: Pair, stride: Pair, padding: Pair) -> TupleType:
    y = _pool_infer(x, kernel_size=kernel_size, stride=stride, padding=padding)
    ho = y.shape[2]
    rows = stride[0] * (ho - 1) + kernel_size[0] if isinstance(ho, int) else None
    return TupleType((y, TensorType(y.shape[:2] + (rows, y.shape[3]), "uint8"), TensorType(y.shape, "uint8")))


def _saved_grad_infer(g: TensorType, column_arg: TensorType, row_arg: TensorType, x: TensorType,
                      **attrs: Any) -> TensorType:
    y = _pool_infer(x, **attrs)
    if g.ndim != 4 or row_arg.shape != y.shape or column_arg.dtype != "uint8" or row_arg.dtype != "uint8":
        raise ShapeError(f"max_pool2d_grad_saved: gradient {g}, arg-max {column_arg} and {row_arg} do not fit "
                         f"pooling {x}")
    return x


defop("max_pool2d_saving", attrs={"kernel_size": "pair", "stride": "pair", "padding": "pair"}, category="conv",
      infer=_saving_infer, kernel=K.max_pool2d_saving, accepts_out=True,
      grad=lambda gs, outs, ins, **a: (None if gs[0] is None else
                                       declare("max_pool2d_grad_saved", [gs[0], outs[1], outs[2], ins[0]], a),),
      doc="max_pool2d, plus each window's arg-max (per-row column, per-window row; uint8).")
defop("max_pool2d_grad_saved", attrs={"kernel_size": "pair", "stride": "pair", "padding": "pair"}, shape_only=(3,),
      category="conv", accepts_out=True, infer=_saved_grad_infer, kernel=K.max_pool2d_grad_saved,
      grad=lambda h, out, ins, **a: (declare("max_pool2d_select", [h, ins[3]], a), None, None, None),
      doc="max_pool2d_grad from the arg-max max_pool2d_saving kept; x only for its shape.")
defop("avg_pool2d", attrs={"kernel_size": "pair", "stride": "pair", "padding": "pair"}, category="conv", infer=_pool_infer, kernel=K.avg_pool2d, accepts_out=True,
      grad=lambda g, out, ins, **a: (declare("avg_pool2d_grad", [g, ins[0]], a),))
defop("avg_pool2d_grad", attrs={"kernel_size": "pair", "stride": "pair", "padding": "pair"}, shape_only=(1,), category="conv", infer=lambda g, x, **a: x, kernel=K.avg_pool2d_grad, accepts_out=True,
      grad=lambda h, out, ins, **a: (declare("avg_pool2d", [h], a), None))


def _pool_attrs(kernel_size: Any, stride: Any, padding: Any) -> dict[str, Pair]:
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    p = _pair(padding, "padding")
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise ShapeError(f"kernel_size and stride must be >= 1 and padding >= 0, got {k}, {s} and {p}")
    return {"kernel_size": k, "stride": s, "padding": p}


def max_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """Max pooling as PyTorch's ``F.max_pool2d`` (stride defaults to kernel_size).

    x (N, C, H, W) -> (N, C, Ho, Wo).
    """
    return declare("max_pool2d", [x], _pool_attrs(kernel_size, stride, padding))


def avg_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """Average pooling (zero padding counted, as PyTorch's default)."""
    return declare("avg_pool2d", [x], _pool_attrs(kernel_size, stride, padding))


# --- softmax ------------------------------------------------------------------------------

def _softmax_kernel(xp: Any, x: Any, axis: int) -> Any:
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    e /= xp.sum(e, axis=axis, keepdims=True)
    return e


def _log_softmax_kernel(xp: Any, x: Any, axis: int) -> Any:
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def _axis_infer(x: TensorType, *, axis: int) -> TensorType:
    require_float(x)
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of range for a {x.ndim}-d input")
    return x


defop("softmax", attrs={"axis": "int"}, category="reduction", infer=_axis_infer, kernel=_softmax_kernel,
      grad=lambda g, out, ins, axis: (out * (g - sum(g * out, axis, keepdims=True)),))
defop("log_softmax", attrs={"axis": "int"}, category="reduction", infer=_axis_infer, kernel=_log_softmax_kernel,
      grad=lambda g, out, ins, axis: (g - _exp(out) * sum(g, axis, keepdims=True),))


def _exp(x: Tensor) -> Tensor:
    from .elementwise import exp

    return exp(x)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, computed stably."""
    return declare("softmax", [x], {"axis": normalize_axis(axis, x.ndim)})


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``, computed stably."""
    return declare("log_softmax", [x], {"axis": normalize_axis(axis, x.ndim)})


# --- dropout ------------------------------------------------------------------------------

def _check_training(training: Any) -> None:
    if not isinstance(training, (bool, ModeSwitch)):
        raise ShapeError(f"training must be a bool or a module's mode, got {training!r}")


def _dropout_infer(x: TensorType, *, p: float, training: Any) -> TupleType:
    require_float(x, "dropout input")
    if not isinstance(p, float) or not 0.0 <= p < 1.0:
        raise ShapeError(f"dropout probability must be a float in [0, 1), got {p!r}")
    _check_training(training)
    return TupleType((x, x))


def _dropout_kernel(xp: Any, x: Any, p: float, training: Any, rng: Any) -> tuple[Any, Any]:
    if training is not True:  # the compiler removes eval-mode dropout; this keeps a stray one exact
        return x, xp.ones_like(x)
    keep = rng.random(x.shape, dtype="float32" if x.dtype != "float64" else "float64") >= p
    mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return xp.multiply(x, mask), mask


def _dropout_grad(gs: tuple, outs: tuple[Tensor, ...], ins: tuple[Tensor, ...], **_: Any) -> tuple:
    return (None if gs[0] is None else gs[0] * outs[1],)


# Two results: the output and the scaled keep-mask (which the gradient reads). ``training``
# is a bool, or the module's ModeSwitch that gn.compile resolves (eval: the identity).
defop("dropout", attrs={"p": "float", "training": "mode"}, category="random", infer=_dropout_infer, kernel=_dropout_kernel, grad=_dropout_grad)


def dropout(x: Tensor, p: float = 0.5, training: Any = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)`` when training.

    ``training`` is a bool, or a module's mode (``Dropout`` passes its own), decided when
    the plan is compiled.
    """
    if not 0.0 <= p < 1.0:
        raise ShapeError(f"dropout probability must be in [0, 1), got {p}")
    _check_training(training)
    if training is False or p == 0.0:
        return x
    from .tuples import tuple_get

    return tuple_get(declare("dropout", [x], {"p": float(p), "training": training}), 0)


def dropout2d(x: Tensor, p: float = 0.5, training: Any = True) -> Tensor:
    """Zero whole channels of x (N, C, H, W) with probability ``p`` and scale the rest by ``1 / (1 - p)``
    when training, as PyTorch's ``F.dropout2d`` (a (N, C, L) input drops channels of L, as PyTorch does).

    The mask (N, C, 1, 1) is ``dropout`` of ones, so it draws from the plan's random source and
    an eval-mode plan drops it; ``training`` as for ``dropout``.
    """
    if x.ndim not in (3, 4):
        raise ShapeError(f"dropout2d expects (N, C, H, W) or (N, C, L) input, got {x.shape}")
    if not 0.0 <= p < 1.0:
        raise ShapeError(f"dropout probability must be in [0, 1), got {p}")
    _check_training(training)
    if training is False or p == 0.0:
        return x
    from ..tensor import constant
    from .elementwise import mul
    from .reduce import broadcast_like
    from .shape import slice_

    channels = slice_(x, ((None, None, None), (None, None, None)) + ((0, 1, None),) * (x.ndim - 2))
    mask = dropout(broadcast_like(constant(1.0, x.dtype), channels), p, training)
    return mul(x, mask)


# --- one-hot ------------------------------------------------------------------------------

def _one_hot_infer(labels: TensorType, *, num_classes: int, dtype: str) -> TensorType:
    if not dtypes.is_int(labels.dtype):
        raise DTypeError(f"labels must be integers, got {labels.dtype}")
    return TensorType(labels.shape + (num_classes,), dtype)


def _one_hot_kernel(xp: Any, labels: Any, num_classes: int, dtype: str) -> Any:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise FeedError(
            f"labels must lie in [0, {num_classes}), got values from {int(labels.min())} to {int(labels.max())}"
        )
    return (labels[..., None] == xp.arange(num_classes)).astype(dtype)


defop("one_hot", attrs={"num_classes": "int", "dtype": "dtype"}, category="other", infer=_one_hot_infer, kernel=_one_hot_kernel, grad=lambda g, out, ins, **a: (None,))


def one_hot(labels: Tensor, num_classes: int, dtype: Any = "float32") -> Tensor:
    """(…,) integer labels -> (…, num_classes) one-hot rows."""
    return declare("one_hot", [labels], {"num_classes": int(num_classes), "dtype": dtypes.canonical(dtype)})


# --- state assignment: the one effect op -------------------------------------------------

#: Why a variable is written: running statistics, an optimizer's parameter update, its
#: state (moments), the step counter; collectives (data-parallel) come later.
EFFECT_KINDS = ("running_stat", "param_update", "optimizer_state", "step_counter")


def _assign_infer(target: TensorType, value: TensorType, *, kind: str) -> TensorType:
    if kind not in EFFECT_KINDS:
        raise ShapeError(f"effect kind {kind!r} is not one of {EFFECT_KINDS}")
    if target.ndim != value.ndim or not all(dims_equal(a, b) for a, b in zip(target.shape, value.shape)):
        raise ShapeError(f"cannot assign a value of shape {value.shape} to state of shape {target.shape}")
    if target.dtype != value.dtype:
        raise DTypeError(f"cannot assign a {value.dtype} value to {target.dtype} state")
    return target


def _assign_kernel(xp: Any, target: Any, value: Any, kind: str) -> Any:
    xp.copyto(target, value)
    return target


defop("assign", attrs={"kind": "str"}, category="effect", views=((0, 0),), writes=(0,), infer=_assign_infer, kernel=_assign_kernel,
      doc="Write ``value`` into the variable ``target`` after every pure step (an effect).")


def assign(target: Tensor, value: Tensor, kind: str = "running_stat") -> Tensor:
    """An effect writing ``value`` into the variable ``target`` after the step's pure work.

    The returned node is not computed by itself: list it in ``gn.compile(..., effects=[...])``
    (layers such as BatchNorm declare their writes through their op instead).
    """
    if target.op != "variable":
        raise ShapeError("assign: the target must be a variable (a Parameter or state tensor)")
    return declare("assign", [target, value], {"kind": kind})
