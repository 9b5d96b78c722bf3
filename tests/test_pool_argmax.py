"""Max pooling that keeps its arg-max (graphnet/passes/save_pool_argmax.py): the saved-index
backward is bit-identical to searching the windows again, on a table of pooling shapes, and
training plans use it."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import graphnet as gn
from graphnet.ops import conv_kernels as K

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from mnist_cnn import seed_cnn  # noqa: E402

# (input shape, kernel, stride, padding): non-overlapping, overlapping, padded, 1-wide, gaps
POOLS = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0)),
    ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1)),
    ((1, 2, 6, 5), (3, 2), (2, 1), (1, 0)),
    ((1, 2, 5, 4), (2, 3), (3, 2), (1, 1)),
    ((2, 2, 6, 6), (1, 3), (1, 2), (0, 1)),
    ((2, 2, 6, 6), (3, 1), (2, 1), (1, 0)),
    ((1, 1, 4, 4), (1, 1), (1, 1), (0, 0)),
    ((2, 4, 12, 12), (4, 4), (1, 1), (2, 2)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,k,s,p", POOLS)
def test_saved_argmax_routes_exactly_as_searching_again(shape, k, s, p, dtype):
    rng = np.random.default_rng(0)
    attrs = {"kernel_size": k, "stride": s, "padding": p}
    for x in (rng.standard_normal(shape).astype(dtype),
              rng.integers(0, 3, shape).astype(dtype)):  # many ties: the first maximum wins
        y, column_arg, row_arg = K.max_pool2d_saving(np, x, **attrs)
        np.testing.assert_array_equal(y, K.max_pool2d(np, x, **attrs))
        assert column_arg.dtype == row_arg.dtype == np.uint8 and row_arg.shape == y.shape
        g = rng.standard_normal(y.shape).astype(dtype)
        saved = K.max_pool2d_grad_saved(np, g, column_arg, row_arg, np.empty_like(x), **attrs)
        assert saved.dtype == x.dtype and saved.shape == x.shape
        np.testing.assert_array_equal(saved, K.max_pool2d_grad(np, g, x, **attrs))


def test_a_one_by_one_pool_returns_its_own_array():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y, _, _ = K.max_pool2d_saving(np, x, kernel_size=(1, 1), stride=(1, 1), padding=(0, 0))
    assert not np.shares_memory(x, y)


def _train(enabled: bool):
    gn.manual_seed(0)
    model = seed_cnn()
    x = gn.placeholder("x", (None, 1, 28, 28))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    disabled = set() if enabled else {"save_pool_argmax"}
    with gn.config.options(disabled_passes=disabled):
        plan = gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=gn.optim.RMSprop(lr=1e-3))
    return model, plan


def test_training_plans_keep_the_argmax_and_train_bit_identically():
    (model, plan), (plain_model, plain) = _train(True), _train(False)
    ops = plan.plan.op_counts()
    assert ops.get("max_pool2d_saving") == 2 and ops.get("max_pool2d_grad_saved") == 2
    assert "max_pool2d_grad" not in ops and "max_pool2d" not in ops
    assert plain.plan.op_counts().get("max_pool2d_grad") == 2
    rng = np.random.default_rng(1)
    for batch in (8, 8, 5):
        feeds = {"x": rng.standard_normal((batch, 1, 28, 28)).astype(np.float32),
                 "labels": rng.integers(0, 10, batch)}
        assert float(plan.run(feeds)["loss"]) == float(plain.run(feeds)["loss"])
    for a, b in zip(model.parameters(), plain_model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_inference_plans_pool_without_saving():
    gn.manual_seed(0)
    model = seed_cnn()
    model.eval()
    plan = gn.compile({"logits": model(gn.placeholder("x", (None, 1, 28, 28)))})
    assert "max_pool2d_saving" not in plan.plan.op_counts()


pooling = pytest.importorskip("graphnet.kernels.cpu.pooling")
needs_numba = pytest.mark.skipif(not __import__("graphnet.backends.numpy.fused_kernels", fromlist=["x"]).numba_available(),
                                 reason="numba is not installed")


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,k,s,p", POOLS)
def test_the_numba_pool_gradient_computes_what_the_op_kernel_does(shape, k, s, p, dtype):
    rng = np.random.default_rng(1)
    attrs = {"kernel_size": k, "stride": s, "padding": p}
    nan = rng.standard_normal(shape).astype(dtype)
    nan.flat[::5] = np.nan  # a NaN propagates to its window's output and keeps the index reached
    for x in (rng.standard_normal(shape).astype(dtype), rng.integers(0, 3, shape).astype(dtype), nan):
        saved = K.max_pool2d_saving(np, x, **attrs)
        g = rng.standard_normal(saved[0].shape).astype(dtype)
        expected = K.max_pool2d_grad_saved(np, g, *saved[1:], x, **attrs)
        out = np.full_like(x, np.nan)
        assert pooling.max_pool2d_grad_saved(g, *saved[1:], x, out=out, **attrs) is out
        overlapping = k[0] > s[0] or k[1] > s[1]  # then sums meet in another order
        if overlapping or np.isnan(x).any():
            np.testing.assert_allclose(out, np.nan_to_num(expected) if np.isnan(x).any() else expected,
                                       rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("planned", [False, True])
def test_the_executor_pools_in_chunks_of_images_bit_identically(planned):
    """The NumPy executor runs the saving pool over chunks of images (its temporaries are a
    few times the input's size); results and arg-max are the whole batch's, exactly."""
    from graphnet.backends.numpy import kernel_table, workspace
    from graphnet.kernels.cpu.conv import common

    attrs = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    x = np.random.default_rng(3).integers(0, 4, (45, 8, 24, 24)).astype(np.float32)  # ties too
    assert workspace.pool_chunk_images(x.shape, attrs, 4) < x.shape[0]  # several chunks
    expected = K.max_pool2d_saving(np, x, **attrs)
    kernel = kernel_table.pool_in_chunks(lambda *a, **k: K.max_pool2d_saving(np, *a, **attrs, **k),
                                        common.Workspace(), attrs)
    out = tuple(np.full_like(e, 7) for e in expected) if planned else None
    result = kernel(x, out=out)
    for got, want in zip(result, expected):
        np.testing.assert_array_equal(got, want)
    if planned:
        assert all(got is target for got, target in zip(result, out))


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 9, 7), (1, 2, 2, 2), (3, 1, 5, 6)])
def test_the_numba_halving_pool_computes_what_the_op_kernel_does(shape, dtype):
    """The 2x2, stride-2 loops: the same maxima and arg-max bit for bit (ties: the first; NaN:
    numpy's maximum), odd rows and columns no window reads, and the backward from them."""
    attrs = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal(shape).astype(dtype), rng.integers(0, 3, shape).astype(dtype)):
        x.flat[::7] = np.nan if dtype == "float32" else x.flat[::7]
        want = K.max_pool2d_saving(np, x, **attrs)
        got = pooling.max_pool2d_saving(x, **attrs)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
        out = tuple(np.full_like(w, 7) for w in want)
        assert all(a is b for a, b in zip(pooling.max_pool2d_saving(x, out=out, **attrs), out))
        g = rng.standard_normal(want[0].shape).astype(dtype)
        dx = np.full(shape, np.nan, dtype)  # every element written, the unread ones zero
        pooling.max_pool2d_grad_saved(g, want[1], want[2], x, out=dx, **attrs)
        np.testing.assert_array_equal(dx, K.max_pool2d_grad_saved(np, g, want[1], want[2], x, **attrs))
    with pytest.raises(ValueError, match="2x2 windows"):
        pooling.max_pool2d_saving(x, kernel_size=(3, 3), stride=(2, 2), padding=(0, 0))


@needs_numba
@pytest.mark.parametrize("k,s,p", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))])
def test_the_numba_pools_split_by_images_among_threads_bit_identically(k, s, p, monkeypatch):
    from graphnet.kernels.cpu import threads

    attrs = {"kernel_size": k, "stride": s, "padding": p}
    x = np.random.default_rng(5).integers(0, 3, (7, 2, 9, 8)).astype(np.float32)  # ties too
    saved = K.max_pool2d_saving(np, x, **attrs)
    g = np.random.default_rng(6).standard_normal(saved[0].shape).astype(np.float32)
    monkeypatch.setattr(pooling, "SPLIT_MIN_ELEMENTS", 0)
    monkeypatch.setattr(threads, "count", lambda: 3)
    with threads.splitting():
        dx = pooling.max_pool2d_grad_saved(g, *saved[1:], x, **attrs)
        got = pooling.max_pool2d_saving(x, **attrs) if k == (2, 2) else saved
    np.testing.assert_allclose(dx, K.max_pool2d_grad_saved(np, g, *saved[1:], x, **attrs), rtol=1e-6, atol=1e-6)
    for a, b in zip(got, saved):
        np.testing.assert_array_equal(a, b)
