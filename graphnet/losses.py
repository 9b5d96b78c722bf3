"""Loss functions, composed from graphnet ops (so they differentiate like any graph).

The names and arguments follow ``torch.nn.functional``: ``cross_entropy``, ``nll_loss``,
``mse_loss``, ``l1_loss``, ``smooth_l1_loss``, ``huber_loss``, ``binary_cross_entropy``,
``binary_cross_entropy_with_logits`` and ``kl_div``; ``nll`` and ``mse`` are the earlier
names (positional ``reduction``). ``reduction`` is ``"mean"`` (the default), ``"sum"`` or
``"none"`` (``kl_div`` also takes ``"batchmean"``); the options after ``weight`` are
keyword-only.

Deliberate differences from PyTorch:

* ``ignore_index`` defaults to None (no label is ignored: each must be a class index, and
  ``-100`` is a FeedError at run time) rather than -100, so a plain ``cross_entropy`` stays
  the one-step fused op; pass ``ignore_index=-100`` for PyTorch's behaviour.
* a ``"mean"`` over no targets (every target ignored, or their weights summing to 0) is a
  FeedError at run time where PyTorch returns NaN (use ``reduction="sum"``, or leave such
  batches out).
* class weights get no gradient (PyTorch refuses to differentiate them).
* ``cross_entropy``/``nll_loss`` take (N, C) scores and (N,) class indices, not the
  (N, C, d1, ...) forms nor class-probability targets.
* ``binary_cross_entropy``'s gradient is the derivative of the loss it computes: 0 where
  the log is clamped at -100, where PyTorch's backward uses ``(x - t) / max(x (1 - x), 1e-12)``;
  inputs outside [0, 1] give NaN rather than an error.
"""

from __future__ import annotations

from typing import Any

from . import ops
from .errors import DTypeError, ShapeError
from .ops import losses as _loss_ops  # noqa: F401  (registers the composite op)
from .ops.common import declare, dims_equal
from .tensor import Tensor, as_tensor, constant

_REDUCTIONS = ("mean", "sum", "none")

__all__ = [
    "cross_entropy", "nll_loss", "nll", "mse_loss", "mse", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div",
]


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction not in _REDUCTIONS:
        raise ShapeError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if reduction == "mean":
        return ops.mean(per_sample)
    if reduction == "sum":
        return ops.sum(per_sample)
    return per_sample


def _at(what: str) -> str:
    """``what`` with the user's source line, for the loss errors (raised at declaration)."""
    return f"{what} at {ops.registry.user_location()}"


def _check_labels(logits: Tensor, labels: Tensor, what: str) -> None:
    what = _at(what)
    if logits.ndim != 2:
        raise ShapeError(f"{what}: expected (N, C) scores, got shape {logits.shape}")
    if labels.ndim != 1 or not dims_equal(labels.shape[0], logits.shape[0]):
        raise ShapeError(f"{what}: expected (N,) labels to match scores {logits.shape}, got shape {labels.shape}")
    if not labels.dtype.startswith(("int", "uint")):
        raise DTypeError(f"{what}: labels must be integer class indices, got {labels.dtype}")
    if not isinstance(logits.shape[1], int):
        raise ShapeError(f"{what}: the class dimension must be static, got {logits.shape}")


def _same_shape(what: str, a: Tensor, b: Tensor, names: tuple[str, str] = ("input", "target")) -> None:
    what = _at(what)
    if a.ndim != b.ndim or not all(dims_equal(x, y) for x, y in zip(a.shape, b.shape)):
        raise ShapeError(f"{what}: {names[0]} {a.shape} and {names[1]} {b.shape} differ in shape")


def _float_input(what: str, x: Tensor) -> None:
    if not x.dtype.startswith("float"):
        raise DTypeError(f"{_at(what)}: expected a floating input, got {x.dtype}")


# --- classification: nll_loss and cross_entropy ---------------------------------------------------

def _class_weight(weight: Any, scores: Tensor, what: str) -> Tensor | None:
    """``weight`` as a (C,) constant-to-differentiation tensor in the scores' dtype, or None."""
    if weight is None:
        return None
    if isinstance(weight, (bool, int, float)):
        raise ShapeError(f"{what}: weight must be a (C,) array of class weights, got {weight!r} (label_smoothing, "
                         f"ignore_index and reduction are keyword arguments)")
    w = weight if isinstance(weight, Tensor) else constant(weight, scores.dtype)
    if w.ndim != 1 or not dims_equal(w.shape[0], scores.shape[1]):
        raise ShapeError(f"{what}: weight must have one entry per class, shape ({scores.shape[1]},), got {w.shape}")
    if not w.dtype.startswith("float"):
        raise DTypeError(f"{what}: weight must be floating, got {w.dtype}")
    if w.dtype != scores.dtype:
        w = ops.cast(w, scores.dtype)
    return ops.stop_gradient(w) if isinstance(weight, Tensor) else w


