"""Softmax cross-entropy on the CPU in one pass per row, with numba.

``softmax_cross_entropy`` is defined once, in graphnet/ops/losses.py, with a kernel written
against ``xp``: some fifteen whole-array calls, which on a (256, 10) batch of scores cost
more in call overhead (about 0.15 ms) than in arithmetic. This loop does each row in one
pass for the maximum and one for the exponentials, with the row sums in float64. The NumPy
executor uses it where numba is installed; tests hold it to the ``xp`` kernel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import FeedError
from ...ops.common import into_each
from ...ops.losses import ignore_hint


@functools.lru_cache(maxsize=1)
def _rows() -> Callable[..., int]:
    import numba  # only plans with this loss pay for importing it

    @numba.njit(cache=True, error_model="numpy", nogil=True)
    def rows(logits, labels, smoothing, probs, per_sample):  # pragma: no cover - compiled
        """Probabilities and each row's loss; returns the first row whose label is out of
        range (its loss is not computed), or -1."""
        n_count, classes = logits.shape
        for r in range(n_count):
            label = labels[r]
            if label < 0 or label >= classes:
                return r
            top = logits[r, 0]
            for k in range(1, classes):
                if logits[r, k] > top or logits[r, k] != logits[r, k]:
                    top = logits[r, k]
            total = 0.0
            shifted_sum = 0.0
            for k in range(classes):
                shifted = np.float64(logits[r, k] - top)
                value = math.exp(shifted)
                probs[r, k] = value
                total += value
                shifted_sum += shifted
            scale = 1.0 / total
            for k in range(classes):
                probs[r, k] *= scale
            log_total = math.log(total)
            loss = log_total - np.float64(logits[r, label] - top)
            if smoothing != 0.0:
                loss = loss * (1.0 - smoothing) + (log_total - shifted_sum / classes) * smoothing
            per_sample[r] = loss
        return -1

    return rows


def softmax_cross_entropy(logits: Any, labels: Any, *, label_smoothing: float, reduction: str,
                          out: Any = None) -> tuple[Any, Any]:
    """What graphnet.ops.losses' ``softmax_cross_entropy`` kernel computes, for NumPy arrays
    (written into ``out``'s arrays where given): (loss, probabilities)."""
    n_count, classes = logits.shape
    if labels.shape != (n_count,):  # (the loop reads one label per row, unchecked)
        raise FeedError(f"softmax_cross_entropy: {n_count} rows of scores but labels of shape {labels.shape}")
    given = out if out is not None else (None, None)
    probs = given[1] if given[1] is not None and given[1].flags.c_contiguous else np.empty(logits.shape, logits.dtype)
    per_sample = np.empty(n_count, np.float64)
    bad = _rows()(np.ascontiguousarray(logits), labels, float(label_smoothing), probs, per_sample)
    if bad >= 0:
        raise FeedError(f"labels must lie in [0, {classes}), got {int(labels[bad])} (row {bad})"
                        f"{ignore_hint(labels)}")
    if reduction == "mean":
        loss = per_sample.mean() if n_count else math.nan
    elif reduction == "sum":
        loss = per_sample.sum()
    else:
        loss = per_sample
    return into_each(np, (np.asarray(loss, dtype=logits.dtype), probs), out)


#: op name -> the NumPy executor's numba implementation
