"""The IR and plan boundary: symbolic dims, effects, updates as ops, the op contract, the plan as data."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import graphnet as gn
from graphnet.errors import GraphError, PlanVersionError, ShapeError
from graphnet.ir import Graph, TupleType
from graphnet.ops import REGISTRY
from graphnet.ops.common import declare
from graphnet.ops.registry import get_op, CATEGORIES
from graphnet.passes import (
    Pass, check_pipeline, decompose, default_pipeline, dce, resolve_modes, simplify, state_updates,
    verify,
)
from graphnet.testing import GraphMismatch, assert_graph_equal, graph_equal

from helpers import finite_difference, rel_error


# --- the five reproductions of the issue -----------------------------------------------------

def test_a_placeholder_named_like_a_temporary_is_not_overwritten():
    x = gn.placeholder("t0", (3,))
    out = gn.compile(gn.relu(x) + x).run(t0=np.array([-1., 2., -3.], np.float32))
    np.testing.assert_array_equal(out["output"], [-1, 4, -3])


@pytest.mark.parametrize("name", ["%0", "%1", "in:t0", "var:w", "const:0", "t0", "x"])
def test_no_user_name_collides_with_a_buffer(name):
    w = gn.Parameter(np.full(3, 2.0, np.float32), name="var:w")
    x = gn.placeholder(name, (3,))
    plan = gn.compile({"%0": gn.exp(x) * w + x})
    xv = np.array([0.0, 1.0, -1.0], np.float32)
    np.testing.assert_allclose(plan.run({name: xv})["%0"], np.exp(xv) * 2 + xv, rtol=1e-6)


def test_gradients_of_named_dims_reduce_to_the_run_time_shape():
    a = gn.placeholder("a", ("n",))
    b = gn.placeholder("b", ("m",))
    ga = gn.grad(gn.sum(a * b), a)
    assert (a * b).shape == (None,)  # n and m may differ (one of them 1): neither is the result
    out = gn.compile({"ga": ga}).run(a=np.ones(1, np.float32), b=np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(out["ga"], [10.0])
    same = gn.compile({"ga": ga}).run(a=np.ones(5, np.float32), b=np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(same["ga"], np.arange(5))


def test_a_plan_reshaping_to_a_named_dim_saves_and_loads(tmp_path):
    x = gn.placeholder("x", ("batch", 2, 4))
    y = gn.reshape(x, ("batch", 8))
    assert y.shape == ("batch", 8)
    plan = gn.compile({"y": y})
    plan.save(tmp_path / "p.gnp")
    loaded = gn.load(tmp_path / "p.gnp")
    xv = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
    np.testing.assert_array_equal(loaded.run(x=xv)["y"], xv.reshape(3, 8))


def test_an_output_viewing_a_parameter_shows_the_value_before_the_update():
    w = gn.Parameter(np.ones((2, 2), np.float32))
    x = gn.placeholder("x", (2, 2))
    plan = gn.compile({"loss": gn.sum(x * w), "wt": gn.transpose(w)}, optimizer=gn.optim.SGD(lr=1.0))
    out = plan.run(x=np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(out["wt"], np.ones((2, 2)))
    assert not np.shares_memory(out["wt"], w.data)
    np.testing.assert_array_equal(w.data, np.zeros((2, 2)))


def test_batch_norm_writes_each_running_statistic_once():
    x = gn.placeholder("x", (4, 2, 3, 3))
    plan = gn.compile({"y": gn.nn.BatchNorm2d(2)(x)}, mode="train").plan
    assert plan.state_writes() == [("var:num_batches_tracked", "running_stat"), ("var:running_mean", "running_stat"),
                                   ("var:running_var", "running_stat")]


# --- symbolic dims inside the shape rules ------------------------------------------------------

@pytest.mark.parametrize("shape, target, expected", [
    (("batch", 2, 4), (-1, 8), ("batch", 8)),
    (("batch", 2, 4), ("batch", 8), ("batch", 8)),
    (("batch", 2, 4), (-1, 4), (None, 4)),         # the static sizes do not cancel
    ((None, 2, 4), (-1, 8), (None, 8)),
    ((6, 4), (-1, 8), (3, 8)),
    ((6, 4), ("rows", 8), ("rows", 8)),
    (("n", "m"), (-1,), (None,)),
])
def test_reshape_infers_symbolic_dims(shape, target, expected):
    assert gn.reshape(gn.placeholder("x", shape), target).shape == expected


@pytest.mark.parametrize("shape, target", [((6, 4), (-1, 5)), (("batch", 2, 4), ("batch", 7)),
                                           ((2, 3), (-1, "n")), ((4,), (5,))])
def test_reshape_refuses_impossible_targets_when_declared(shape, target):
    with pytest.raises(ShapeError):
        gn.reshape(gn.placeholder("x", shape), target)


def test_verify_checks_the_full_type_with_symbolic_dims():
    from dataclasses import replace

    x = gn.placeholder("x", ("batch", 3))
    y = gn.exp(x)
    wrong = replace(y.node, type=gn.TensorType(("other", 3), "float32"))
    with pytest.raises(GraphError, match="its rule gives"):
        verify(Graph.build([wrong], ["y"]))


# --- effects -----------------------------------------------------------------------------------

def _bn_graph():
    x = gn.placeholder("x", (4, 2, 3, 3))
    return gn.make_graph({"y": gn.nn.BatchNorm2d(2)(x)})


def test_effects_are_listed_ordered_and_kinded():
    graph = state_updates(resolve_modes(_bn_graph()))
    assert [e.op for e in graph.effects] == ["assign"] * 3  # num_batches_tracked, running_mean, running_var
    assert [e.attrs["kind"] for e in graph.effects] == ["running_stat"] * 3
    assert any(n.op == "batch_norm" for n in graph.nodes)  # the composite keeps its identity until decompose
    labels = gn.placeholder("labels", (None,), "int64")
    loss = gn.losses.cross_entropy(gn.placeholder("logits", (None, 3)), labels)
    assert loss.op == "cross_entropy"
    assert "log_softmax" in [n.op for n in decompose(gn.make_graph({"loss": loss})).nodes]
    assert not any(n.op == "batch_norm" for n in decompose(graph).nodes)


def test_verify_refuses_duplicated_dangling_and_misdirected_effects():
    graph = state_updates(resolve_modes(_bn_graph()))
    first = graph.effects[0]
    with pytest.raises(GraphError, match="listed twice|written twice"):
        verify(Graph.build(graph.outputs, graph.output_names, graph.effects + (first,)))
    with pytest.raises(GraphError, match="dangling"):
        verify(Graph(graph.outputs, graph.output_names, graph.effects[1:], graph.nodes))
    x = gn.placeholder("v", (2,))
    bad = declare("assign", [x, gn.exp(x)], {"kind": "running_stat"})
    with pytest.raises(GraphError, match="not a variable"):
        verify(Graph.build([x.node], ["v"], [bad.node]))


def test_a_layer_owning_state_called_twice_writes_it_once_chained():
    """Once per call in call order, as PyTorch (test_pytorch_habits checks the numbers)."""
    bn = gn.nn.BatchNorm2d(2)
    x = gn.placeholder("x", (4, 2, 3, 3))
    plan = gn.compile({"y": bn(x) + bn(x * 2.0)}, mode="train").plan
    assert [name for name, _ in plan.state_writes()] == ["var:num_batches_tracked", "var:running_mean",
                                                         "var:running_var"]


def test_the_training_plan_lists_updates_state_and_step_as_effects():
    x = gn.placeholder("x", (None, 3))
    layer = gn.nn.Linear(3, 2)
    train = gn.compile(gn.mean(layer(x)), optimizer=gn.optim.Adam(lr=0.1))
    kinds = sorted(k for _, k in train.plan.state_writes())
    assert kinds == sorted(["param_update", "optimizer_state", "optimizer_state"] * 2 + ["step_counter"])
    assert all(not get_op(s.op).effect for s in train.plan.steps[:train.plan.first_effect])
    assert all(get_op(s.op).effect for s in train.plan.effects)
    train.run(x=np.ones((4, 3), np.float32))
    assert train.step_count == 1


# --- updates are graph ops -------------------------------------------------------------------

def test_a_training_plan_runs_without_any_optimizer_code():
    x = gn.placeholder("x", (None, 3))
    layer = gn.nn.Linear(3, 2)
    train = gn.compile(gn.mean(layer(x) ** 2), optimizer=gn.optim.SGD(lr=0.1, momentum=0.9))
    before = layer.weight.data.copy()
    executor = train.executor  # the executor alone: no optimizer object anywhere
    executor.run({"x": np.ones((2, 3), np.float32)})
    assert not np.array_equal(before, layer.weight.data)
    assert {s.op for s in train.plan.steps} <= set(REGISTRY)


def test_every_hyperparameter_change_takes_effect_structural_ones_included():
    w = gn.Parameter(np.ones(2, np.float32))
    x = gn.placeholder("x", (2,))
    opt = gn.optim.SGD(lr=1.0, max_grad_norm=100.0)
    train = gn.compile(gn.sum(x * w), optimizer=opt)
    train.run(x=np.full(2, 3.0, np.float32))  # gradient norm 4.24 < 100: unclipped
    np.testing.assert_allclose(w.data, [-2.0, -2.0])
    opt.max_grad_norm = 0.5  # now clipped to norm 0.5
    train.run(x=np.full(2, 3.0, np.float32))
    np.testing.assert_allclose(w.data, -2.0 - 0.5 / np.sqrt(2), rtol=1e-5)
    opt.momentum = 0.9  # the update compiles again, with a momentum buffer that starts at this gradient
    train.run(x=np.full(2, 3.0, np.float32))
    np.testing.assert_allclose(w.data, -2.0 - 2 * 0.5 / np.sqrt(2), rtol=1e-5)
    assert train.report.recompiles[0]["changed"] == ["momentum: zero -> nonzero"]


# --- multi-output ops and composites --------------------------------------------------------------

def test_dropout_is_one_step_with_two_results():
    x = gn.placeholder("x", (4, 5))
    y = gn.dropout(x, 0.5)
    assert y.op == "tuple_get" and isinstance(y.node.inputs[0].type, TupleType)
    plan = gn.compile({"y": y}, seed=0).plan
    (step,) = [s for s in plan.steps if s.op == "dropout"]
    assert len(step.outputs) == 2


def test_a_multi_output_node_is_read_only_through_tuple_get():
    x = gn.placeholder("x", (4, 5))
    drop = declare("dropout", [x], {"p": 0.5, "training": True})
    with pytest.raises(GraphError, match="tuple_get"):
        verify(Graph.build([drop.node], ["d"]))


def test_gradients_through_a_composite_follow_its_decomposition():
    x = gn.placeholder("x", (3, 2, 2, 2), "float64")
    w = gn.placeholder("w", (2,), "float64")
    rm = gn.Parameter(np.zeros(2), trainable=False)
    rv = gn.Parameter(np.ones(2), trainable=False)
    y = gn.batch_norm(x, rm, rv, w, None, training=True)
    loss = gn.sum(y * y * gn.constant(np.arange(24.0).reshape(3, 2, 2, 2)))
    gx, gw = gn.grad(loss, [x, w])
    assert any(n.op == "batch_norm" for n in gn.make_graph({"g": gx}).nodes)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 2, 2, 2)), "w": rng.standard_normal(2)}
    got = gn.compile({"gx": gx, "gw": gw}).run(**feeds)
    f = gn.compile({"loss": loss})
    for name, grad in (("x", got["gx"]), ("w", got["gw"])):
        numeric = finite_difference(f, "loss", feeds, name)
        assert rel_error(grad, numeric, 1e-8) < 1e-6, name


# --- the op contract ---------------------------------------------------------------------------

def test_every_op_declares_its_category_and_views_point_at_real_inputs():
    for name, op in REGISTRY.items():
        assert op.category in CATEGORIES, name
        for out_index, in_index in op.views:
            assert out_index >= 0 and in_index >= 0, name
    assert REGISTRY["assign"].writes == (0,) and REGISTRY["assign"].effect
    assert REGISTRY["dropout"].random and REGISTRY["batch_norm"].decompose is not None
    assert {n for n, op in REGISTRY.items() if op.views} >= {"reshape", "transpose", "broadcast_to", "slice"}


@pytest.mark.parametrize("name", sorted(n for n, op in REGISTRY.items() if op.accepts_out))
def test_kernels_that_accept_out_write_into_the_given_buffer(name):
    op = REGISTRY[name]
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2.0, (4, 4)).astype(np.float32), rng.uniform(0.5, 2.0, (4, 4)).astype(np.float32)
    args = (a,) if name in ("neg", "exp", "log", "sqrt", "sign", "abs", "relu", "tanh", "copy") else (a, b)
    attrs = {"body": (("add", (-1, -2), ()), ("mul", (0, -1), ()), ("exp", (1,), ()))} if name == "fused" else {}
    if name == "sum_to":
        args, attrs = (a,), {"shape": (1, 4)}
    if name.startswith("conv2d"):
        x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
        g = rng.standard_normal((2, 4, 3, 3))
        args = {"conv2d": (x, w), "conv2d_grad_input": (g, w, x), "conv2d_grad_weight": (x, g, w)}[name]
        attrs = {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    if name in ("avg_pool2d", "avg_pool2d_grad"):
        x = rng.standard_normal((2, 3, 7, 7))
        for pool in ({"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)},
                     {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)},
                     {"kernel_size": (3, 2), "stride": (1, 3), "padding": (1, 0)}):
            if name == "avg_pool2d":
                args = (x,)
            else:
                args = (rng.standard_normal(REGISTRY["avg_pool2d"].kernel(np, x, **pool).shape), x)
            want = op.kernel(np, *args, **pool)
            for out in (np.full_like(want, np.nan), np.full(want.shape[::-1], np.nan).T):  # C and not
                assert op.kernel(np, *args, out=out, **pool) is out
                np.testing.assert_array_equal(out, want)
            scratch = []  # every temporary from the scratch allocator

            def allocate(shape, dtype):
                scratch.append(np.full(shape, np.nan, dtype))
                return scratch[-1]
            out = np.full_like(want, np.nan)
            assert op.kernel(np, *args, out=out, scratch=allocate, **pool) is out
            np.testing.assert_array_equal(out, want)
        return
    if name == "max_pool2d_grad_saved":
        x = rng.standard_normal((2, 3, 7, 7))
        for pool in ({"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)},
                     {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}):
            y, columns, rows = REGISTRY["max_pool2d_saving"].kernel(np, x, **pool)
            g = rng.standard_normal(y.shape)
            want = op.kernel(np, g, columns, rows, x, **pool)
            out = np.full_like(want, np.nan)
            assert op.kernel(np, g, columns, rows, x, out=out, **pool) is out
            np.testing.assert_array_equal(out, want)
        return
    several = {  # ops with several results take a tuple: an array, or None, per result
        "batch_norm_train": ((rng.standard_normal((3, 2, 4, 4)),),
                             {"eps": 1e-5, "momentum": 0.1, "stats": False, "weight": False, "bias": False,
                              "relu": True}),
        "batch_norm_train_grad": ((rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((3, 2, 4, 4)),
                                   np.zeros(2), np.ones(2)), {"eps": 1e-5, "weight": False, "relu": False}),
        "max_pool2d_saving": ((rng.standard_normal((2, 3, 7, 7)),),
                              {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}),
        "softmax_cross_entropy": ((a, np.array([0, 3, 1, 2])), {"label_smoothing": 0.1, "reduction": "mean"}),
    }
    attention = {"scale": 0.5, "causal": True, "dropout_p": 0.0, "training": False}  # issue 24
    q, k, v = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 6, 4))
    o, lse, seed = REGISTRY["scaled_dot_product_attention"].kernel(np, q, k, v, **attention)
    several["scaled_dot_product_attention"] = ((q, k, v), attention)
    several["scaled_dot_product_attention_grad"] = ((q, k, v, o, lse, seed, rng.standard_normal(o.shape)),
                                                    {**attention, "mask_grads": ()})
    if name in several:
        args, attrs = several[name]
        want = op.kernel(np, *args, **attrs)
        out = tuple(np.full_like(w, 7) if k % 2 == 0 else None for k, w in enumerate(want))
        got = op.kernel(np, *args, out=out, **attrs)
        assert len(got) == len(want)
        for k, (value, expected) in enumerate(zip(got, want)):
            assert value is out[k] or out[k] is None
            np.testing.assert_array_equal(value, expected)
        return
    if name == "softmax_cross_entropy_grad":
        args = (np.float32(1.5), a / a.sum(axis=1, keepdims=True), np.array([0, 3, 1, 2]))
        attrs = {"label_smoothing": 0.1, "reduction": "mean"}
    want = op.kernel(np, *args, **attrs)
    out = np.empty_like(want)
    got = op.kernel(np, *args, out=out, **attrs)
    assert got is out
    np.testing.assert_array_equal(out, want)


# --- pass infrastructure -------------------------------------------------------------------------

def test_the_pipeline_is_an_explicit_list_with_checked_requirements():
    passes = default_pipeline(gn.optim.SGD(lr=0.1, max_grad_norm=1.0))
    names = [p.name for p in passes]
    assert names.index("autodiff") < names.index("clip_gradients") < names.index("optimizer_updates")
    assert "needs gradients" in str(passes[names.index("clip_gradients")])
    allreduce = Pass("allreduce", lambda g: g, requires=("gradients",))
    at = names.index("autodiff") + 1
    check_pipeline(passes[:at] + [allreduce] + passes[at:])  # a pass between autodiff and clipping fits
    with pytest.raises(GraphError, match="needs"):
        check_pipeline([passes[0], allreduce] + passes[1:])
    without_schedule = [p for p in passes if p.name != "schedule"]
    with pytest.raises(GraphError, match="schedule"):
        check_pipeline(without_schedule)
    graph_passes = [p for p in passes if p.level == "graph"]
    with pytest.raises(GraphError, match="schedule"):
        check_pipeline(graph_passes[:-1])
    memory = next(p for p in passes if p.name == "plan_memory")
    with pytest.raises(GraphError, match="needs|side of the lowering"):
        check_pipeline(graph_passes + [memory] + passes[len(graph_passes):])
    assert [p.level for p in passes][-3:] == ["lower", "plan", "plan"]


def test_graph_equality_compares_structure():
    x = gn.placeholder("x", (3,))
    before = gn.make_graph({"y": gn.exp(x) * 1.0})
    assert_graph_equal(dce(simplify(before)), gn.make_graph({"y": gn.exp(x)}))
    assert not graph_equal(before, gn.make_graph({"y": gn.exp(x)}))
    with pytest.raises(GraphMismatch, match="log vs exp|exp vs log"):
        assert_graph_equal(gn.make_graph({"y": gn.log(x)}), gn.make_graph({"y": gn.exp(x)}))


# --- the plan file -------------------------------------------------------------------------------

def _header(path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    table = json.loads(data[8:8 + n])
    return data, n, table, json.loads(table["__metadata__"]["graphnet"])


def _rewrite(path, header, data, n, table):
    table["__metadata__"]["graphnet"] = json.dumps(header)
    text = json.dumps(table).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


def _saved(tmp_path):
    x = gn.placeholder("x", (None, 3))
    plan = gn.compile({"a": gn.exp(x), "b": gn.log(x)})
    path = tmp_path / "p.gnp"
    plan.save(path)
    return path


def test_a_valid_reordering_of_the_schedule_still_loads(tmp_path):
    path = _saved(tmp_path)
    data, n, table, header = _header(path)
    steps = header["schedule"]["steps"]
    assert [s[0] for s in steps[:2]] == ["exp", "log"]
    steps[0], steps[1] = steps[1], steps[0]  # independent: any order computes the graph
    _rewrite(path, header, data, n, table)
    loaded = gn.load(path)
    out = loaded.run(x=np.full((2, 3), 2.0, np.float32))
    np.testing.assert_allclose(out["a"], np.exp(2.0), rtol=1e-6)
    np.testing.assert_allclose(out["b"], np.log(2.0), rtol=1e-6)


def test_a_crafted_schedule_is_refused(tmp_path):
    path = _saved(tmp_path)
    data, n, table, header = _header(path)
    header["schedule"]["steps"][1][1] = [header["schedule"]["steps"][0][2][0]]  # log reads exp's result
    _rewrite(path, header, data, n, table)
    with pytest.raises(gn.PlanFileError, match="reads"):
        gn.load(path)


def test_a_version_1_file_is_refused_with_a_clear_error(tmp_path):
    path = _saved(tmp_path)
    data, n, table, header = _header(path)
    header["version"] = 1
    _rewrite(path, header, data, n, table)
    with pytest.raises(PlanVersionError, match="version 1.*compile the model again"):
        gn.load(path)


def test_a_fused_kernel_given_one_of_its_inputs_as_out_reads_it_first():
    kernel = REGISTRY["fused"].kernel
    body = (("mul", (-1, -1), ()), ("add", (0, -1), ()), ("sub", (1, -2), ()))  # a * a + a - b
    a, b = np.arange(4.0), np.full(4, 0.5)
    want = a * a + a - b
    got = kernel(np, a.copy(), b, body=body)
    np.testing.assert_array_equal(got, want)
    inp = a.copy()
    out = kernel(np, inp, b, out=inp, body=body)  # the executor reuses a dying input
    assert out is inp
    np.testing.assert_array_equal(out, want)