def _check_ignore_index(ignore_index: Any, what: str) -> int | None:
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) and not (
            getattr(ignore_index, "shape", None) == () and getattr(ignore_index, "dtype", None) is not None
            and ignore_index.dtype.kind in "iu"):
        raise DTypeError(f"{what}: ignore_index must be an integer or None, got {ignore_index!r}")
    return int(ignore_index)


def _weighted(log_probs: Tensor, labels: Tensor, weight: Tensor | None, ignore_index: int | None, reduction: str,
              label_smoothing: float) -> Tensor:
    """PyTorch's nll_loss / cross_entropy with class weights and an ignored label, composed:
    per sample ``w[y] * -log_probs[y]`` (blended with ``w . -log_probs / C`` by label smoothing),
    0 for ignored targets; the mean divides by the sum of ``w[y]`` over the targets kept."""
    classes = log_probs.shape[1]
    ones = weight if weight is not None else constant([1.0] * classes, log_probs.dtype)
    w_n = _loss_ops.target_weights(labels, ones, ignore_index, require_total=reduction == "mean")
    kept = None
    if ignore_index is not None:
        kept = ops.not_equal(labels, ignore_index)
        labels = ops.where(kept, labels, 0)  # an ignored row reads class 0, then counts 0
    per_sample = -_loss_ops.pick(log_probs, labels) * w_n
    if label_smoothing:
        spread = log_probs * weight if weight is not None else log_probs
        smooth = -ops.sum(spread, axis=1)
        per_sample = (per_sample * (1.0 - label_smoothing)
                      + smooth * (label_smoothing / classes))
    if kept is not None:  # PyTorch fills ignored rows with 0 (not 0 * loss, which may be NaN)
        per_sample = ops.where(kept, per_sample, 0.0)
    if reduction == "mean":
        return ops.sum(per_sample) / ops.sum(w_n)
    if reduction == "sum":
        return ops.sum(per_sample)
    return per_sample


