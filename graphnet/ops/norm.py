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
from ..modes import ModeSwitch
from ..ir import TensorType, TupleType
from ..tensor import Tensor
from .common import declare, dims_equal, require_float
from .elementwise import sqrt
from .reduce import mean, numel, squeeze
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
    channel = TensorType((x.shape[1],), x.dtype)
    return TupleType((x, channel, channel))


def _axes(x: Tensor) -> tuple[int, ...]:
    return tuple(i for i in range(x.ndim) if i != 1)


def _decompose(*ins: Tensor, training: Any, momentum: float, eps: float, stats: bool, weight: bool,
               bias: bool) -> tuple[Tensor, Tensor, Tensor]:
    if isinstance(training, ModeSwitch):
        raise GradientError("batch_norm's mode is decided when the plan is compiled, so it cannot be expanded "
                            "(or differentiated with gn.grad) before: pass training=True or False to "
                            "gn.batch_norm, or let gn.compile differentiate the loss")
    x, rm, rv, w, b = _split(ins, stats, weight, bias)
    axes = _axes(x)
    bshape = (1, x.shape[1] if isinstance(x.shape[1], int) else -1) + (1,) * (x.ndim - 2)
    if training:
        mu = mean(x, axes, keepdims=True)
        centred = x - mu
        var = mean(centred * centred, axes, keepdims=True)
        y = centred / sqrt(var + eps)
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
                   eps: float, stats: bool, weight: bool, bias: bool) -> list[tuple[Tensor, Tensor]]:
    """Running averages, as PyTorch: the batch mean, and the unbiased batch variance."""
    if training is not True or not stats:
        return []
    x, rm, rv, _, _ = _split(ins, stats, weight, bias)
    _, batch_mean, batch_var = outs
    n = numel(x, _axes(x))
    unbiased = batch_var * (n / (n - 1.0))
    return [(rm, rm * (1.0 - momentum) + batch_mean * momentum),
            (rv, rv * (1.0 - momentum) + unbiased * momentum)]


defop("batch_norm", category="composite", infer=_infer, kernel=None, decompose=_decompose,
      state_updates=_state_updates,
      doc="Batch normalisation over every axis but 1: (output, mean, variance it normalised with).")


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: Any = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise over every axis but the channel axis 1, as PyTorch's ``F.batch_norm``.

    x (N, C, ...) -> same shape. In training the batch statistics normalise and the running
    averages are updated after the step (biased variance to normalise, unbiased to track);
    in evaluation the running averages normalise. ``training`` is a bool, or a module's
    mode (``BatchNorm2d`` passes its own), decided when the plan is compiled.
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

    return tuple_get(declare("batch_norm", inputs, attrs), 0)
