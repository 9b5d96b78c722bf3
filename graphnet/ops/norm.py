"""Batch normalisation: a composite op that keeps its identity in the declared graph.

``batch_norm`` is one node until the ``decompose`` pass expands it into primitive ops
(its gradient comes from theirs), so passes and exporters can still recognise it (BatchNorm
folding, ONNX's BatchNormalization). It has three results: the normalised output and the
statistics it normalised with (in training the batch mean and biased variance per
channel, in evaluation the running ones); its running-statistic writes are declared by the
op (``state_updates``) and become ordered effects at compile time. ``training`` is a bool
or the module's ModeSwitch, which gn.compile resolves.
"""

from __future__ import annotations

from typing import Any

from ..errors import DTypeError, GradientError, ShapeError
from ..dims import record_at_least, recording_mode
from ..modes import ModeSwitch, resolve
from ..ir import TensorType, TupleType
from ..tensor import Tensor
from .common import declare, dims_equal, into_each, require_float
from .elementwise import sqrt
from .collective import allreduce_sum
from .reduce import mean, numel, squeeze, sum
from .registry import defop
from .shape import reshape


def _split(ins: tuple[Any, ...], stats: bool, weight: bool, bias: bool) -> tuple[Any, Any, Any, Any, Any]:
    """(x, running_mean, running_var, weight, bias) from the op's inputs; absent ones are None."""
    items = list(ins)
    x = items.pop(0)
    rm, rv = (items.pop(0), items.pop(0)) if stats else (None, None)
    w = items.pop(0) if weight else None
    b = items.pop(0) if bias else None
    return x, rm, rv, w, b


def _infer(*ins: TensorType, training: Any, momentum: float, eps: float, stats: bool, weight: bool,
           bias: bool) -> TupleType:
    if len(ins) != 1 + 2 * stats + weight + bias:
        raise ShapeError(f"batch_norm takes {1 + 2 * stats + weight + bias} inputs here, got {len(ins)}")
    x, rm, rv, w, b = _split(ins, stats, weight, bias)
    if x.ndim < 2:
        raise ShapeError(f"batch_norm expects (N, C, ...) input, got shape {x.shape}")
    require_float(x)
    if not isinstance(training, (bool, ModeSwitch)):
        raise ShapeError(f"training must be a bool or a module's mode, got {training!r}")
    if training is not True and not stats:
        raise ShapeError("batch_norm in evaluation needs running_mean and running_var")
    for what, t in (("running_mean", rm), ("running_var", rv), ("weight", w), ("bias", b)):
        if t is None:
            continue
        if t.ndim != 1 or not dims_equal(t.shape[0], x.shape[1]):
            raise ShapeError(f"{what} must have shape ({x.shape[1]},), got {t.shape}")
        if t.dtype != x.dtype:
            raise DTypeError(f"{what} is {t.dtype}, the input is {x.dtype}")
    recorded, mode = recording_mode()
    if recorded and resolve(training, mode):
        record_at_least(tuple(d for i, d in enumerate(x.shape) if i != 1), 2,
                        "batch norm in training needs more than one value per channel (the batch variance "
                        "of one value is undefined, and its running_var would become NaN)")
    channel = TensorType((x.shape[1],), x.dtype)
    return TupleType((x, channel, channel))