def _check_reduction(reduction: Any, what: str, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ShapeError(f"{what}: reduction must be one of {allowed}, got {reduction!r}")


def nll_loss(input: Tensor, target: Tensor, weight: Any = None, *, ignore_index: int | None = None,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer ``target`` (N,) under log-probabilities ``input`` (N, C),
    as ``F.nll_loss``: ``-weight[y] * input[n, y]`` per sample; ``"mean"`` divides by the sum of
    ``weight[y]`` over the targets not equal to ``ignore_index`` (None: none is ignored)."""
    _check_labels(input, target, "nll_loss")
    _check_reduction(reduction, "nll_loss")
    w = _class_weight(weight, input, "nll_loss")
    ignore = _check_ignore_index(ignore_index, "nll_loss")
    if w is None and ignore is None:
        return _reduce(-_loss_ops.pick(input, target), reduction)
    return _weighted(input, target, w, ignore, reduction, 0.0)


def nll(log_probs: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer ``labels`` (N,) under ``log_probs`` (N, C): ``nll_loss``
    without weights (its earlier name)."""
    _check_labels(log_probs, labels, "nll")
    return _reduce(-_loss_ops.pick(log_probs, labels), reduction)


def cross_entropy(logits: Tensor, labels: Tensor, weight: Any = None, *, ignore_index: int | None = None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy from raw scores, as PyTorch's ``F.cross_entropy``.

    logits (N, C), labels (N,) integers in [0, C) -> scalar (mean over the batch). With
    ``label_smoothing`` e the target is (1 - e) one-hot + e / C. ``weight`` (C,) weighs each
    sample by its target's class (and the smoothing term by each class's weight);
    ``ignore_index`` drops the samples with that label; ``"mean"`` then divides by the sum of
    the kept targets' weights, as PyTorch does (a FeedError at run time if that sum is 0,
    where PyTorch gives NaN). Without weight and ignore_index it is one composite op
    (``cross_entropy``) in the declared graph, which the compiler runs as one fused step.
    """
    _check_labels(logits, labels, "cross_entropy")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ShapeError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if reduction not in _REDUCTIONS:
        raise ShapeError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    w = _class_weight(weight, logits, "cross_entropy")
    ignore = _check_ignore_index(ignore_index, "cross_entropy")
    if w is None and ignore is None:
        return declare("cross_entropy", [logits, labels],
                       {"label_smoothing": float(label_smoothing), "reduction": reduction})
    return _weighted(ops.log_softmax(logits, axis=1), labels, w, ignore, reduction, float(label_smoothing))


# --- regression ------------------------------------------------------------------------------------

def mse_loss(input: Tensor, target: Any, *, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(input - target) ** 2``, as ``F.mse_loss``; same shapes."""
    target = as_tensor(target, input)
    _same_shape("mse_loss", input, target)
    _check_reduction(reduction, "mse_loss")
    diff = input - target
    return _reduce(diff * diff, reduction)


def mse(prediction: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error; ``prediction`` and ``target`` must have the same shape (``mse_loss``)."""
    target = as_tensor(target, prediction)
    if prediction.ndim != target.ndim or not all(dims_equal(a, b) for a, b in zip(prediction.shape, target.shape)):
        raise ShapeError(f"mse: prediction {prediction.shape} and target {target.shape} differ in shape")
    diff = prediction - target
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target: Any, *, reduction: str = "mean") -> Tensor:
    """Mean absolute error ``|input - target|``, as ``F.l1_loss``; same shapes."""
    target = as_tensor(target, input)
    _same_shape("l1_loss", input, target)
    _check_reduction(reduction, "l1_loss")
    return _reduce(ops.abs(input - target), reduction)


def smooth_l1_loss(input: Tensor, target: Any, *, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """``0.5 d ** 2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = input - target``),
    as ``F.smooth_l1_loss``; ``beta=0`` is ``l1_loss``."""
    target = as_tensor(target, input)
    _same_shape("smooth_l1_loss", input, target)
    _check_reduction(reduction, "smooth_l1_loss")
    beta = _non_negative("smooth_l1_loss", "beta", beta)
    d = input - target
    size = ops.abs(d)
    if beta == 0.0:
        return _reduce(size, reduction)
    return _reduce(ops.where(size < beta, d * d * (0.5 / beta), size - 0.5 * beta), reduction)


def huber_loss(input: Tensor, target: Any, *, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """``0.5 d ** 2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``, as ``F.huber_loss``."""
    target = as_tensor(target, input)
    _same_shape("huber_loss", input, target)
    _check_reduction(reduction, "huber_loss")
    delta = _non_negative("huber_loss", "delta", delta)
    if delta == 0.0:
        raise ShapeError("huber_loss: delta must be > 0, got 0.0")
    d = input - target
    size = ops.abs(d)
    return _reduce(ops.where(size < delta, d * d * 0.5, (size - 0.5 * delta) * delta), reduction)


def _non_negative(what: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ShapeError(f"{what}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


# --- probabilities --------------------------------------------------------------------------------

def _clamped_log(x: Tensor) -> Tensor:
    """``max(log(x), -100)``, with ``log(0) = -inf`` clamped too and a gradient that is 0 (not
    NaN) there: PyTorch's binary_cross_entropy clamp."""
    positive = x > 0.0
    return ops.where(positive, ops.maximum(ops.log(ops.where(positive, x, 1.0)), -100.0), -100.0)


def binary_cross_entropy(input: Tensor, target: Any, weight: Any = None, *, reduction: str = "mean") -> Tensor:
    """``-weight (t log(x) + (1 - t) log(1 - x))`` on probabilities ``x``, as
    ``F.binary_cross_entropy``: each log is clamped to >= -100, so ``x`` of exactly 0 or 1
    costs at most 100. ``weight`` broadcasts against ``input``."""
    _float_input("binary_cross_entropy", input)
    target = as_tensor(target, input)
    _same_shape("binary_cross_entropy", input, target)
    _check_reduction(reduction, "binary_cross_entropy")
    per_element = -(target * _clamped_log(input) + (1.0 - target) * _clamped_log(1.0 - input))
    if weight is not None:
        per_element = per_element * (weight if isinstance(weight, Tensor) else constant(weight, input.dtype))
    return _reduce(per_element, reduction)


def binary_cross_entropy_with_logits(logits: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Sigmoid cross-entropy from raw scores, stable for large |logits|; same shapes."""
    target = as_tensor(target, logits)
    if logits.ndim != target.ndim or not all(dims_equal(a, b) for a, b in zip(logits.shape, target.shape)):
        raise ShapeError(f"binary_cross_entropy_with_logits: logits {logits.shape} and target {target.shape} differ")
    # max(x, 0) - x * t + log(1 + exp(-|x|))
    per_element = ops.relu(logits) - logits * target + ops.log(1.0 + ops.exp(-ops.abs(logits)))
    return _reduce(per_element, reduction)


def kl_div(input: Tensor, target: Any, *, reduction: str = "mean", log_target: bool = False) -> Tensor:
    """Kullback-Leibler divergence, as ``F.kl_div``: ``input`` holds log-probabilities, ``target``
    probabilities (log-probabilities with ``log_target``); per element
    ``target * (log(target) - input)`` (0 where ``target`` is 0), or
    ``exp(target) * (target - input)``. ``"batchmean"`` divides the sum by the batch size (the
    first dimension): the true KL divergence per sample; ``"mean"`` (PyTorch's default)
    averages over every element."""
    _float_input("kl_div", input)
    target = as_tensor(target, input)
    _same_shape("kl_div", input, target)
    _check_reduction(reduction, "kl_div", _REDUCTIONS + ("batchmean",))
    if not isinstance(log_target, bool):
        raise ShapeError(f"kl_div: log_target must be a bool, got {log_target!r}")
    if log_target:
        per_element = ops.exp(target) * (target - input)
    else:
        # xlogy(t, t) - t * input: t log t is 0 at t = 0
        per_element = target * (ops.log(ops.where(ops.equal(target, 0.0), 1.0, target)) - input)
    if reduction != "batchmean":
        return _reduce(per_element, reduction)
    if per_element.ndim == 0:
        return per_element
    if per_element.ndim == 1:
        return ops.mean(per_element)  # the sum over N elements divided by N
    return ops.mean(ops.sum(per_element, axis=tuple(range(1, per_element.ndim))))
