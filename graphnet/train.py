"""Fit, evaluate and predict over compiled plans, in the style of Keras' ``model.fit``.

    train = gn.compile({"loss": loss, "logits": logits}, optimizer=gn.optim.Adam(lr=1e-3))
    infer = gn.compile({"logits": logits})               # shares the parameters
    history = gn.train.fit(train, train_loader, epochs=5, eval_plan=infer, val_data=val_loader,
                           schedule=gn.optim.StepLR(train.optimizer, step_size=2))
    print(history)                                        # one line per epoch
    probs = gn.train.softmax(gn.train.predict(infer, images))

Data are iterables of ``(x, y)`` NumPy batches: a ``gn.data.DataLoader``, or a plain list
of tuples. They are iterated once per epoch, so they must be re-iterable (not generators).

Epochs are numbered from 1 everywhere (progress bar, log lines, errors, callbacks): after
epoch ``e``, ``len(history) == e``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import FeedError, GraphnetError, LossNotFiniteError, NumericsError, OptimizerError

__all__ = ["History", "TrainingDivergedError", "fit", "evaluate", "predict", "softmax", "log_softmax"]


class TrainingDivergedError(NumericsError):
    """The training loss became NaN or Inf; ``fit`` stopped at that step.

    Attributes: ``epoch`` (1-based), ``step`` (1-based, within the epoch), ``loss`` (the
    non-finite value), ``last_finite_loss`` (None if no step was finite), ``lr`` (None for a
    plan without optimizer) and ``history`` (the epochs completed before).
    """

    def __init__(self, message: str, *, epoch: int, step: int, loss: float, last_finite_loss: float | None,
                 lr: float | None, history: "History") -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.loss = loss
        self.last_finite_loss = last_finite_loss
        self.lr = lr
        self.history = history


# --- History -----------------------------------------------------------------------------------------------------

_FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second")


def _plain(value: Any) -> float | None:
    """A JSON-safe float: None stays None, NaN and Inf become None."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


class History:
    """Per-epoch records of a :func:`fit` run; every field is a list with one entry per epoch.

    - ``train_loss``: the sample-weighted mean of the training plan's loss over the epoch.
    - ``train_accuracy``: accuracy of the training plan's ``output`` (as the parameters moved
      during the epoch), or None when the training plan does not return that output.
    - ``val_loss``, ``val_accuracy``: from :func:`evaluate` after the epoch (None without
      validation data).
    - ``lr``: the learning rate the epoch trained with (None for a plan without optimizer).
    - ``seconds``: wall time of the whole epoch, validation included.
    - ``images_per_second``: training throughput (training steps only).
    """

    def __init__(self) -> None:
        self.train_loss: list[float] = []
        self.train_accuracy: list[float | None] = []
        self.val_loss: list[float | None] = []
        self.val_accuracy: list[float | None] = []
        self.lr: list[float | None] = []
        self.seconds: list[float] = []
        self.images_per_second: list[float] = []

    @property
    def epochs(self) -> list[int]:
        """The epoch numbers, 1-based."""
        return list(range(1, len(self) + 1))

    def __len__(self) -> int:
        return len(self.train_loss)

    def append(self, **record: Any) -> None:
        """Add one epoch; every field must be given (None where it does not apply)."""
        missing = [f for f in _FIELDS if f not in record]
        extra = [k for k in record if k not in _FIELDS]
        if missing or extra:
            raise GraphnetError(f"History.append: missing fields {missing}, unknown fields {extra}")
        for name in _FIELDS:
            getattr(self, name).append(_plain(record[name]))

    def last(self) -> dict[str, Any]:
        """The last epoch's record as a dict (empty before the first epoch)."""
        if not len(self):
            return {}
        return {"epoch": len(self), **{name: getattr(self, name)[-1] for name in _FIELDS}}

    def as_dict(self) -> dict[str, list]:
        """Plain data: ``{"epoch": [1, 2, ...], "train_loss": [...], ...}`` (copies of the lists)."""
        return {"epoch": self.epochs, **{name: list(getattr(self, name)) for name in _FIELDS}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[Any]]) -> "History":
        """The inverse of :meth:`as_dict` (the ``epoch`` key is optional and ignored)."""
        history = cls()
        lengths = {name: len(data.get(name, ())) for name in _FIELDS}
        if len(set(lengths.values())) != 1:
            raise GraphnetError(f"History.from_dict: fields have different lengths {lengths}")
        for name in _FIELDS:
            setattr(history, name, [_plain(v) for v in data[name]])
        return history

    def to_json(self, path: str | os.PathLike[str]) -> str:
        """Write :meth:`as_dict` as plain JSON (NaN/Inf written as null) and return the path."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.as_dict(), fh, indent=2, allow_nan=False)
            fh.write("\n")
        return os.fspath(path)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> "History":
        """Read a file written by :meth:`to_json`."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def summary(self) -> str:
        """A text table, one row per epoch."""
        header = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "img/s")
        rows = []
        for i in range(len(self)):
            rows.append((
                str(i + 1), _fmt(self.train_loss[i], ".4f"), _fmt(self.train_accuracy[i], ".4f"),
                _fmt(self.val_loss[i], ".4f"), _fmt(self.val_accuracy[i], ".4f"), _fmt(self.lr[i], ".3g"),
                _fmt(self.seconds[i], ".2f"), _fmt(self.images_per_second[i], ".0f"),
            ))
        widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h) for j, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        n = len(self)
        return f"History({n} epoch{'s' if n != 1 else ''})" + ("\n" + self.summary() if n else "")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# --- NumPy helpers -----------------------------------------------------------------------------------------------

