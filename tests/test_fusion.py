"""Elementwise fusion: the pass alone (a graph, the pass, the groups expected, and the cases
where it must not fuse), the compile report, pass bisection, equivalence of the reference
networks with and without every optimisation, plan files with fused groups, rendering."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

import graphnet as gn
from graphnet.backends.numpy import fused_kernels
from graphnet.ir import Graph
from graphnet.ops import registry
from graphnet.ops import scalar as scalar_forms
from graphnet.passes import fuse
from graphnet.passes.fuse import plan_groups

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)
CODEGENS = ["numpy"] + (["numba"] if fused_kernels.numba_available() else [])


def _graph(**outputs: gn.Tensor) -> Graph:
    return Graph.build([t.node for t in outputs.values()], list(outputs))


def _groups(graph: Graph) -> list[list[str]]:
    return [[op for op, _, _ in node.attrs["body"]] for node in fuse(graph).nodes if node.op == "fused"]


# --- the pass alone --------------------------------------------------------------------------

def test_a_chain_after_a_matmul_becomes_one_group():
    x, w, b = gn.placeholder("x", (None, 4)), gn.placeholder("w", (4, 3)), gn.placeholder("b", (3,))
    graph = _graph(y=gn.tanh(gn.relu(gn.matmul(x, w) + b) * 2.0))
    assert _groups(graph) == [["add", "relu", "mul", "tanh"]]
    fused = [n for n in fuse(graph).nodes if n.op == "fused"][0]
    assert fused.inputs[0].op == "matmul" and fused.type == graph.outputs[0].type


def test_a_bool_mask_and_a_value_used_twice_join_the_group():
    x, g = gn.placeholder("x", (5, 3)), gn.placeholder("g", (5, 3))
    d = x - 1.0
    graph = _graph(y=g * gn.greater(x, 0.0) + d * d)
    assert _groups(graph) == [["greater", "mul", "sub", "mul", "add"]]


def test_values_needed_elsewhere_are_not_fused_and_the_report_says_why():
    x, w = gn.placeholder("x", (5, 3)), gn.placeholder("w", (3, 3))
    a = gn.exp(x)
    graph = _graph(y=gn.matmul(a, w) + 1.0, z=gn.relu(a))  # a: read by matmul and relu
    assert _groups(graph) == []
    _, alone = plan_groups(graph)
    reasons = {node.op: why for node, why in alone}
    assert reasons["exp"] == "read by matmul"
    assert "needed outside" in reasons["add"] and "needed outside" in reasons["relu"]


def test_random_ops_and_effects_are_never_members_and_a_reduction_only_ends_a_group():
    x = gn.placeholder("x", (5, 3))
    y = gn.exp(gn.dropout(x * 2.0, 0.5)) + 1.0
    s = gn.sum(gn.exp(x) * 3.0)
    graph = _graph(y=y, s=s)
    ops = [n.op for n in fuse(graph).nodes]
    assert "dropout" in ops and "sum" not in ops
    assert _groups(graph) == [["exp", "add"], ["exp", "mul", "sum"]]
    t = gn.sum(x * 2.0, axis=1) + 1.0  # a reduction read by an elementwise op: the add is a step of its own
    assert _groups(_graph(t=t)) == [["mul", "sum"]]


def test_broadcast_producers_join_only_when_cheap_to_recompute():
    x, c = gn.placeholder("x", (64, 8)), gn.placeholder("c", (8,))
    assert _groups(_graph(y=x * (c * 2.0 + 1.0))) == [["mul", "add", "mul"]]  # cheap: recomputed per element
    graph = _graph(y=x * gn.exp(c))  # exp per element of x would be 64x the work
    assert _groups(graph) == []
    assert "recomputed for each element" in dict((n.op, w) for n, w in plan_groups(graph)[1])["exp"]


def test_a_cheap_scalar_read_by_two_groups_is_computed_in_each():
    x, y, lr = gn.placeholder("x", (4,)), gn.placeholder("y", (4,)), gn.placeholder("lr", (), "float64")
    scale = gn.cast(lr, "float32")
    graph = _graph(a=gn.exp(x) * scale, b=gn.log(y) * scale)
    assert sorted(sorted(g) for g in _groups(graph)) == [["cast", "exp", "mul"], ["cast", "log", "mul"]]


def test_fused_nodes_verify_and_print_with_their_members():
    x = gn.placeholder("x", (None, 6))
    graph = fuse(_graph(y=gn.sigmoid(x * 3.0) - x))
    gn.passes.verify(graph)
    assert "fused" in str(graph) and "mul" in str(graph) and "sigmoid" in str(graph)


# --- the compile report -----------------------------------------------------------------------

@pytest.fixture(params=CODEGENS)
def codegen(request):
    """Each test taking it runs with generated kernels and with the NumPy fallback."""
    with gn.config.options(codegen=request.param):
        yield request.param


def _mlp_plan(**options):
    gn.manual_seed(0)
    x, labels = gn.placeholder("x", (None, 6)), gn.placeholder("labels", (None,), "int64")
    model = gn.nn.Sequential(gn.nn.Linear(6, 8), gn.nn.ReLU(), gn.nn.Linear(8, 3))
    with gn.config.options(fuse=True, **options):
        return gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=gn.optim.Adam(lr=1e-2), seed=1)


def test_the_report_lists_passes_groups_what_was_left_and_kernel_counts():
    plan = _mlp_plan()
    report = plan.report
    assert [r.name for r in report][-6:] == ["fuse", "fuse_updates", "schedule", "lower", "flatten_state", "plan_memory"]
    assert report.kernels == len(plan.plan.steps) < report.kernels_unfused
    assert report.groups and all(len(g["members"]) >= 2 for g in report.groups if not g["group"].startswith("writes"))
    assert any(g["group"] == "writes optimizer.step" and g["members"] == [["add", g["members"][0][1]]]
               for g in report.groups)  # the step counter: one fused_assign of one member
    assert all(at.startswith("test_fusion.py:") for g in report.groups for _, at in g["members"])
    assert any(n["why"].startswith("read by") for n in report.not_fused)
    data = json.loads(report.to_json())
    assert data["kernels"] == report.kernels and data["groups"] == report.groups
    text = str(report)
    assert "fused groups" in text and "not fused" in text and "kernels per run" in text
    if fused_kernels.numba_available():
        kernels = sum(1 for s in plan.plan.steps if s.op in ("fused", "fused_assign"))
        assert report.codegen["numba_groups"] == kernels
        assert report.codegen["compiled"] + report.codegen["loaded_from_disk_cache"] \
            + report.codegen["shared_in_process"] >= kernels
    numpy_report = _mlp_plan(codegen="numpy").report
    assert numpy_report.codegen["numba_groups"] == 0
    assert numpy_report.codegen["numpy_groups"] == {"GRAPHNET_CODEGEN=numpy": kernels}


def test_debug_prints_the_kernel_counts(capsys):
    _mlp_plan(debug=1)
    out = capsys.readouterr().out
    assert "kernels per run" in out and "fused groups" in out and "not fused" in out


def test_inspect_report_shows_a_saved_plans_report(tmp_path, capsys):
    from graphnet import cli

    plan = _mlp_plan()
    path = plan.save(tmp_path / "mlp.gnp")
    assert cli.main(["inspect", "--report", str(path)]) == 0
    assert "fused groups" in capsys.readouterr().out
    assert cli.main(["inspect", "--report", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["groups"] == plan.report.groups and data["kernels"] == plan.report.kernels


# --- equivalence with and without every optimisation, and bisection ---------------------------

def _seed_cnn_case():
    from mnist_cnn import seed_cnn

    x, labels = gn.placeholder("x", (None, 1, 28, 28)), gn.placeholder("labels", (None,), "int64")
    rng = np.random.default_rng(0)
    return (gn.losses.cross_entropy(seed_cnn()(x), labels),
            {"x": rng.standard_normal((4, 1, 28, 28)).astype(np.float32), "labels": rng.integers(0, 10, 4)})


def _mlp_case():
    x, labels = gn.placeholder("x", (None, 784)), gn.placeholder("labels", (None,), "int64")
    model = gn.nn.Sequential(gn.nn.Linear(784, 64), gn.nn.ReLU(), gn.nn.Linear(64, 64), gn.nn.ReLU(),
                             gn.nn.Linear(64, 10))
    rng = np.random.default_rng(0)
    return (gn.losses.cross_entropy(model(x), labels),
            {"x": rng.standard_normal((8, 784)).astype(np.float32), "labels": rng.integers(0, 10, 8)})


def _resnet_case():
    from resnet import ResNet

    x, labels = gn.placeholder("x", (None, 1, 28, 28)), gn.placeholder("labels", (None,), "int64")
    rng = np.random.default_rng(0)
    return (gn.losses.cross_entropy(ResNet()(x), labels),
            {"x": rng.standard_normal((4, 1, 28, 28)).astype(np.float32), "labels": rng.integers(0, 10, 4)})


def _activations_case():
    x, labels = gn.placeholder("x", (None, 12)), gn.placeholder("labels", (None,), "int64")
    layers = [gn.nn.Linear(12, 16)]
    for act in (gn.nn.ReLU(), gn.nn.Tanh(), gn.nn.Sigmoid(), gn.nn.GELU(), gn.nn.SiLU(), gn.nn.LeakyReLU(0.1),
                gn.nn.ELU(), gn.nn.Dropout(0.2)):
        layers += [act, gn.nn.Linear(16, 16)]
    model = gn.nn.Sequential(*layers, gn.nn.Linear(16, 4))
    rng = np.random.default_rng(0)
    return (gn.losses.cross_entropy(model(x), labels),
            {"x": rng.standard_normal((8, 12)).astype(np.float32), "labels": rng.integers(0, 4, 8)})


@pytest.mark.parametrize("case", [_seed_cnn_case, _mlp_case, _resnet_case, _activations_case],
                         ids=["seed_cnn", "mlp", "resnet", "activations"])
def test_every_optimisation_keeps_outputs_and_updates_within_float32_tolerance(case):
    gn.manual_seed(3)
    loss, feeds = case()
    # SGD with lr 1: the parameters' change is their gradient, so gradients are compared too
    result = gn.debug.bisect_passes(loss, feeds, optimizer=gn.optim.SGD(lr=1.0), tolerance=2e-4)
    assert result.culprit is None, str(result)
    assert set(result.differences) == set(gn.debug.OPTIMISATIONS)


def _tanh_case():
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 5))
    layer = gn.nn.Linear(5, 5)
    loss = gn.sum(gn.tanh(layer(x)) * 2.0)  # the line the bisection must name
    return loss, {"x": np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)}


@pytest.mark.skipif(not fused_kernels.numba_available(), reason="numba is not installed")
def test_bisection_names_a_wrong_generated_kernel_with_its_op_and_line(monkeypatch):
    wrong = dataclasses.replace(registry.REGISTRY["tanh"], scalar=lambda x: scalar_forms.erf(x))  # not tanh
    monkeypatch.setitem(registry.REGISTRY, "tanh", wrong)
    loss, feeds = _tanh_case()
    result = gn.debug.bisect_passes(loss, feeds, optimizer=gn.optim.SGD(lr=0.1))
    assert result.culprit == "codegen"
    assert result.op.startswith("tanh")  # the group whose last member is tanh: "tanh (fused: add, tanh)"
    assert result.location.startswith("test_fusion.py:")
    assert "first to change the results: codegen" in str(result)


def test_bisection_names_a_wrong_fusion(monkeypatch):
    original = registry.REGISTRY["fused"]
    wrong = dataclasses.replace(original, kernel=lambda xp, *a, body, out=None: original.kernel(xp, *a, body=body) * 1.01)
    monkeypatch.setitem(registry.REGISTRY, "fused", wrong)
    loss, feeds = _tanh_case()
    with gn.config.options(codegen="numpy"):
        result = gn.debug.bisect_passes(loss, feeds, optimizer=gn.optim.SGD(lr=0.1))
    assert result.culprit == "fuse" and result.differences["fuse"] > 1e-3
    assert result.location.startswith("test_fusion.py:")


def test_the_bisect_command_runs_a_scripts_case(tmp_path, capsys):
    from graphnet import cli

    script = tmp_path / "case.py"
    script.write_text(
        "import numpy as np, graphnet as gn\n"
        "def bisect_case():\n"
        "    x = gn.placeholder('x', (None, 3))\n"
        "    return {'outputs': gn.tanh(x * 2.0) + 1.0, 'feeds': {'x': np.ones((2, 3), np.float32)}}\n")
    assert cli.main(["bisect", str(script)]) == 0
    out = capsys.readouterr().out
    assert "no optimisation changes the results" in out and "+ fuse" in out
    assert cli.main(["bisect", str(script), "--function", "missing"]) == 1
    assert "defines no function 'missing'" in capsys.readouterr().err


# --- plan files and rendering -----------------------------------------------------------------

@pytest.mark.parametrize("codegen", CODEGENS)
def test_a_fused_training_plan_saves_loads_and_resumes_bit_identically(tmp_path, codegen):
    rng = np.random.default_rng(2)
    batches = [{"x": rng.standard_normal((5, 6)).astype(np.float32), "labels": rng.integers(0, 3, 5)}
               for _ in range(6)]
    with gn.config.options(codegen=codegen):
        straight = _mlp_plan(codegen=codegen)
        losses = [float(straight.run(b)["loss"]) for b in batches]
        first = _mlp_plan(codegen=codegen)
        for b in batches[:3]:
            first.run(b)
        path = first.save(tmp_path / "fused.gnp")
        resumed = gn.load(path)
    assert resumed.plan.op_counts() == first.plan.op_counts() and "fused" in resumed.plan.op_counts()
    assert [r.notes for r in resumed.plan.passes] == [r.notes for r in first.plan.passes]
    assert [float(resumed.run(b)["loss"]) for b in batches[3:]] == losses[3:]


def test_a_version_2_file_still_loads(tmp_path):
    from plan_fuzz import join, split

    plan = _mlp_plan()
    path = tmp_path / "v2.gnp"
    plan.save(path)
    table, body = split(path.read_bytes())
    header = json.loads(table["__metadata__"]["graphnet"])
    header["version"] = 2  # what graphnet wrote before pass notes: records of four fields
    header["passes"] = [record[:4] for record in header["passes"]]
    table["__metadata__"]["graphnet"] = json.dumps(header)
    path.write_bytes(join(table, body))
    loaded = gn.load(path)
    assert [r.notes for r in loaded.plan.passes] == [()] * len(plan.plan.passes)
    assert loaded.plan.op_counts() == plan.plan.op_counts()


def test_render_draws_a_fused_group_as_a_cluster_of_its_members():
    x, b = gn.placeholder("x", (None, 6)), gn.placeholder("b", (6,))
    with gn.config.options(fuse=True):
        plan = gn.compile(gn.tanh(gn.relu(x * 2.0 + b) - gn.sigmoid(x)))
    dot = gn.to_dot(plan)
    assert "cluster_fused_" in dot and "fused (6 ops, one kernel)" in dot
    fused = [s for s in plan.graph.nodes if s.op == "fused"][0]
    x_node = [n for n in plan.graph.nodes if n.op == "placeholder" and n.attrs["name"] == "x"][0]
    # x enters the group twice: at the multiply and at the sigmoid
    assert dot.count(f"n{x_node.uid} -> f{fused.uid}_") == 2


# --- fused updates ------------------------------------------------------------------------------

def _updates(graph: Graph) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(kinds, member ops) of each fused_assign effect, after fuse and fuse_updates."""
    from graphnet.passes import fuse_updates

    return [(e.attrs["kinds"], tuple(op for op, _, _ in e.attrs["body"]))
            for e in fuse_updates(fuse(graph)).effects if e.op == "fused_assign"]


