"""The NumPy executor's numba softmax cross-entropy (graphnet/kernels/cpu/losses.py) against
the op's ``xp`` kernel: probabilities, every reduction, label smoothing, extreme and
non-finite scores, out-of-range labels, and ``out=``."""

from __future__ import annotations

import numpy as np
import pytest

import graphnet as gn
from graphnet.ops import losses

cpu_losses = pytest.importorskip("graphnet.kernels.cpu.losses")
pytest.importorskip("numba")


def _xp(logits, labels, **attrs):
    return losses._sce_kernel(np, logits, labels, **attrs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_matches_the_xp_kernel(dtype, reduction, smoothing):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((37, 11)) * 5).astype(dtype)
    logits[3] += 80.0  # a row whose exponentials overflow unless shifted
    labels = rng.integers(0, 11, 37)
    attrs = {"label_smoothing": smoothing, "reduction": reduction}
    loss, probs = cpu_losses.softmax_cross_entropy(logits, labels, **attrs)
    want_loss, want_probs = _xp(logits.astype(np.float64), labels, **attrs)
    tolerance = 1e-6 if dtype == "float32" else 1e-12
    assert loss.dtype == probs.dtype == np.dtype(dtype) and probs.shape == logits.shape
    np.testing.assert_allclose(probs, want_probs, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(loss, want_loss, rtol=tolerance, atol=tolerance)


def test_non_finite_scores_give_nan_like_the_xp_kernel():
    logits = np.array([[1.0, np.nan, 0.0], [1.0, 2.0, 3.0]], np.float32)
    loss, probs = cpu_losses.softmax_cross_entropy(logits, np.array([0, 2]), label_smoothing=0.0,
                                                     reduction="none")
    want_loss, want_probs = _xp(logits, np.array([0, 2]), label_smoothing=0.0, reduction="none")
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(want_loss))
    np.testing.assert_allclose(probs[1], want_probs[1], rtol=1e-6)
    assert np.isnan(probs[0]).all()


def test_out_of_range_labels_are_feed_errors():
    with pytest.raises(gn.FeedError, match=r"labels must lie in \[0, 3\), got 3 \(row 1\)"):
        cpu_losses.softmax_cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 3]),
                                           label_smoothing=0.0, reduction="mean")


def test_writes_into_out_and_an_empty_batch_has_a_nan_mean():
    logits = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    out = (np.empty((), np.float32), np.empty((5, 4), np.float32))
    loss, probs = cpu_losses.softmax_cross_entropy(logits, np.arange(5) % 4, label_smoothing=0.0,
                                                     reduction="mean", out=out)
    assert loss is out[0] and probs is out[1]
    empty, _ = cpu_losses.softmax_cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                                  label_smoothing=0.0, reduction="mean")
    assert np.isnan(empty)


def test_labels_of_another_length_are_refused():
    with pytest.raises(gn.FeedError, match="3 rows of scores but labels of shape"):
        cpu_losses.softmax_cross_entropy(np.zeros((3, 4), np.float32), np.zeros(5, np.int64),
                                           label_smoothing=0.0, reduction="mean")
