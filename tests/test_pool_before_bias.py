"""The pool_before_bias pass (graphnet/passes/pool_before_bias.py): max_pool2d(x + b) with a
per-channel bias becomes max_pool2d(x) + b where nothing else reads x + b, with the same
forward values bit for bit and the same gradients up to the order of their sums."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import graphnet as gn
from graphnet.ir import Graph
from graphnet.passes import pool_before_bias

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from mnist_cnn import seed_cnn  # noqa: E402


def _ops(graph: Graph) -> list[str]:
    return [node.op for node in graph.nodes]


def _conv_pool(extra_reader: bool = False, bias_shape=(1, 4, 1, 1), pool="max"):
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 2, 8, 8))
    w = gn.Parameter(np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32), name="w")
    b = gn.Parameter(np.random.default_rng(1).standard_normal(bias_shape).astype(np.float32), name="b")
    h = gn.conv2d(x, w) + b
    pooled = gn.max_pool2d(h, 2) if pool == "max" else gn.avg_pool2d(h, 2)
    out = gn.relu(pooled)
    outputs = [out, gn.sum(h)] if extra_reader else [out]
    return Graph.build([o.node for o in outputs], [f"y{k}" for k in range(len(outputs))])


def test_the_bias_moves_after_the_pool():
    graph = pool_before_bias(_conv_pool())
    ops = _ops(graph)
    assert ops.index("max_pool2d") < ops.index("add") and ops.index("conv2d") < ops.index("max_pool2d")
    pool = next(n for n in graph.nodes if n.op == "max_pool2d")
    assert pool.inputs[0].op == "conv2d"


@pytest.mark.parametrize("case", ["another reader", "not per channel", "average pool"])
def test_left_alone(case):
    graph = _conv_pool(extra_reader=case == "another reader",
                       bias_shape=(1, 4, 1, 6) if case == "not per channel" else (1, 4, 1, 1),
                       pool="avg" if case == "average pool" else "max")
    rewritten = pool_before_bias(graph)
    assert _ops(rewritten) == _ops(graph)


def _train(enabled: bool):
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 1, 28, 28))
    y = gn.placeholder("y", (None,), "int64")
    model = seed_cnn()
    disabled = set() if enabled else {"pool_before_bias"}
    with gn.config.options(disabled_passes=disabled):
        plan = gn.compile({"loss": gn.losses.cross_entropy(model(x), y)}, optimizer=gn.optim.SGD(lr=0.1))
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((16, 1, 28, 28)).astype(np.float32), "y": rng.integers(0, 10, 16)}
    losses = [float(plan.run(feeds)["loss"]) for _ in range(3)]
    return plan, losses, {name: v.data.copy() for name, v in plan.variables.items()}


def test_training_matches_the_plan_without_the_pass():
    plan, losses, params = _train(True)
    baseline, base_losses, base_params = _train(False)
    assert len(plan.plan.steps) < len(baseline.plan.steps)  # the bias adds fuse with the ReLUs
    assert losses[0] == base_losses[0]  # the first forward pass is bit-identical
    np.testing.assert_allclose(losses, base_losses, rtol=1e-5)
    for name, value in params.items():
        np.testing.assert_allclose(value, base_params[name], rtol=1e-4, atol=1e-6)
