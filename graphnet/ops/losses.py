"""Softmax cross-entropy: a composite op, so exporters see one loss rather than its pieces;
``pick`` (one score per row) and ``target_weights`` (class weights and ignored labels) for
the losses graphnet.losses composes."""

from __future__ import annotations

from typing import Any

from .. import dtypes
from ..errors import DTypeError, FeedError, ShapeError
from ..ir import TensorType, TupleType
from ..tensor import Tensor
from .common import declare, dims_equal, into_each
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


def ignore_hint(labels: Any) -> str:
    """For a labels error: how to ignore PyTorch's padding label -100, when the labels hold it."""
    if labels.size and bool((labels == -100).any()):
        return ("; -100 is PyTorch's default ignore_index, while graphnet ignores no label unless asked: "
                "pass ignore_index=-100")
    return ""


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
                        f"{int(labels.max())}{ignore_hint(labels)}")
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



# --- softmax cross-entropy in one step (the fuse_cross_entropy pass) ---------------------------
#
# Decomposed, cross_entropy is log_softmax, pick, negation, the reduction and a dozen gradient
# steps. ``softmax_cross_entropy`` computes the loss and keeps the probabilities (its second
# result) for its gradient, which is one ``softmax_cross_entropy_grad`` step:
# (softmax - (1 - s) onehot - s / C) times the loss gradient per sample (s: label smoothing).

def _sce_infer(logits: TensorType, labels: TensorType, *, label_smoothing: float, reduction: str) -> TupleType:
    return TupleType((_infer(logits, labels, label_smoothing=label_smoothing, reduction=reduction), logits))


def _check_labels(labels: Any, classes: int) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise FeedError(f"labels must lie in [0, {classes}), got values from {int(labels.min())} to "
                        f"{int(labels.max())}{ignore_hint(labels)}")


def _sce_kernel(xp: Any, logits: Any, labels: Any, *, label_smoothing: float, reduction: str,
                out: Any = None) -> tuple[Any, Any]:
    _check_labels(labels, logits.shape[1])
    shifted = logits - logits.max(axis=1, keepdims=True)
    exps = xp.exp(shifted)
    total = exps.sum(axis=1, keepdims=True)
    log_total = xp.log(total)
    rows = labels.astype(xp.intp, copy=False)[:, None]
    per_sample = (log_total - xp.take_along_axis(shifted, rows, axis=1))[:, 0]
    if label_smoothing:
        uniform = (log_total[:, 0] - shifted.mean(axis=1))
        per_sample = per_sample * logits.dtype.type(1.0 - label_smoothing) + uniform * logits.dtype.type(label_smoothing)
    exps /= total
    if reduction == "mean":
        loss = per_sample.mean(dtype=logits.dtype) if per_sample.size else xp.asarray(xp.nan, logits.dtype)
    elif reduction == "sum":
        loss = per_sample.sum(dtype=logits.dtype)
    else:
        loss = per_sample
    return into_each(xp, (xp.asarray(loss, dtype=logits.dtype), exps), out)


def _sce_grad(gs: tuple, outs: tuple[Tensor, ...], ins: tuple[Tensor, ...], *, label_smoothing: float,
              reduction: str) -> tuple:
    if gs[1] is not None:
        raise ShapeError("softmax_cross_entropy's probabilities are only read by its gradient")
    if gs[0] is None:
        return (None, None)
    return (declare("softmax_cross_entropy_grad", [gs[0], outs[1], ins[1]],
                    {"label_smoothing": label_smoothing, "reduction": reduction}), None)


defop("softmax_cross_entropy", attrs={"label_smoothing": "float", "reduction": "str"}, category="other",
      infer=_sce_infer, kernel=_sce_kernel, grad=_sce_grad, accepts_out=True,
      doc="cross_entropy in one step: (loss, softmax probabilities) from (N, C) scores and (N,) labels.")


def _sce_grad_infer(g: TensorType, probs: TensorType, labels: TensorType, *, label_smoothing: float,
                    reduction: str) -> TensorType:
    want = probs.shape[:1] if reduction == "none" else ()
    if g.ndim != len(want) or probs.ndim != 2 or labels.ndim != 1:
        raise ShapeError(f"softmax_cross_entropy_grad: gradient {g}, probabilities {probs}, labels {labels}")
    return probs