def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log(softmax(logits))`` in float64, stable for large scores (log-sum-exp)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Class probabilities from raw scores (float64), e.g. for :func:`graphnet.plots.plot_prediction`."""
    return np.exp(log_softmax(logits, axis=axis))


def _labels(y: Any, n_classes: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise FeedError(f"{what}: labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise FeedError(f"{what}: labels must be in [0, {n_classes}), got values in [{y.min()}, {y.max()}]")
    return y


def _scores(out: np.ndarray, n: int, name: str, what: str) -> np.ndarray:
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[0] != n:
        raise GraphnetError(f"{what}: output {name!r} must be (N, classes) scores for N={n} samples, "
                            f"got shape {out.shape}")
    return out


# --- plumbing ----------------------------------------------------------------------------------------------------

def _output_names(plan: Any) -> list[str]:
    return list(plan.plan.outputs)


def _resolve_output(plan: Any, output: str | None, what: str) -> str:
    """``output`` if the plan returns it; else the plan's only output; else a clear error."""
    names = _output_names(plan)
    if output is not None and output in names:
        return output
    if len(names) == 1:
        return names[0]
    wanted = f"an output named {output!r}" if output is not None else "one output (or pass output=...)"
    raise GraphnetError(f"{what}: the plan must return {wanted}; it returns {names}")


def _check_feed(plan: Any, name: str, what: str) -> None:
    feeds = sorted(plan.plan.feeds)
    if name not in feeds:
        raise FeedError(f"{what}: the plan has no feed named {name!r}; its feeds are {feeds} "
                        f"(set feed_names/feed_name to match your placeholders)")


def _batches(data: Iterable[Any], what: str) -> Iterable[tuple[Any, Any]]:
    for i, item in enumerate(data):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise GraphnetError(f"{what}: batch {i} must be an (x, y) pair, got {type(item).__name__}")
        yield item[0], item[1]


def _feed_batches(data: Iterable[Any], names: Sequence[str], what: str) -> Iterable[dict[str, Any]]:
    """Each batch as feeds by name: a dict as it is, a tuple (or a single array) matched to ``names``."""
    for i, item in enumerate(data):
        if isinstance(item, Mapping):
            yield dict(item)
            continue
        values = tuple(item) if isinstance(item, (tuple, list)) else (item,)
        if len(values) != len(names):
            raise GraphnetError(f"{what}: batch {i} has {len(values)} parts, but the plan's feeds are {list(names)} "
                                f"(pass feed_names=..., or batches as dicts by feed name)")
        yield dict(zip(names, values))


