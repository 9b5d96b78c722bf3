"""Each pass alone: a graph before, the structure expected after, and a case where it must not fire."""

import numpy as np

import graphnet as gn
from graphnet.ir import Graph
from graphnet.passes import constant_fold, cse, dce, decompose, resolve_modes, schedule, simplify, state_updates


def _graph(**outputs):
    return Graph.build([t.node for t in outputs.values()], list(outputs))


def _ops(graph):
    return [n.op for n in graph.nodes]


def test_cse_merges_identical_subexpressions():
    x = gn.placeholder("x", (3,))
    a, b = gn.exp(x), gn.exp(x)
    graph = cse(_graph(y=a + b))
    assert _ops(dce(graph)).count("exp") == 1
    add = graph.outputs[0]
    assert add.inputs[0] is add.inputs[1]


def test_cse_does_not_merge_different_attrs_or_random_ops():
    x = gn.placeholder("x", (2, 3))
    s0, s1 = gn.sum(x, axis=0), gn.sum(x, axis=1)
    graph = dce(cse(_graph(a=s0, b=s1)))
    assert _ops(graph).count("sum") == 2
    d1, d2 = gn.dropout(x, 0.5), gn.dropout(x, 0.5)
    graph = dce(cse(_graph(y=d1 + d2)))
    assert _ops(graph).count("dropout") == 2


def test_constant_fold_evaluates_constant_subgraphs():
    x = gn.placeholder("x", (3,))
    c = gn.constant(np.array([1.0, 2.0, 3.0], np.float32))
    y = x * gn.exp(c * 2.0)
    graph = dce(constant_fold(_graph(y=y)))
    assert _ops(graph) == ["placeholder", "constant", "mul"]
    folded = graph.nodes[1].attrs["value"].array
    np.testing.assert_allclose(folded, np.exp(np.array([2.0, 4.0, 6.0])), rtol=1e-6)
    assert folded.dtype == np.float32


def test_constant_fold_leaves_placeholders_and_random_ops():
    x = gn.placeholder("x", (3,))
    graph = constant_fold(_graph(y=gn.exp(x)))
    assert _ops(graph) == ["placeholder", "exp"]


def test_simplify_removes_identities_but_keeps_broadcasts():
    x = gn.placeholder("x", (3,))
    graph = dce(simplify(_graph(y=(x * 1.0 + 0.0) / 1.0)))
    assert _ops(graph) == ["placeholder"]
    # x (3,) * ones (2, 3): the multiply broadcasts, so it must stay
    graph = dce(simplify(_graph(y=x * gn.constant(np.ones((2, 3), np.float32)))))
    assert "mul" in _ops(graph)


def test_dce_drops_unreachable_nodes():
    x = gn.placeholder("x", (3,))
    y = gn.exp(x)
    graph = Graph(outputs=(y.node,), output_names=("y",), nodes=(x.node, gn.log(x).node, y.node))
    assert _ops(dce(graph)) == ["placeholder", "exp"]


def test_schedule_puts_side_effects_last():
    x = gn.placeholder("x", (4, 2, 3, 3))
    bn = gn.nn.BatchNorm2d(2)
    loss = gn.mean(bn(x))
    declared = _graph(loss=loss)
    assert declared.effects == ()  # nothing rides on the nodes: effects come from the ops that own state
    graph = schedule(decompose(state_updates(resolve_modes(declared))))
    ops = _ops(graph)
    assert ops[-2:] == ["assign", "assign"]
    assert [e.attrs["kind"] for e in graph.effects] == ["running_stat"] * 3  # num_batches_tracked counts too
    assert [e.inputs[0].attrs["var"].name for e in graph.effects] == [
        "num_batches_tracked", "running_mean", "running_var"]


def test_compile_reports_every_pass_with_node_counts():
    x = gn.placeholder("x", (None, 4))
    y = gn.placeholder("y", (None,), dtype="int64")
    loss = gn.losses.cross_entropy(gn.nn.Linear(4, 3)(x), y)
    plan = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.1))
    names = [r.name for r in plan.report]
    assert names == ["verify", "resolve_modes", "fuse_batch_norm", "state_updates", "fold_batch_norm",
                     "fuse_cross_entropy",
                     "decompose", "pool_before_bias", "fuse_attention", "autodiff",
                     "optimizer_updates", "save_pool_argmax", "merge_scans", "save_loop_residuals",
                     "prune_loop_outputs", "hoist_loop_sums", "merge_slice_grads", "constant_fold", "simplify", "cse", "dce"] + [
        "fuse", "fuse_updates"] * gn.config.flags.fuse + ["schedule", "lower", "flatten_state", "plan_memory"]
    autodiff = next(r for r in plan.report if r.name == "autodiff")
    assert autodiff.nodes_after > autodiff.nodes_before
    assert plan.report[-1].nodes_after == len(plan.plan.steps)
    assert next(r for r in plan.report if r.name == "schedule").nodes_after == len(plan.graph.nodes)


def test_disabled_passes_flag():
    x = gn.placeholder("x", (3,))
    with gn.config.options(disabled_passes={"cse", "fuse"}):
        plan = gn.compile(gn.exp(x) + gn.exp(x))
    assert "cse" not in [r.name for r in plan.report]
    assert plan.plan.op_counts()["exp"] == 2
    with gn.config.options(disabled_passes={"fuse"}):
        assert gn.compile(gn.exp(x) + gn.exp(x)).plan.op_counts()["exp"] == 1


def test_plan_releases_temps_after_last_use():
    x = gn.placeholder("x", (3,))
    with gn.config.options(disabled_passes={"fuse"}):
        plan = gn.compile(gn.sum(gn.exp(gn.exp(x)))).plan
    released = [name for rel in plan.release for name in rel]
    assert released == ["%0", "%1"]  # both intermediates, not the output


def test_slice_gradients_that_tile_an_axis_become_one_concat():
    """The gradient of gates cut from one product (an LSTM's four) is their gradients joined,
    not four zero-padded arrays added up (merge_slice_grads); the values are the same."""
    x = gn.placeholder("x", (3, 8), "float64")
    pieces = [x[:, 0:2], x[:, 2:5], x[:, 5:8]]
    loss = gn.sum(gn.sin(pieces[0])) + gn.sum(gn.exp(pieces[1]) * 2.0) + gn.sum(pieces[2] * pieces[2])
    (g,) = gn.grad(loss, [x])
    merged = gn.compile({"g": g})
    with gn.config.options(disabled_passes={"merge_slice_grads"}):
        plain = gn.compile({"g": g})
    assert any(s.op == "concat" for s in merged.plan.steps)
    assert not any(s.op == "slice_grad" for s in merged.plan.steps)
    assert sum(s.op == "slice_grad" for s in plain.plan.steps) == 3
    xv = np.random.default_rng(0).standard_normal((3, 8))
    np.testing.assert_array_equal(merged.run(x=xv)["g"], plain.run(x=xv)["g"])
    expected = np.concatenate([np.cos(xv[:, :2]), 2 * np.exp(xv[:, 2:5]), 2 * xv[:, 5:]], axis=1)
    np.testing.assert_allclose(merged.run(x=xv)["g"], expected, rtol=1e-12)
