"""Softmax cross-entropy: a composite op, so exporters see one loss rather than its pieces."""

from __future__ import annotations

from typing import Any

from .. import dtypes
from ..errors import DTypeError, FeedError, ShapeError
from ..ir import TensorType
from ..tensor import Tensor
from .common import declare, dims_equal
from .nn import log_softmax, one_hot
from .reduce import expand_dims, mean, sum
from .registry import defop

REDUCTIONS = ("mean", "sum", "none")


def _infer(logits: TensorType, labels: TensorType, *, label_smoothing: float, reduction: str) -> TensorType:
    if logits.ndim != 2 or not isinstance(logits.shape[1], int):
        raise ShapeError(f"expected (N, C) scores with a static C, got {logits.shape}")
    if labels.ndim != 1 or not dims_equal(labels.shape[0], logits.shape[0]):
        raise ShapeError(f"expected (N,) labels to match scores {logits.shape}, got {labels.shape}")
    if not dtypes.is_int(labels.dtype):
        raise DTypeError(f"labels must be integer class indices, got {labels.dtype}")
    if not dtypes.is_float(logits.dtype):
        raise DTypeError(f"scores must be floating, got {logits.dtype}")
    if not isinstance(label_smoothing, float) or not 0.0 <= label_smoothing <= 1.0:
        raise ShapeError(f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    if reduction not in REDUCTIONS:
        raise ShapeError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return TensorType(logits.shape[:1] if reduction == "none" else (), logits.dtype)


def _pick_infer(x: TensorType, labels: TensorType) -> TensorType:
    if x.ndim != 2 or labels.ndim != 1 or not dims_equal(x.shape[0], labels.shape[0]):
        raise ShapeError(f"pick reads one column per row of (N, C) values with (N,) labels, got {x.shape} and "
                         f"{labels.shape}")
    if not dtypes.is_int(labels.dtype):
        raise DTypeError(f"labels must be integers, got {labels.dtype}")
    return TensorType(x.shape[:1], x.dtype)


def _pick_kernel(xp: Any, x: Any, labels: Any) -> Any:
    classes = x.shape[1]
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise FeedError(f"labels must lie in [0, {classes}), got values from {int(labels.min())} to "
                        f"{int(labels.max())}")
    return xp.take_along_axis(x, labels[:, None].astype(xp.intp, copy=False), axis=1)[:, 0]


# Reading the target's value directly (not sum(values * one_hot)): a -inf score on another
# class then costs nothing, where 0 * -inf would make the loss NaN.
defop("pick", attrs={}, category="other", infer=_pick_infer, kernel=_pick_kernel,
      grad=lambda g, out, ins: (one_hot(ins[1], ins[0].shape[1], ins[0].dtype) * expand_dims(g, 1), None),
      doc="x[n, labels[n]] for each row n: (N, C) and (N,) -> (N,).")


def pick(x: Tensor, labels: Tensor) -> Tensor:
    """``x[n, labels[n]]`` for each row: (N, C) values and (N,) integer labels -> (N,)."""
    return declare("pick", [x, labels])


def _decompose(logits: Tensor, labels: Tensor, *, label_smoothing: float, reduction: str) -> Tensor:
    log_probs = log_softmax(logits, axis=1)
    per_sample = -pick(log_probs, labels)
    if label_smoothing:
        uniform = -mean(log_probs, axis=1)
        per_sample = per_sample * (1.0 - label_smoothing) + uniform * label_smoothing
    if reduction == "mean":
        return mean(per_sample)
    if reduction == "sum":
        return sum(per_sample)
    return per_sample


defop("cross_entropy", attrs={"label_smoothing": "float", "reduction": "str"}, category="composite", infer=_infer, kernel=None, decompose=_decompose,
      doc="Softmax cross-entropy of (N, C) scores and (N,) integer labels; mean, sum or per sample.")
