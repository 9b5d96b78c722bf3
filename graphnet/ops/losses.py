"""Softmax cross-entropy: a composite op, so exporters see one loss rather than its pieces."""

from __future__ import annotations

from .. import dtypes
from ..errors import DTypeError, ShapeError
from ..ir import TensorType
from ..tensor import Tensor
from .common import dims_equal
from .nn import log_softmax, one_hot
from .reduce import mean, sum
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


def _decompose(logits: Tensor, labels: Tensor, *, label_smoothing: float, reduction: str) -> Tensor:
    log_probs = log_softmax(logits, axis=1)
    per_sample = -sum(log_probs * one_hot(labels, logits.shape[1], logits.dtype), axis=1)
    if label_smoothing:
        uniform = -mean(log_probs, axis=1)
        per_sample = per_sample * (1.0 - label_smoothing) + uniform * label_smoothing
    if reduction == "mean":
        return mean(per_sample)
    if reduction == "sum":
        return sum(per_sample)
    return per_sample


defop("cross_entropy", category="composite", infer=_infer, kernel=None, decompose=_decompose,
      doc="Softmax cross-entropy of (N, C) scores and (N,) integer labels; mean, sum or per sample.")
