"""Batch normalisation, composed from primitive ops (so its gradient comes from theirs)."""

from __future__ import annotations

from ..errors import ShapeError
from ..tensor import Tensor
from .elementwise import sqrt
from .nn import assign
from .reduce import mean, numel, squeeze
from .shape import reshape


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise over every axis but the channel axis 1, as PyTorch's ``F.batch_norm``.

    x (N, C, ...) -> same shape. In training the batch statistics normalise and the running
    averages are updated after the step (biased variance to normalise, unbiased to track);
    in evaluation the running averages normalise.
    """
    if x.ndim < 2:
        raise ShapeError(f"batch_norm expects (N, C, ...) input, got shape {x.shape}")
    axes = tuple(i for i in range(x.ndim) if i != 1)
    bshape = (1, x.shape[1] if isinstance(x.shape[1], int) else -1) + (1,) * (x.ndim - 2)
    if training:
        mu = mean(x, axes, keepdims=True)
        centred = x - mu
        var = mean(centred * centred, axes, keepdims=True)
        y = centred / sqrt(var + eps)
    else:
        if running_mean is None or running_var is None:
            raise ShapeError("batch_norm in evaluation needs running_mean and running_var")
        y = (x - reshape(running_mean, bshape)) / sqrt(reshape(running_var, bshape) + eps)
    if weight is not None:
        y = y * reshape(weight, bshape)
    if bias is not None:
        y = y + reshape(bias, bshape)
    if training and running_mean is not None and running_var is not None:
        n = numel(x, axes)
        batch_mean = squeeze(mu, axes)
        unbiased = squeeze(var, axes) * (n / (n - 1.0))
        effects = (
            assign(running_mean, running_mean * (1.0 - momentum) + batch_mean * momentum).node,
            assign(running_var, running_var * (1.0 - momentum) + unbiased * momentum).node,
        )
        from dataclasses import replace

        from ..ir import next_uid

        y = Tensor(replace(y.node, effects=tuple(dict.fromkeys(y.node.effects + effects)), uid=next_uid()))
    return y
