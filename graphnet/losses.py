"""Loss functions, composed from graphnet ops (so they differentiate like any graph)."""

from __future__ import annotations

from typing import Any

from . import ops
from .errors import DTypeError, ShapeError
from .ops import losses as _loss_ops  # noqa: F401  (registers the composite op)
from .ops.common import declare, dims_equal
from .tensor import Tensor, as_tensor

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction not in _REDUCTIONS:
        raise ShapeError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if reduction == "mean":
        return ops.mean(per_sample)
    if reduction == "sum":
        return ops.sum(per_sample)
    return per_sample


def _check_labels(logits: Tensor, labels: Tensor, what: str) -> None:
    if logits.ndim != 2:
        raise ShapeError(f"{what}: expected (N, C) scores, got shape {logits.shape}")
    if labels.ndim != 1 or not dims_equal(labels.shape[0], logits.shape[0]):
        raise ShapeError(f"{what}: expected (N,) labels to match scores {logits.shape}, got shape {labels.shape}")
    if not labels.dtype.startswith(("int", "uint")):
        raise DTypeError(f"{what}: labels must be integer class indices, got {labels.dtype}")
    if not isinstance(logits.shape[1], int):
        raise ShapeError(f"{what}: the class dimension must be static, got {logits.shape}")


def nll(log_probs: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer ``labels`` (N,) under ``log_probs`` (N, C)."""
    _check_labels(log_probs, labels, "nll")
    return _reduce(-_loss_ops.pick(log_probs, labels), reduction)


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy from raw scores, as PyTorch's ``F.cross_entropy``.

    logits (N, C), labels (N,) integers in [0, C) -> scalar (mean over the batch).
    With ``label_smoothing`` e the target is (1 - e) one-hot + e / C. One composite op
    (``cross_entropy``) in the declared graph, expanded by the compiler.
    """
    _check_labels(logits, labels, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ShapeError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if reduction not in _REDUCTIONS:
        raise ShapeError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return declare("cross_entropy", [logits, labels],
                   {"label_smoothing": float(label_smoothing), "reduction": reduction})


def mse(prediction: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error; ``prediction`` and ``target`` must have the same shape."""
    target = as_tensor(target, prediction)
    if prediction.ndim != target.ndim or not all(dims_equal(a, b) for a, b in zip(prediction.shape, target.shape)):
        raise ShapeError(f"mse: prediction {prediction.shape} and target {target.shape} differ in shape")
    diff = prediction - target
    return _reduce(diff * diff, reduction)


def binary_cross_entropy_with_logits(logits: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Sigmoid cross-entropy from raw scores, stable for large |logits|; same shapes."""
    target = as_tensor(target, logits)
    if logits.ndim != target.ndim or not all(dims_equal(a, b) for a, b in zip(logits.shape, target.shape)):
        raise ShapeError(f"binary_cross_entropy_with_logits: logits {logits.shape} and target {target.shape} differ")
    # max(x, 0) - x * t + log(1 + exp(-|x|))
    per_element = ops.relu(logits) - logits * target + ops.log(1.0 + ops.exp(-ops.abs(logits)))
    return _reduce(per_element, reduction)
