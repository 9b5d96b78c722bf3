"""The seed post's two pictures: learning curves, and one image with its predicted probabilities.

matplotlib is optional (``pip install graphnet[plot]``) and imported only when a function
is called. Figures are drawn on the Agg canvas directly, without pyplot, so the user's
matplotlib backend and open figures are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import GraphnetError

__all__ = ["PlotError", "plot_history", "plot_language_model", "plot_prediction"]

_HIGHLIGHT = "#d62728"
_BAR = "#9aa5b1"
_TRAIN = "#1f77b4"
_VAL = "#ff7f0e"


class PlotError(GraphnetError):
    """A plot could not be made: matplotlib is missing, or the values to plot are malformed."""


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure attached to an Agg canvas (no pyplot, no global backend change)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PlotError("plotting needs matplotlib: pip install graphnet[plot]  "
                        f"(or pip install matplotlib); import failed with: {exc}") from exc
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png")
    return path


def _series(values: Sequence[Any] | None) -> np.ndarray | None:
    """Floats with NaN for None; None when nothing was recorded."""
    if values is None:
        return None
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    return None if arr.size == 0 or np.all(np.isnan(arr)) else arr


def _history_dict(history: Any) -> Mapping[str, Any]:
    if hasattr(history, "as_dict"):
        return history.as_dict()
    if isinstance(history, Mapping):
        return history
    raise PlotError(f"plot_history expects a History or its as_dict(), got {type(history).__name__}")


def plot_history(history: Any, path: str | os.PathLike[str], val_label: str = "validation"
                 ) -> str | os.PathLike[str]:
    """Save a PNG with two panels, loss per epoch and accuracy per epoch (train and val).

    ``history`` is a :class:`graphnet.train.History` (or its ``as_dict()``). Curves that were
    not recorded (all None) are left out. ``val_label`` names the held-out curves in the
    legend ("test" when the test set served as validation data). Returns ``path``.
    """
    data = _history_dict(history)
    train_loss = _series(data.get("train_loss"))
    n = len(data.get("train_loss") or ())
    if n == 0:
        raise PlotError("plot_history: the history has no epochs")
    epochs = np.asarray(data.get("epoch") or range(1, n + 1))
    fig = _figure(11, 4.2)
    from matplotlib.ticker import MaxNLocator

    ax_loss, ax_acc = fig.subplots(1, 2)
    panels = (
        (ax_loss, "Loss per epoch", "loss (cross-entropy)", "train_loss", "val_loss"),
        (ax_acc, "Accuracy per epoch", "accuracy", "train_accuracy", "val_accuracy"),
    )
    for ax, title, ylabel, train_key, val_key in panels:
        drawn = False
        for key, label, color in ((train_key, "train", _TRAIN), (val_key, val_label, _VAL)):
            values = train_loss if key == "train_loss" else _series(data.get(key))
            if values is not None:
                ax.plot(epochs, values, marker="o", color=color, label=label)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.tight_layout()
    return _save(fig, path)


def _image_2d(image: Any) -> np.ndarray:
    img = np.asarray(image, dtype=float)
    while img.ndim > 2 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise PlotError(f"plot_prediction: expected a grayscale image (H, W), (1, H, W) or (1, 1, H, W), "
                        f"got shape {np.shape(image)}")
    return img


def _label_index(label: Any, class_names: Sequence[str]) -> int:
    if isinstance(label, str):
        if label not in class_names:
            raise PlotError(f"plot_prediction: true_label {label!r} is not one of {list(class_names)}")
        return list(class_names).index(label)
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) and not (
            np.ndim(label) == 0 and np.asarray(label).dtype.kind in "iu"):
        raise PlotError(f"plot_prediction: true_label must be a class index or name, got {label!r}")
    index = int(label)
    if not 0 <= index < len(class_names):
        raise PlotError(f"plot_prediction: true_label {index} is out of range for {len(class_names)} classes")
    return index


def plot_prediction(image: Any, probabilities: Any, class_names: Sequence[str], path: str | os.PathLike[str],
                    true_label: int | str | None = None) -> str | os.PathLike[str]:
    """Save a PNG: the grayscale image on the left, predicted class probabilities on the right.

    ``probabilities`` has one entry per class name, non-negative and summing to 1 (from raw
    scores use ``graphnet.train.softmax``). The predicted (argmax) class is highlighted; the
    title gives the predicted label and, when ``true_label`` (an index or a name) is given,
    the true one. Returns ``path``.
    """
    img = _image_2d(image)
    probs = np.asarray(probabilities, dtype=float).reshape(-1)
    names = [str(c) for c in class_names]
    if probs.size != len(names) or probs.size == 0:
        raise PlotError(f"plot_prediction: {probs.size} probabilities for {len(names)} class names")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or abs(probs.sum() - 1.0) > 1e-3:
        raise PlotError(f"plot_prediction: probabilities must be finite, non-negative and sum to 1 "
                        f"(sum {probs.sum():.4g}); for raw scores pass graphnet.train.softmax(logits)")
    predicted = int(np.argmax(probs))
    true_index = None if true_label is None else _label_index(true_label, names)

    fig = _figure(10, 4.2)
    ax_img, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    ax_img.imshow(img, cmap="gray", interpolation="nearest")
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    ax_img.set_title(f"input ({img.shape[0]}x{img.shape[1]})")

    positions = np.arange(len(names))
    colors = [_HIGHLIGHT if i == predicted else _BAR for i in positions]
    bars = ax_bar.barh(positions, probs, color=colors)
    if true_index is not None and true_index != predicted:
        bars[true_index].set_edgecolor("black")
        bars[true_index].set_linewidth(1.5)
        bars[true_index].set_hatch("//")
    ax_bar.set_yticks(positions)
    ax_bar.set_yticklabels(names)
    if true_index is not None:
        ax_bar.get_yticklabels()[true_index].set_fontweight("bold")   # the true class
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1.08)
    ax_bar.set_xlabel("probability")
    ax_bar.set_title("predicted class probabilities")
    ax_bar.grid(True, axis="x", alpha=0.3)
    ax_bar.text(min(probs[predicted], 0.85) + 0.02, predicted, f"{probs[predicted]:.1%}", va="center")

    title = f"predicted: {names[predicted]} ({probs[predicted]:.1%})"
    color = "black"
    if true_index is not None:
        title += f"   true: {names[true_index]}"
        color = "green" if true_index == predicted else _HIGHLIGHT
    fig.suptitle(title, color=color, fontsize=13)
    fig.tight_layout()
    return _save(fig, path)


def plot_language_model(steps: Sequence[int], train_loss: Sequence[float], heldout_steps: Sequence[int],
                        heldout_loss: Sequence[float], path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """Save a PNG with two panels for a language model: the loss (nats per token) of the
    training batches and of the held-out text against the step, and the held-out perplexity
    (``exp`` of its loss). Returns ``path``."""
    train, held = _series(train_loss), _series(heldout_loss)
    if train is None or held is None or len(train) != len(steps) or len(held) != len(heldout_steps) or not len(held):
        raise PlotError("plot_language_model: each loss needs one value per step, and a held-out loss at least once")
    fig = _figure(11, 4.2)
    ax_loss, ax_ppl = fig.subplots(1, 2)
    ax_loss.plot(steps, train, color=_TRAIN, alpha=0.6, label="training batches")
    ax_loss.plot(heldout_steps, held, marker="o", color=_VAL, label="held-out text")
    ax_loss.set_title("Loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy (nats per character)")
    ax_loss.legend()
    ax_ppl.plot(heldout_steps, np.exp(held), marker="o", color=_VAL)
    ax_ppl.set_title("Held-out perplexity")
    ax_ppl.set_xlabel("step")
    ax_ppl.set_ylabel("perplexity")
    for ax in (ax_loss, ax_ppl):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