def _variable(name: str, shape: tuple[int, ...]) -> gn.Tensor:
    return gn.Parameter(np.zeros(shape, np.float32), name=name, trainable=False)


def test_an_update_and_the_state_it_reads_become_one_effect():
    p, m, g = _variable("p", (3,)), _variable("m", (3,)), gn.placeholder("g", (3,))
    m_new = m * 0.9 + g
    effects = [gn.ops.assign(p, p - m_new * 0.1, kind="param_update"),
               gn.ops.assign(m, m_new, kind="optimizer_state")]
    graph = Graph.build([g.node], ["g"], [e.node for e in effects])
    # m' joins p's update (p reads it) and is written to m by the same step
    assert _updates(graph) == [(("optimizer_state", "param_update"), ("mul", "add", "mul", "sub"))]


def test_values_read_elsewhere_or_of_another_shape_are_not_merged():
    p, m, g = _variable("p", (3,)), _variable("m", (3,)), gn.placeholder("g", (3,))
    m_new = m * 0.9 + g
    effects = [gn.ops.assign(p, p - m_new * 0.1, kind="param_update"),
               gn.ops.assign(m, m_new, kind="optimizer_state")]
    graph = Graph.build([m_new.node], ["m_new"], [e.node for e in effects])  # m' is also an output
    assert _updates(graph) == [(("param_update",), ("mul", "sub"))]
    s = _variable("s", ())
    copy = gn.ops.assign(s, gn.sum(g), kind="running_stat")  # a reduction is no elementwise value
    assert _updates(Graph.build([g.node], ["g"], [copy.node])) == []