def _sce_grad_kernel(xp: Any, g: Any, probs: Any, labels: Any, *, label_smoothing: float, reduction: str,
                     out: Any = None) -> Any:
    n, classes = probs.shape
    if out is None:
        grad = probs.copy()
    else:
        grad = out
        xp.copyto(grad, probs)
    rows = xp.arange(n)
    grad[rows, labels.astype(xp.intp, copy=False)] -= probs.dtype.type(1.0 - label_smoothing)
    if label_smoothing:
        grad -= probs.dtype.type(label_smoothing / classes)
    scale = g[:, None] if reduction == "none" else g / probs.dtype.type(n) if reduction == "mean" else g
    grad *= scale.astype(probs.dtype, copy=False)
    return grad


defop("softmax_cross_entropy_grad", attrs={"label_smoothing": "float", "reduction": "str"}, category="other",
      accepts_out=True,
      infer=_sce_grad_infer, kernel=_sce_grad_kernel,
      doc="The logits' gradient of softmax_cross_entropy, in one step.")


# --- per-sample target weights (nll_loss / cross_entropy with weight or ignore_index) ----------
#
# PyTorch's weighted, ignoring loss is sum_n w[y_n] * l_n over the targets not ignored, and its
# mean divides by sum_n w[y_n] over those targets. ``target_weights`` gives each sample's
# w[y_n] (0 for an ignored target); the losses in graphnet.losses compose the rest from pick,
# log_softmax and reductions. It checks the labels (each a class index or ignore_index), and
# with ``require_total`` that the weights sum to something other than 0: a mean over no
# targets (all ignored, or all of weight 0) is 0/0, a NaN in PyTorch and a FeedError here.

def _tw_infer(labels: TensorType, weight: TensorType, *, ignore_index: int, ignoring: bool,
              require_total: bool) -> TensorType:
    if labels.ndim != 1:
        raise ShapeError(f"target_weights reads (N,) labels, got {labels.shape}")
    if not dtypes.is_int(labels.dtype):
        raise DTypeError(f"labels must be integer class indices, got {labels.dtype}")
    if weight.ndim != 1 or not isinstance(weight.shape[0], int):
        raise ShapeError(f"target_weights reads a (C,) weight per class with a static C, got {weight.shape}")
    if not dtypes.is_float(weight.dtype):
        raise DTypeError(f"class weights must be floating, got {weight.dtype}")
    return TensorType(labels.shape, weight.dtype)


def _tw_kernel(xp: Any, labels: Any, weight: Any, *, ignore_index: int, ignoring: bool,
               require_total: bool) -> Any:
    classes = weight.shape[0]
    ignored = labels == ignore_index if ignoring else xp.zeros(labels.shape, dtype=bool)
    bad = ~ignored & ((labels < 0) | (labels >= classes))
    if bad.any():
        row = int(xp.argmax(bad))
        also = f" or be ignore_index ({ignore_index})" if ignoring else ""
        raise FeedError(f"labels must lie in [0, {classes}){also}, got {int(labels[row])} (row {row})")
    rows = xp.where(ignored, 0, labels).astype(xp.intp, copy=False)
    out = weight[rows] if classes else xp.zeros(labels.shape, weight.dtype)
    out[ignored] = 0
    if require_total and out.sum(dtype=xp.float64) == 0:
        what = "every target is ignored" if ignored.all() else "the targets' weights sum to 0"
        raise FeedError(f"the mean of a weighted or ignoring loss divides by the sum of the weights of the targets "
                        f"not ignored, but {what} ({labels.shape[0]} labels): PyTorch returns NaN here; use "
                        f"reduction='sum' or leave such batches out")
    return out


defop("target_weights", attrs={"ignore_index": "int", "ignoring": "bool", "require_total": "bool"},
      category="other", infer=_tw_infer, kernel=_tw_kernel,
      # class weights are constants to differentiation, as in PyTorch (which refuses to differentiate them)
      grad=lambda g, out, ins, **_: (None, None),
      doc="weight[labels[n]] for each label, 0 where labels[n] == ignore_index: (N,) and (C,) -> (N,); "
          "FeedError on labels out of range and, with require_total, on weights summing to 0.")


def target_weights(labels: Tensor, weight: Tensor, ignore_index: int | None, require_total: bool) -> Tensor:
    """``weight[labels[n]]`` per sample, 0 where ``labels[n] == ignore_index`` (None: no label is
    ignored); with ``require_total``, a FeedError at run time when they sum to 0. The weights get
    no gradient: PyTorch does not differentiate class weights either."""
    return declare("target_weights", [labels, weight],
                   {"ignore_index": -100 if ignore_index is None else int(ignore_index),
                    "ignoring": ignore_index is not None, "require_total": bool(require_total)})
