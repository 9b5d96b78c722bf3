"""Symbolic dims that must agree, typed run-time errors, and runs that fail changing nothing."""

from __future__ import annotations

import numpy as np
import pytest

import graphnet as gn
from graphnet.ops.common import declare
from graphnet.ops.registry import REGISTRY, defop


def _classifier():
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 4))
    labels = gn.placeholder("labels", (None,), "int64")
    model = gn.nn.Linear(4, 3)
    return x, labels, model, gn.losses.cross_entropy(model(x), labels)


def test_labels_and_scores_must_have_the_same_batch():
    _, _, _, loss = _classifier()
    train = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.1))
    with pytest.raises(gn.FeedError, match=r"feed 'labels': dim 0 is 3, but it is x's dim 0 \(2\)"):
        train.run(x=np.ones((2, 4), np.float32), labels=np.array([0, 1, 2]))


@pytest.mark.parametrize("build, feeds, match", [
    (lambda a, b: gn.concat([a, b], axis=1), {"a": (2, 3), "b": (4, 3)}, r"feed 'b': dim 0 is 4, but it is a's dim 0"),
    (lambda a, b: a + b, {"a": (2, 3), "b": (4, 3)}, r"do not broadcast at add"),
    (lambda a, b: gn.matmul(a, gn.transpose(b)) , {"a": (2, 3), "b": (5, 4)}, r"b's dim 1 is 4, but matmul"),
])
def test_unified_dims_are_checked_before_anything_runs(build, feeds, match):
    a = gn.placeholder("a", (None, 3))
    b = gn.placeholder("b", (None, None) if "matmul" in match else (None, 3))
    plan = gn.compile({"out": build(a, b)})
    with pytest.raises(gn.FeedError, match=match):
        plan.run({k: np.ones(v, np.float32) for k, v in feeds.items()})


def test_broadcasting_symbolic_dims_still_allows_one():
    a = gn.placeholder("a", (None, 3))
    b = gn.placeholder("b", (None, 3))
    out = gn.compile({"s": a + b}).run(a=np.ones((1, 3), np.float32), b=np.ones((4, 3), np.float32))
    assert out["s"].shape == (4, 3)


def test_a_static_size_binds_a_symbolic_dim():
    w = gn.placeholder("w", (None, 7))
    plan = gn.compile({"m": gn.matmul(gn.placeholder("u", (2, 3)), w)})
    with pytest.raises(gn.FeedError, match=r"w's dim 0 is 4, but matmul .* needs 3"):
        plan.run(u=np.ones((2, 3), np.float32), w=np.ones((4, 7), np.float32))


@pytest.fixture
def raising_op():
    def _raise(xp, x):
        raise ValueError("boom")

    defop("test_raising_op", infer=lambda t: t, kernel=_raise)
    yield
    del REGISTRY["test_raising_op"]  # the op tables' meta-tests see only graphnet's own ops


def test_a_kernel_failure_is_an_executor_error_naming_the_op_and_the_source_line(raising_op):
    x = gn.placeholder("x", (None, 3))
    y = declare("test_raising_op", [gn.exp(x)])
    plan = gn.compile({"y": y})
    with pytest.raises(gn.ExecutorError, match=r"test_raising_op \(declared at test_run_errors.py:\d+\) failed "
                                               r"at step 1 on inputs %0 \(2, 3\): ValueError: boom") as info:
        plan.run(x=np.ones((2, 3), np.float32))
    assert isinstance(info.value.__cause__, ValueError)


def test_a_failed_run_changes_nothing():
    x, labels, model, loss = _classifier()
    train = gn.compile(loss, optimizer=gn.optim.Adam(lr=0.1))
    xb = np.ones((2, 4), np.float32)
    train.run(x=xb, labels=np.array([0, 1]))
    before = ({k: v.copy() for k, v in model.state_dict().items()},
              {p: {s: v.copy() for s, v in slots.items()} for p, slots in train.optimizer_state.items()},
              train.step_count)
    with pytest.raises(gn.FeedError, match="labels must lie in"):
        train.run(x=xb, labels=np.array([0, 7]))  # fails inside a kernel, before any effect
    assert train.step_count == before[2] == 1
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[0][k])
    for p, slots in train.optimizer_state.items():
        for s, v in slots.items():
            np.testing.assert_array_equal(v, before[1][p][s])