def test_fused_updates_train_like_separate_assigns(codegen):
    rng = np.random.default_rng(4)
    batches = [{"x": rng.standard_normal((6, 6)).astype(np.float32), "labels": rng.integers(0, 3, 6)}
               for _ in range(4)]

    def losses(disabled):
        plan = _mlp_plan(disabled_passes=disabled)
        return plan, [float(plan.run(b)["loss"]) for b in batches]

    fused_plan, fused = losses(set())
    plain_plan, plain = losses({"fuse_updates"})
    assert "fused_assign" in fused_plan.plan.op_counts() and "assign" not in fused_plan.plan.op_counts()
    assert "fused_assign" not in plain_plan.plan.op_counts()
    np.testing.assert_allclose(fused, plain, rtol=1e-6)
    assert fused_plan.step_count == plain_plan.step_count == 4


def test_an_interrupt_during_a_fused_update_is_delivered_after_the_phase(monkeypatch, codegen):
    import signal

    plan = _mlp_plan()
    executor = plan.executor
    first = plan.plan.first_effect
    fn, *rest = executor._program[first]
    weight = [v for n, v in plan.variables.items() if n.endswith("0.weight")][0]
    before = weight.data.copy()

    def interrupted(*args):
        signal.raise_signal(signal.SIGINT)  # arrives while the update runs: held until the phase ends
        return fn(*args)

    executor._program[first] = (interrupted, *rest)
    executor._fresh[first] = interrupted  # what the first run (sizing the storage blocks) calls
    batch = {"x": np.ones((2, 6), np.float32), "labels": np.array([0, 1])}
    with pytest.raises(KeyboardInterrupt):
        plan.run(batch)
    assert plan.step_count == 1  # every effect ran, once
    assert not np.array_equal(weight.data, before)
    reference = _mlp_plan()  # the same model and step without the interrupt: updated exactly once alike
    reference.run(batch)
    expected = [v for n, v in reference.variables.items() if n.endswith("0.weight")][0]
    np.testing.assert_array_equal(weight.data, expected.data)