def _standardize(x: Tensor, axes: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(x - mean) / sqrt(biased variance + eps) over ``axes``, with the mean and variance (kept dims)."""
    mu = mean(x, axes, keepdims=True)
    centred = x - mu
    var = mean(centred * centred, axes, keepdims=True)
    return centred / sqrt(var + eps), mu, var


def _axes(x: Tensor) -> tuple[int, ...]:
    return tuple(i for i in range(x.ndim) if i != 1)


def _sync_standardize(x: Tensor, axes: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``_standardize`` with the statistics of every data-parallel process's batch together: the
    sums and the count summed over the processes (two passes, as the one-process form)."""
    count = _global_count(x, axes)
    mu = allreduce_sum(sum(x, axes, keepdims=True)) / count
    centred = x - mu
    var = allreduce_sum(sum(centred * centred, axes, keepdims=True)) / count
    return centred / sqrt(var + eps), mu, var


def _global_count(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    return allreduce_sum(numel(x, axes))


def _decompose(*ins: Tensor, training: Any, momentum: float, eps: float, stats: bool, weight: bool,
               bias: bool, sync: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    if isinstance(training, ModeSwitch):
        raise GradientError("batch_norm's mode is decided when the plan is compiled, so it cannot be expanded "
                            "(or differentiated with gn.grad) before: pass training=True or False to "
                            "gn.batch_norm, or let gn.compile differentiate the loss")
    x, rm, rv, w, b = _split(ins, stats, weight, bias)
    axes = _axes(x)
    bshape = (1, x.shape[1] if isinstance(x.shape[1], int) else -1) + (1,) * (x.ndim - 2)
    if training:
        y, mu, var = (_sync_standardize if sync else _standardize)(x, axes, eps)
    else:
        y = (x - reshape(rm, bshape)) / sqrt(reshape(rv, bshape) + eps)
    if w is not None:
        y = y * reshape(w, bshape)
    if b is not None:
        y = y + reshape(b, bshape)
    if not training:
        return y, rm, rv
    return y, squeeze(mu, axes), squeeze(var, axes)


def _state_updates(outs: tuple[Tensor, ...], ins: tuple[Tensor, ...], *, training: Any, momentum: float,
                   eps: float, stats: bool, weight: bool, bias: bool, sync: bool = False
                   ) -> list[tuple[Tensor, Tensor]]:
    """Running averages, as PyTorch: the batch mean, and the unbiased batch variance."""
    if training is not True or not stats:
        return []
    x, rm, rv, _, _ = _split(ins, stats, weight, bias)
    _, batch_mean, batch_var = outs
    n = _global_count(x, _axes(x)) if sync else numel(x, _axes(x))
    unbiased = batch_var * (n / (n - 1.0))
    return [(rm, rm * (1.0 - momentum) + batch_mean * momentum),
            (rv, rv * (1.0 - momentum) + unbiased * momentum)]


defop("batch_norm", attrs={"training": "mode", "momentum": "float", "eps": "float", "stats": "bool", "weight": "bool", "bias": "bool"}, category="composite", infer=_infer, kernel=None, decompose=_decompose,
      state_updates=_state_updates,
      doc="Batch normalisation over every axis but 1: (output, mean, variance it normalised with).")


def _sync_infer(*ins: TensorType, sync: bool, **attrs: Any) -> TupleType:
    return _infer(*ins, **attrs)


defop("sync_batch_norm", attrs={"training": "mode", "momentum": "float", "eps": "float", "stats": "bool", "weight": "bool", "bias": "bool", "sync": "bool"}, category="composite", infer=_sync_infer, kernel=None, decompose=_decompose,
      state_updates=_state_updates,
      doc="batch_norm whose training statistics are those of every data-parallel process's batch together "
          "(graphnet.distributed): (output, mean, variance it normalised with).")


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: Any = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    sync_stats: bool = False,
) -> Tensor:
    """Normalise over every axis but the channel axis 1, as PyTorch's ``F.batch_norm``.

    x (N, C, ...) -> same shape. In training the batch statistics normalise and the running
    averages are updated after the step (biased variance to normalise, unbiased to track);
    in evaluation the running averages normalise. ``training`` is a bool, or a module's
    mode (``BatchNorm2d`` passes its own), decided when the plan is compiled. ``sync_stats``:
    in training, the statistics of the batches of every data-parallel process together
    (``gn.nn.SyncBatchNorm``; with one process the same as without).
    """
    if x.ndim < 2:
        raise ShapeError(f"batch_norm expects (N, C, ...) input, got shape {x.shape}")
    if (running_mean is None) != (running_var is None):
        raise ShapeError("batch_norm needs both running_mean and running_var, or neither")
    stats = running_mean is not None
    for what, t in (("running_mean", running_mean), ("running_var", running_var)):
        if training is not False and t is not None and t.op != "variable":
            raise ShapeError(f"batch_norm: {what} must be a state variable (a registered buffer)")
    inputs = [x] + ([running_mean, running_var] if stats else []) + [t for t in (weight, bias) if t is not None]
    mode = training if isinstance(training, ModeSwitch) else bool(training)
    attrs = {"training": mode, "momentum": float(momentum), "eps": float(eps), "stats": stats,
             "weight": weight is not None, "bias": bias is not None}
    from .tuples import tuple_get

    if sync_stats:  # the op of its own: passes that rewrite batch_norm (folding, fusing) leave it alone
        return tuple_get(declare("sync_batch_norm", inputs, {**attrs, "sync": True}), 0)
    return tuple_get(declare("batch_norm", inputs, attrs), 0)


# --- batch normalisation in training as two kernels (the fuse_batch_norm pass) ----------------
#
# Decomposed, training-mode batch norm is some forty steps forward and backward, each a full
# pass over the activation. ``batch_norm_train`` computes (output, batch mean, biased and
# unbiased batch variance) in one step and ``batch_norm_train_grad`` the gradients of input, weight and bias
# in one more; the ``fuse_batch_norm`` pass puts them in place of a training batch_norm.

def _bn_train_infer(*ins: TensorType, eps: float, momentum: float, stats: bool, weight: bool,
                    bias: bool, relu: bool) -> TupleType:
    x = ins[0]
    if x.ndim < 2:
        raise ShapeError(f"batch_norm expects (N, C, ...) input, got shape {x.shape}")
    require_float(x)
    if len(ins) != 1 + 2 * stats + weight + bias:
        raise ShapeError(f"batch_norm_train takes {1 + 2 * stats + weight + bias} inputs here, got {len(ins)}")
    for t in ins[1:]:
        if t.ndim != 1 or not dims_equal(t.shape[0], x.shape[1]) or t.dtype != x.dtype:
            raise ShapeError(f"batch_norm's statistics, weight and bias must be {x.dtype}[{x.shape[1]}], got {t}")
    channel = TensorType((x.shape[1],), x.dtype)
    return TupleType((x, channel, channel, channel))


def _per_channel(x: Any) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against ``x`` (N, C, ...)."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _channel_sum(a: Any) -> Any:
    """Sum over every axis but 1, along contiguous rows first (NumPy's pairwise summation)."""
    return a.reshape(a.shape[0], a.shape[1], -1).sum(axis=2).sum(axis=0)


def _bn_train_kernel(xp: Any, x: Any, *rest: Any, eps: float, momentum: float, stats: bool, weight: bool,
                     bias: bool, relu: bool, out: Any = None) -> tuple[Any, Any, Any, Any]:
    affine = rest[2:] if stats else rest
    count = x.size // x.shape[1]
    shape = _per_channel(x)
    mean = _channel_sum(x) / x.dtype.type(count)
    centred = x - mean.reshape(shape)
    var = _channel_sum(centred * centred) / x.dtype.type(count)
    unbiased = var * x.dtype.type(count / (count - 1)) if count > 1 else xp.full_like(var, xp.nan)
    scale = 1 / xp.sqrt(var + x.dtype.type(eps))
    if weight:
        scale = scale * affine[0]
    centred *= scale.reshape(shape)
    if bias:
        centred += affine[-1].reshape(shape)
    if relu:
        xp.maximum(centred, x.dtype.type(0), out=centred)
    return into_each(xp, (centred, mean, var, unbiased), out)


def _bn_train_grad(gs: tuple, outs: tuple[Tensor, ...], ins: tuple[Tensor, ...], *, eps: float, momentum: float,
                   stats: bool, weight: bool, bias: bool, relu: bool) -> tuple:
    from .tuples import tuple_get

    x = ins[0]
    g_out, g_mean, g_var, g_unbiased = gs
    _, batch_mean, batch_var, _ = outs
    grads: list[Any] = [None] * len(ins)
    if g_out is not None:
        gamma = [ins[1 + 2 * stats]] if weight else []
        node = declare("batch_norm_train_grad", [g_out, x, batch_mean, batch_var] + gamma + ([outs[0]] if relu else []),
                       {"eps": eps, "weight": weight, "relu": relu})
        grads[0] = tuple_get(node, 0)
        if weight:
            grads[1 + 2 * stats] = tuple_get(node, 1)
        if bias:
            grads[-1] = tuple_get(node, 2)
    if g_mean is None and g_var is None and g_unbiased is None:
        return tuple(grads)
    bshape = (1, x.shape[1] if isinstance(x.shape[1], int) else -1) + (1,) * (x.ndim - 2)
    count = numel(x, _axes(x))
    # the statistics read directly (rarely: a loss on the batch mean): d mean = 1/M, d var = 2 (x - mean)/M
    if g_mean is not None:
        extra = reshape(g_mean, bshape) / count + x * 0.0
        grads[0] = extra if grads[0] is None else grads[0] + extra
    if g_unbiased is not None:
        g_var = reshape(g_unbiased, (-1,)) * (count / (count - 1.0)) if g_var is None else \
            g_var + g_unbiased * (count / (count - 1.0))
    if g_var is not None:
        extra = (x - reshape(batch_mean, bshape)) * (reshape(g_var, bshape) * 2.0 / count)
        grads[0] = extra if grads[0] is None else grads[0] + extra
    return tuple(grads)


def _bn_train_state_updates(outs: tuple[Tensor, ...], ins: tuple[Tensor, ...], *, eps: float, momentum: float,
                            stats: bool, weight: bool, bias: bool, relu: bool) -> list[tuple[Tensor, Tensor]]:
    """As batch_norm's: running averages of the batch mean and the unbiased batch variance
    (which the kernel computes, so no step counts the elements)."""
    if not stats:
        return []
    rm, rv = ins[1], ins[2]
    return [(rm, rm * (1.0 - momentum) + outs[1] * momentum), (rv, rv * (1.0 - momentum) + outs[3] * momentum)]


defop("batch_norm_train", attrs={"eps": "float", "momentum": "float", "stats": "bool", "weight": "bool",
                                 "bias": "bool", "relu": "bool"}, category="other",
      infer=_bn_train_infer, kernel=_bn_train_kernel, grad=_bn_train_grad, state_updates=_bn_train_state_updates,
      accepts_out=True,
      doc="Training-mode batch norm in one step: (output, batch mean, biased and unbiased batch variance); "
          "with relu=True the output is max(output, 0) (the ReLU that alone read it, folded in).")


def _bn_grad_infer(g: TensorType, x: TensorType, mean: TensorType, var: TensorType, *rest: TensorType,
                   eps: float, weight: bool, relu: bool) -> TupleType:
    if g.shape != x.shape or g.dtype != x.dtype or len(rest) != weight + relu:
        raise ShapeError(f"batch_norm_train_grad: gradient {g} for input {x}, {len(rest)} more inputs")
    channel = TensorType((x.shape[1],), x.dtype)
    for t in (mean, var) + (rest[:1] if weight else ()):
        if t.ndim != 1 or not dims_equal(t.shape[0], x.shape[1]):
            raise ShapeError(f"batch_norm_train_grad: per-channel values must be {channel}, got {t}")
    if relu and (rest[-1].shape != x.shape or rest[-1].dtype != x.dtype):
        raise ShapeError(f"batch_norm_train_grad: the ReLU's output must be {x}, got {rest[-1]}")
    return TupleType((x, channel, channel))


def _bn_grad_kernel(xp: Any, g: Any, x: Any, mean: Any, var: Any, *rest: Any, eps: float,
                    weight: bool, relu: bool, out: Any = None) -> tuple[Any, Any, Any]:
    """dx = scale / M * (M g - sum g - xhat sum(g xhat)), with scale = weight / sqrt(var + eps);
    with relu, g is first zeroed where the ReLU's output is not positive."""
    if relu:
        g = g * (rest[-1] > 0)
    count = x.dtype.type(x.size // x.shape[1])
    shape = _per_channel(x)
    inv_std = 1 / xp.sqrt(var + x.dtype.type(eps))
    xhat = x - mean.reshape(shape)
    xhat *= inv_std.reshape(shape)
    grad_bias = _channel_sum(g)
    grad_weight = _channel_sum(g * xhat)
    xhat *= (grad_weight / count).reshape(shape)
    xhat += (grad_bias / count).reshape(shape)
    dx = xp.subtract(g, xhat, out=xhat)
    dx *= (inv_std * rest[0] if weight else inv_std).reshape(shape)
    return into_each(xp, (dx, grad_weight, grad_bias), out)


defop("batch_norm_train_grad", attrs={"eps": "float", "weight": "bool", "relu": "bool"}, category="other",
      infer=_bn_grad_infer, kernel=_bn_grad_kernel, accepts_out=True,
      doc="Gradients of batch_norm_train: (input, weight, bias), in one step.")


# --- layer normalisation: a composite op too (ONNX's LayerNormalization) ----------------------

def _ln_infer(x: TensorType, *affine: TensorType, normalized_ndim: int, eps: float, weight: bool,
              bias: bool) -> TensorType:
    require_float(x)
    if not 1 <= normalized_ndim <= x.ndim:
        raise ShapeError(f"layer_norm normalises the last {normalized_ndim} dims of a {x.ndim}-d input")
    if len(affine) != weight + bias:
        raise ShapeError(f"layer_norm takes {1 + weight + bias} inputs here, got {1 + len(affine)}")
    tail = x.shape[x.ndim - normalized_ndim:]
    for t in affine:
        if t.ndim != normalized_ndim or not all(dims_equal(a, b) for a, b in zip(t.shape, tail)):
            raise ShapeError(f"layer_norm's weight and bias must have shape {tail}, got {t.shape}")
        if t.dtype != x.dtype:
            raise DTypeError(f"layer_norm's weight is {t.dtype}, the input is {x.dtype}")
    return x


def _ln_decompose(x: Tensor, *affine: Tensor, normalized_ndim: int, eps: float, weight: bool,
                  bias: bool) -> Tensor:
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    y = _standardize(x, axes, eps)[0]
    items = list(affine)
    if weight:
        y = y * items.pop(0)
    if bias:
        y = y + items.pop(0)
    return y


defop("layer_norm", attrs={"normalized_ndim": "int", "eps": "float", "weight": "bool", "bias": "bool"}, category="composite", infer=_ln_infer, kernel=None, decompose=_ln_decompose,
      doc="Normalisation over the last dims, with an optional elementwise affine map.")


def layer_norm(x: Tensor, normalized_shape: Any, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """As PyTorch's ``F.layer_norm``: normalise x (..., *normalized_shape) over its last dims (biased variance)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    tail = tuple(x.shape[x.ndim - len(shape):]) if len(shape) <= x.ndim else None
    if tail is None or not all(dims_equal(a, b) for a, b in zip(tail, shape)):
        raise ShapeError(f"layer_norm over {shape}: the input's last dims are {x.shape}")
    inputs = [x] + [t for t in (weight, bias) if t is not None]
    return declare("layer_norm", inputs, {"normalized_ndim": len(shape), "eps": float(eps),
                                          "weight": weight is not None, "bias": bias is not None})


def group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """As PyTorch's ``F.group_norm``: x (N, C, *) normalised over each group of C // num_groups channels
    and the spatial dims (which must be static), then scaled per channel."""
    if x.ndim < 2 or not all(isinstance(d, int) for d in x.shape[1:]):
        raise ShapeError(f"group_norm expects (N, C, ...) with static C and spatial dims, got {x.shape}")
    channels = x.shape[1]
    if num_groups < 1 or channels % num_groups:
        raise ShapeError(f"num_groups {num_groups} must divide the {channels} channels")
    grouped = reshape(x, (-1, num_groups, channels // num_groups) + tuple(x.shape[2:]))
    axes = tuple(range(2, grouped.ndim))
    y = reshape(_standardize(grouped, axes, eps)[0], (-1,) + tuple(x.shape[1:]))
    bshape = (1, channels) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * reshape(weight, bshape)
    if bias is not None:
        y = y + reshape(bias, bshape)
    return y


def instance_norm(x: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None,
                  weight: Tensor | None = None, bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """As PyTorch's ``F.instance_norm`` with each instance's statistics: x (N, C, *spatial) normalised over
    its spatial dims per sample and channel (biased variance), then scaled and shifted per channel by
    ``weight`` and ``bias`` (C,). Running statistics are not supported."""
    if running_mean is not None or running_var is not None or not use_input_stats:
        raise ShapeError("instance_norm: running statistics (track_running_stats=True) are not supported")
    if x.ndim < 3:
        raise ShapeError(f"instance_norm expects (N, C, ...) input with spatial dims, got {x.shape}")
    channels = x.shape[1]
    bshape = (1, channels if isinstance(channels, int) else -1) + (1,) * (x.ndim - 2)
    for what, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.ndim != 1 or not dims_equal(t.shape[0], channels)):
            raise ShapeError(f"instance_norm: {what} must have shape ({channels},), got {t.shape}")
    y = _standardize(x, tuple(range(2, x.ndim)), eps)[0]
    if weight is not None:
        y = y * reshape(weight, bshape)
    if bias is not None:
        y = y + reshape(bias, bshape)
    return y


def rms_norm(x: Tensor, normalized_shape: Any, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """As PyTorch's ``F.rms_norm``: x (..., *normalized_shape) divided by the root mean square of its last
    dims, ``sqrt(mean(x ** 2) + eps)``, times ``weight`` (normalized_shape); ``eps=None`` is the machine
    epsilon of x's dtype (``torch.finfo(dtype).eps``)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    tail = tuple(x.shape[x.ndim - len(shape):]) if 1 <= len(shape) <= x.ndim else None
    if tail is None or not all(dims_equal(a, b) for a, b in zip(tail, shape)):
        raise ShapeError(f"rms_norm over {shape}: the input's last dims are {x.shape}")
    if weight is not None and (tuple(weight.shape) != shape):
        raise ShapeError(f"rms_norm: weight must have shape {shape}, got {weight.shape}")
    require_float(x.node.type)
    if eps is None:
        import numpy as np

        eps = float(np.finfo(x.dtype).eps)
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    y = x / sqrt(mean(x * x, axes, keepdims=True) + float(eps))
    return y * weight if weight is not None else y