def test_a_missing_output_lists_the_outputs():
    x = gn.placeholder("x", (3,))
    out = gn.compile({"y": gn.exp(x)}).run(x=np.zeros(3, np.float32))
    with pytest.raises(KeyError, match=r"'z' is not an output of this plan; its outputs are \['y'\]"):
        out["z"]


def test_compile_names_a_single_output_after_the_callers_variable():
    x = gn.placeholder("x", (3,))
    logits = gn.exp(x)
    assert list(gn.compile(logits).plan.outputs) == ["logits"]
    assert list(gn.compile({"named": logits}).plan.outputs) == ["named"]


def test_cross_entropy_ignores_minus_infinity_on_other_classes():
    logits = gn.placeholder("logits", (None, 3))
    labels = gn.placeholder("labels", (None,), "int64")
    loss = gn.losses.cross_entropy(logits, labels)
    plan = gn.compile({"loss": loss, "g": gn.grad(loss, logits)})
    out = plan.run(logits=np.array([[2.0, -np.inf, 0.5]], np.float32), labels=np.array([0]))
    expected = -(2.0 - np.log(np.exp(2.0) + np.exp(0.5)))
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-6)
    assert np.all(np.isfinite(out["g"])) and out["g"][0, 1] == 0


def test_means_of_huge_float32_values_do_not_overflow():
    x = gn.placeholder("x", (4,))
    out = gn.compile({"m": gn.mean(x)}).run(x=np.full(4, 3e38, np.float32))["m"]
    assert out.dtype == np.float32 and np.isclose(out, 3e38, rtol=1e-6)


def test_max_and_min_over_an_empty_axis_are_infinite():
    x = gn.placeholder("x", (2, 0))
    out = gn.compile({"hi": gn.max(x, axis=1), "lo": gn.min(x, axis=1)}).run(x=np.zeros((2, 0), np.float32))
    np.testing.assert_array_equal(out["hi"], [-np.inf, -np.inf])
    np.testing.assert_array_equal(out["lo"], [np.inf, np.inf])


@pytest.mark.parametrize("declare_bad", [
    lambda x: gn.max_pool2d(x, 2, stride=0), lambda x: gn.avg_pool2d(x, 0), lambda x: gn.max_pool2d(x, 2, padding=-1),
    lambda x: gn.conv2d(x, gn.placeholder("w", (2, 1, 3, 3)), stride=0),
])
def test_impossible_attributes_are_shape_errors_when_declared(declare_bad):
    x = gn.placeholder("x", (1, 1, 6, 6))
    with pytest.raises(gn.ShapeError):
        declare_bad(x)


def test_an_unknown_setting_is_a_typed_error():
    with pytest.raises(gn.ConfigError, match="codegen must be"):
        with gn.config.options(codegen="bogus"):
            pass


def test_the_memory_limit_is_checked_before_feeds_are_converted():
    """A float64 feed to a float32 placeholder is converted only after the limit check, which
    counts the conversion: a run over the limit allocates nothing first."""
    import tracemalloc

    x = gn.placeholder("x", (None, 1000))
    plan = gn.compile({"y": gn.relu(x) * 2.0})
    big = np.ones((20_000, 1000))  # 160 MB of float64; its float32 copy alone is 80 MB
    with gn.config.options(memory_limit=64 << 20):
        tracemalloc.start()
        try:
            with pytest.raises(gn.MemoryLimitError, match="limit"):
                plan.run(x=big)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20  # nothing the size of the feed was allocated before the refusal