# --- pattern passes -----------------------------------------------------------------------------

def test_cross_entropy_becomes_one_step_whose_gradient_is_one_more(codegen):
    from graphnet.passes import fuse_cross_entropy

    z, y = gn.placeholder("z", (None, 4)), gn.placeholder("y", (None,), "int64")
    graph = fuse_cross_entropy(_graph(loss=gn.losses.cross_entropy(z, y, label_smoothing=0.1)))
    ops = [n.op for n in graph.nodes]
    assert "cross_entropy" not in ops and ops.count("softmax_cross_entropy") == 1
    assert graph.outputs[0].op == "tuple_get" and graph.outputs[0].type == gn.TensorType((), "float32")
    gn.manual_seed(0)
    w = gn.Parameter(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    x = gn.placeholder("x", (None, 3))
    plan = gn.compile(gn.losses.cross_entropy(gn.matmul(x, w), y), optimizer=gn.optim.SGD(lr=0.1))
    counts = plan.plan.op_counts()
    assert counts["softmax_cross_entropy"] == counts["softmax_cross_entropy_grad"] == 1
    assert "log_softmax" not in counts and "pick" not in counts


def test_training_batch_norm_becomes_two_steps_and_eval_stays_decomposed(codegen):
    from graphnet.passes import fuse_batch_norm

    x = gn.placeholder("x", (None, 3, 4, 4))
    w, b = gn.placeholder("w", (3,)), gn.placeholder("b", (3,))
    rm, rv = _variable("rm", (3,)), _variable("rv", (3,))
    train = gn.batch_norm(x, rm, rv, w, b, training=True)
    evaluation = gn.batch_norm(x, rm, rv, w, b, training=False)
    graph = fuse_batch_norm(_graph(train=train, evaluation=evaluation))
    ops = [n.op for n in graph.nodes]
    assert ops.count("batch_norm_train") == 1 and ops.count("batch_norm") == 1  # eval: one fused step later
    bn = gn.nn.BatchNorm2d(3)
    plan = gn.compile(gn.sum(bn(x) * bn.weight.data.sum()), optimizer=gn.optim.SGD(lr=0.1), mode="train")
    counts = plan.plan.op_counts()
    assert counts["batch_norm_train"] == counts["batch_norm_train_grad"] == 1


@pytest.mark.parametrize("conv_bias", [False, True])
def test_eval_batch_norm_folds_into_the_convolution_before_it(conv_bias, codegen):
    gn.manual_seed(1)
    model = gn.nn.Sequential(gn.nn.Conv2d(2, 3, 3, padding=1, bias=conv_bias), gn.nn.BatchNorm2d(3), gn.nn.ReLU())
    bn = model[1]
    rng = np.random.default_rng(0)
    bn.running_mean.data[...] = rng.standard_normal(3)
    bn.running_var.data[...] = rng.uniform(0.5, 2.0, 3)
    bn.weight.data[...] = rng.standard_normal(3)
    bn.bias.data[...] = rng.standard_normal(3)
    model.eval()
    x = gn.placeholder("x", (None, 2, 5, 5))
    folded = gn.compile(model(x))
    with gn.config.options(disabled_passes={"fold_batch_norm"}):
        plain = gn.compile(model(x))
    # the activation is read once, by the bias-and-relu group; the statistics only touch (C,) values
    big = [s for s in folded.plan.steps if s.op == "fused" and folded.plan.buffers[s.outputs[0]].shape[0] is None]
    assert len(big) == 1 and [op for op, _, _ in big[0].attrs["body"]] == ["add", "relu"]
    xv = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(folded.run(x=xv)["output"], plain.run(x=xv)["output"], rtol=1e-5, atol=1e-5)
    bn.running_var.data[...] *= 3.0  # the folded weights follow the variables at every run
    np.testing.assert_allclose(folded.run(x=xv)["output"], plain.run(x=xv)["output"], rtol=1e-5, atol=1e-5)


def test_a_reduction_of_a_group_read_by_nothing_else_ends_the_group(codegen):
    a, b = gn.placeholder("a", (None, 4)), gn.placeholder("b", (None, 4))
    d = a - b
    assert _groups(_graph(loss=gn.mean(d * d))) == [["sub", "mul", "mean"]]
    squared = d * d
    assert _groups(_graph(loss=gn.mean(squared), d2=squared)) == [["sub", "mul"]]  # squared is needed outside
    from graphnet.ops.common import sum_to

    g = gn.placeholder("g", (8, 4))
    assert _groups(_graph(bias=sum_to(gn.relu(g) * 2.0, (4,)))) == [["relu", "mul", "sum_to"]]
    x = gn.placeholder("x", (None, 4))
    plan = gn.compile({"loss": gn.mean((x - 1.0) * (x - 1.0))})
    xv = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(plan.run(x=xv)["loss"], np.mean((xv - 1.0) ** 2), rtol=1e-6)
    assert [op for op, _, _ in plan.plan.steps[-1].attrs["body"]][-1] == "mean"


def test_long_elementwise_chains_split_into_groups_a_loader_accepts(tmp_path):
    """A chain of 300 elementwise ops fuses into groups of at most ops.fused.MAX_MEMBERS members,
    computes what the unfused chain does, saves and loads; a plan file holding a larger group
    is refused at load with a typed error instead of compiling it for minutes."""
    from graphnet.ops.fused import MAX_MEMBERS

    x = gn.placeholder("x", (4, 5))
    y = x
    for k in range(300):
        y = gn.tanh(y * 0.9 + 0.01 * k)
    plan = gn.compile({"y": y})
    sizes = [len(s.attrs["body"]) for s in plan.plan.steps if s.op == "fused"]
    assert sizes and max(sizes) <= MAX_MEMBERS and sum(sizes) >= 890  # (y + 0.0 is simplified away)
    feeds = {"x": np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5)}
    with gn.config.options(fuse=False):
        unfused = gn.compile({"y": y})
    np.testing.assert_allclose(plan.run(feeds)["y"], unfused.run(feeds)["y"], rtol=1e-5)
    np.testing.assert_array_equal(gn.load(plan.save(tmp_path / "chain.gnp")).run(feeds)["y"], plan.run(feeds)["y"])
    with pytest.raises(gn.ShapeError, match="at most"):
        registry.get_op("fused").infer(*[gn.TensorType((4, 5), "float32")],
                                       body=tuple(("neg", (-1 if i == 0 else i - 1,), ()) for i in range(MAX_MEMBERS + 1)))