def _len(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


def _current_lr(plan: Any) -> float | None:
    opt = getattr(plan, "optimizer", None)
    return None if opt is None else float(opt.lr)


# --- evaluate and predict ----------------------------------------------------------------------------------------

def evaluate(plan: Any, data: Iterable[Any], *, feed_name: str = "x", output: str | None = "logits",
             compute_loss: bool = True) -> dict[str, float]:
    """Accuracy (and mean cross-entropy) of an inference plan over ``(x, y)`` batches.

    ``plan.run({feed_name: x})[output]`` must be raw class scores (logits) of shape (N, C);
    if the plan returns a single output it is used whatever its name. Accuracy is the
    fraction of samples whose argmax equals the label. With ``compute_loss`` the mean
    softmax cross-entropy of the scores is computed in NumPy (float64 log-sum-exp), so a
    validation loss needs no second plan. Returns ``{"accuracy", "loss", "samples"}``
    (``loss`` only with ``compute_loss``). Only ``feed_name`` is fed: the plan must not
    need the labels.
    """
    what = "evaluate"
    _check_feed(plan, feed_name, what)
    name = _resolve_output(plan, output, what)
    correct = 0
    total = 0
    nll_sum = 0.0
    for x, y in _batches(data, what):
        n = len(y)
        scores = _scores(plan.run({feed_name: x})[name], n, name, what)
        y = _labels(y, scores.shape[1], what)
        correct += int(np.count_nonzero(scores.argmax(axis=1) == y))
        if compute_loss:
            nll_sum += float(-log_softmax(scores, axis=1)[np.arange(n), y].sum())
        total += n
    if total == 0:
        raise GraphnetError(f"{what}: the data yielded no samples")
    result = {"accuracy": correct / total}
    if compute_loss:
        result["loss"] = nll_sum / total
    result["samples"] = total
    return result


def predict(plan: Any, images: np.ndarray, batch_size: int = 256, feed_name: str = "x",
            output: str | None = None) -> np.ndarray:
    """Run ``plan`` over ``images`` in batches and stack ``output`` along axis 0.

    ``output=None`` takes the plan's only output (name it when the plan has several).
    Returns an array with ``len(images)`` rows (raw scores for a classifier: see :func:`softmax`).
    """
    what = "predict"
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise GraphnetError(f"{what}: batch_size must be a positive integer, got {batch_size!r}")
    _check_feed(plan, feed_name, what)
    name = _resolve_output(plan, output, what)
    images = np.asarray(images)
    if images.ndim == 0 or len(images) == 0:
        raise GraphnetError(f"{what}: expected a non-empty batch of images, got shape {images.shape}")
    parts = [np.asarray(plan.run({feed_name: images[i:i + batch_size]})[name])
             for i in range(0, len(images), int(batch_size))]
    return np.concatenate(parts, axis=0)


# --- fit ---------------------------------------------------------------------------------------------------------

def _diverged(epoch: int, epochs: int, step: int, steps: int | None, loss: float, last_finite: float | None,
              lr: float | None, history: History) -> TrainingDivergedError:
    where = f"epoch {epoch}/{epochs}, step {step}" + (f"/{steps}" if steps else "")
    last = "none (the first step already diverged)" if last_finite is None else f"{last_finite:.6g}"
    lr_text = "n/a" if lr is None else f"{lr:.6g}"
    message = (f"training diverged: loss is {loss} at {where}; last finite loss {last}; lr {lr_text}. "
               f"Try a lower learning rate (or gradient clipping: max_grad_norm=...), check the data for "
               f"NaN/Inf, and compile with gn.compile(..., check_numerics=True) to find the op that "
               f"first produces a NaN or Inf.")
    return TrainingDivergedError(message, epoch=epoch, step=step, loss=loss, last_finite_loss=last_finite,
                                 lr=lr, history=history)


def _progress_bar(progress: bool | None, total: int | None, desc: str) -> Any:
    from tqdm.auto import tqdm

    tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
    enabled = tty if progress is None else bool(progress)
    # on a terminal refresh twice a second; in a log file, a line every 10 s at most
    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled, mininterval=0.5 if tty else 10.0,
                dynamic_ncols=True, leave=True)


def fit(
    train_plan: Any,
    train_data: Iterable[Any],
    *,
    epochs: int = 1,
    eval_plan: Any = None,
    val_data: Iterable[Any] | None = None,
    feed_names: Sequence[str] | None = None,
    output: str = "logits",
    schedule: Any = None,
    progress: bool | None = True,
    checkpoint: Callable[[int, History], None] | None = None,
    on_epoch_end: Callable[[int, History], Any] | None = None,
    log: Callable[[str], Any] | None = print,
) -> History:
    """Train ``train_plan`` for ``epochs`` passes over ``train_data`` and return a :class:`History`.

    Any training plan trains: each batch is a dict of feeds by name, or a tuple matched to
    ``feed_names`` in order (by default ``("x", "labels")`` when the plan takes those two
    feeds, else the plan's feeds in the order ``train_plan.plan.feeds`` lists them). Each
    batch runs one optimizer update and reads the loss: the output named ``"loss"``, else
    the plan's first output. Training accuracy is recorded when the plan also returns
    ``output`` (compile ``{"loss": loss, "logits": logits}``) and takes a labels feed (the
    second of ``feed_names``, or ``"labels"``); otherwise it is None. An autoencoder's
    batches are ``(x,)`` or ``{"x": x}``.

    After each epoch, in order:

    1. validation: ``evaluate(eval_plan, val_data, feed_name=feed_names[0], output=output)``
       (loss and accuracy; give both ``eval_plan`` and ``val_data``, or neither);
    2. the epoch is appended to the history, with the learning rate it trained with;
    3. ``schedule.step()`` (an LR schedule of ``train_plan.optimizer``) sets the next lr
       (``ReduceLROnPlateau`` is given the epoch's validation loss, or its training loss
       without validation);
    4. a summary line goes to ``log`` (``None`` for silence);
    5. ``checkpoint(epoch, history)``: the hook for saving state (the plan export plugs in
       here); the schedule has already stepped, so a save resumes at the next epoch;
    6. ``on_epoch_end(epoch, history)``: user callbacks; returning ``True`` stops training
       after this epoch (early stopping).

    ``epoch`` is 1-based and equals ``len(history)``. ``progress`` shows a tqdm bar per epoch
    (running loss, images/s, ETA); ``None`` shows it only on a terminal. A NaN or Inf loss
    raises :class:`TrainingDivergedError` at once, naming the epoch, the step, the last
    finite loss and the lr.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise GraphnetError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
    epochs = int(epochs)
    if getattr(train_plan, "optimizer", None) is None:
        raise OptimizerError("fit: train_plan has no optimizer, so it would not learn; compile it with "
                             "gn.compile(loss, optimizer=gn.optim.Adam(...))")
    plan_feeds = list(train_plan.plan.feeds)
    if feed_names is None:
        feed_names = ("x", "labels") if sorted(plan_feeds) == ["labels", "x"] else tuple(plan_feeds)
    if isinstance(feed_names, str) or not feed_names:
        raise GraphnetError(f"fit: feed_names must be a sequence of feed names, got {feed_names!r}")
    feed_names = tuple(feed_names)
    for name in feed_names:
        _check_feed(train_plan, name, "fit")
    x_name = feed_names[0]
    y_name = feed_names[1] if len(feed_names) > 1 else ("labels" if "labels" in plan_feeds else None)
    if (eval_plan is None) != (val_data is None):
        raise GraphnetError("fit: validation needs both eval_plan (an inference plan) and val_data")
    if eval_plan is not None:
        _check_feed(eval_plan, x_name, "fit (eval_plan)")
        _resolve_output(eval_plan, output, "fit (eval_plan)")
    if schedule is not None:
        if not hasattr(schedule, "step"):
            raise OptimizerError(f"fit: schedule must have a step() method, got {schedule!r}")
        opt = getattr(train_plan, "optimizer", None)
        if getattr(schedule, "optimizer", opt) is not opt:
            raise OptimizerError("fit: the schedule drives a different optimizer than train_plan.optimizer; "
                                 "build it as Schedule(train_plan.optimizer, ...)")
    outputs = _output_names(train_plan)
    loss_name = "loss" if "loss" in outputs else outputs[0]
    acc_name = output if output in outputs and output != loss_name and y_name is not None else None

    history = History()
    steps = _len(train_data)
    last_finite: float | None = None
    # a data-parallel plan: figures summed over the processes, and only rank 0 speaks and saves
    comm = train_plan.executor.communicator if getattr(train_plan, "data_parallel", False) else None
    if comm is not None and comm.size > 1 and comm.rank != 0:
        log, progress, checkpoint = None, False, None
    for epoch in range(1, epochs + 1):
        lr = _current_lr(train_plan)
        start = time.perf_counter()
        train_seconds = 0.0
        samples = 0
        loss_sum = 0.0
        correct = 0
        step = 0
        with _progress_bar(progress, steps, f"epoch {epoch}/{epochs}") as bar:
            last_post = 0.0
            batch_start = time.perf_counter()
            for feeds in _feed_batches(train_data, feed_names, "fit"):
                step += 1
                try:
                    out = train_plan.run(feeds)
                except LossNotFiniteError as exc:  # refused before any update
                    raise _diverged(epoch, epochs, step, steps, exc.loss, last_finite, lr, history) from None
                loss = float(out[loss_name])
                n = len(feeds[x_name])
                y = feeds.get(y_name) if y_name is not None else None
                if not math.isfinite(loss):
                    raise _diverged(epoch, epochs, step, steps, loss, last_finite, lr, history)
                last_finite = loss
                if acc_name is not None and y is not None:
                    scores = _scores(out[acc_name], n, acc_name, "fit")
                    correct += int(np.count_nonzero(scores.argmax(axis=1) == np.asarray(y)))
                samples += n
                loss_sum += loss * n
                now = time.perf_counter()
                train_seconds += now - batch_start
                bar.update(1)
                if not bar.disable and now - last_post >= bar.mininterval:
                    last_post = now
                    bar.set_postfix(loss=f"{loss_sum / samples:.4f}",
                                    img_s=f"{samples / max(train_seconds, 1e-9):.0f}", refresh=False)
                batch_start = time.perf_counter()
            if not bar.disable and samples:
                bar.set_postfix(loss=f"{loss_sum / samples:.4f}",
                                img_s=f"{samples / max(train_seconds, 1e-9):.0f}", refresh=True)
        if comm is not None and comm.size > 1:
            totals = np.array([loss_sum, correct, samples], np.float64)
            comm.allreduce(totals, "the epoch's loss and accuracy")
            loss_sum, correct, samples = float(totals[0]), int(totals[1]), int(totals[2])
        if samples == 0:
            raise GraphnetError(f"fit: train_data yielded no batches in epoch {epoch}; pass a re-iterable "
                                f"(a list or a DataLoader), not a generator or an exhausted iterator")
        val: dict[str, float] = {}
        if eval_plan is not None:
            val = evaluate(eval_plan, val_data, feed_name=x_name, output=output)  # a classifier's validation
        history.append(
            train_loss=loss_sum / samples,
            train_accuracy=correct / samples if acc_name is not None else None,
            val_loss=val.get("loss"), val_accuracy=val.get("accuracy"), lr=lr,
            seconds=time.perf_counter() - start,
            images_per_second=samples / max(train_seconds, 1e-9),
        )
        if schedule is not None:
            if getattr(schedule, "takes_metric", False):  # ReduceLROnPlateau: the validation loss, else the training loss
                schedule.step(val["loss"] if val.get("loss") is not None else loss_sum / samples)
            else:
                schedule.step()
        if log is not None:
            log(_epoch_line(epoch, epochs, history))
        if checkpoint is not None:
            checkpoint(epoch, history)
        stop = on_epoch_end is not None and on_epoch_end(epoch, history) is True
        if comm is not None and comm.size > 1:  # one process stopping stops them all, together
            flag = np.array([1.0 if stop else 0.0])
            comm.allreduce(flag, "the early-stopping decision")
            stop = bool(flag[0] > 0)
        if stop:
            break
    return history


def _epoch_line(epoch: int, epochs: int, history: History) -> str:
    rec = history.last()
    parts = [f"epoch {epoch}/{epochs}", f"loss {rec['train_loss']:.4f}"]
    if rec["train_accuracy"] is not None:
        parts.append(f"acc {rec['train_accuracy']:.4f}")
    if rec["val_loss"] is not None:
        parts.append(f"val_loss {rec['val_loss']:.4f}")
    if rec["val_accuracy"] is not None:
        parts.append(f"val_acc {rec['val_accuracy']:.4f}")
    if rec["lr"] is not None:
        parts.append(f"lr {rec['lr']:.3g}")
    parts.append(f"{rec['seconds']:.1f}s")
    parts.append(f"{rec['images_per_second']:.0f} img/s")
    return "  ".join(parts)
