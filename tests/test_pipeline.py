"""One pipeline: graph passes, the lowering and plan passes run by one driver, at compile and at
load; plan passes that add steps without a graph node; one list of optional passes; a pipeline
that does not depend on what is installed; plans that are not changed once built."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import graphnet as gn
from graphnet.errors import GraphError, PlanFileError
from graphnet.ir import TensorType
from graphnet.ops.registry import REGISTRY, defop
from graphnet.passes import STEP_RULES, Pass, StepRule, default_pipeline, optional_passes
from graphnet.passes.lower import releases
from graphnet.plan import Buffer, Step, VariableSpec

# --- a toy data-parallel all-reduce: a plan pass that adds node-less steps ---------------------



def _check_allreduce(step: Step, buffers) -> None:
    if len(step.inputs) != 1 or step.attrs:
        raise GraphError("toy_allreduce reads one gradient and has no attributes")
    if buffers[step.inputs[0]].kind != "temp":
        raise GraphError("toy_allreduce reduces a computed value")


def toy_allreduce(plan: gn.Plan) -> gn.Plan:
    """Every computed value an effect reads goes through one toy_allreduce step first (the
    place a data-parallel gradient all-reduce takes)."""
    buffers = dict(plan.buffers)
    reduced: dict[str, str] = {}
    added: list[Step] = []
    effects: list[Step] = []
    for step in plan.effects:
        inputs = []
        for name in step.inputs:
            if buffers[name].kind == "temp" and name not in reduced:
                spec = buffers[name]
                reduced[name] = f"%allreduced{len(reduced)}"
                buffers[reduced[name]] = Buffer(reduced[name], spec.shape, spec.dtype, "temp")
                added.append(Step("toy_allreduce", (name,), (reduced[name],), {}, "grad"))
            inputs.append(reduced.get(name, name))
        effects.append(dataclasses.replace(step, inputs=tuple(inputs)))
    steps = plan.steps[:plan.first_effect] + added + effects
    return dataclasses.replace(plan, buffers=buffers, steps=steps, first_effect=plan.first_effect + len(added),
                               release=releases(steps, buffers, plan.outputs))


@pytest.fixture(scope="module")
def allreduce():
    """The toy op and its pass, which exist while this file's tests run (the op meta-tests
    elsewhere cover the ops graphnet ships)."""
    defop("toy_allreduce", category="other", infer=lambda t: TensorType(t.shape, t.dtype),
          kernel=lambda xp, g: g * g.dtype.type(1), doc="stands for a sum over processes (one process here)")
    yield Pass("toy_allreduce", toy_allreduce, requires=("plan",), invalidates=(), level="plan",
               adds_steps={"toy_allreduce": StepRule(_check_allreduce, stands_for=0)})
    REGISTRY.pop("toy_allreduce")
    STEP_RULES.pop("toy_allreduce")


def _mlp_loss():
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 6))
    y = gn.placeholder("y", (None,), dtype="int64")
    model = gn.nn.Sequential(gn.nn.Linear(6, 5), gn.nn.ReLU(), gn.nn.Linear(5, 3))
    return gn.losses.cross_entropy(model(x), y), model


def _batch():
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((8, 6)).astype(np.float32), "y": rng.integers(0, 3, 8)}


def test_a_plan_pass_adds_node_less_steps_that_save_load_and_run(tmp_path, allreduce):
    loss, _ = _mlp_loss()
    plain = gn.compile(loss, optimizer=gn.optim.Adam(lr=1e-2), seed=0)
    loss, _ = _mlp_loss()
    reduced = gn.compile(loss, optimizer=gn.optim.Adam(lr=1e-2), seed=0, passes=[allreduce])
    added = [s for s in reduced.plan.steps if s.op == "toy_allreduce"]
    assert added and all(s.node == -1 for s in added)
    assert "toy_allreduce" in [r.name for r in reduced.report]
    batch = _batch()
    for _ in range(3):  # the all-reduce of one process changes nothing
        np.testing.assert_array_equal(plain.run(batch)["loss"], reduced.run(batch)["loss"])
    path = reduced.save(tmp_path / "reduced.gnp")
    loaded = gn.load(path)
    assert [s.op for s in loaded.plan.steps] == [s.op for s in reduced.plan.steps]
    for _ in range(2):
        np.testing.assert_array_equal(reduced.run(batch)["loss"], loaded.run(batch)["loss"])


def test_the_loader_refuses_node_less_steps_no_pass_declares(tmp_path, monkeypatch, allreduce):
    loss, _ = _mlp_loss()
    reduced = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.1), seed=0, passes=[allreduce])
    path = reduced.save(tmp_path / "reduced.gnp")
    monkeypatch.delitem(STEP_RULES, "toy_allreduce")
    with pytest.raises(PlanFileError, match="no pass declares 'toy_allreduce'"):
        gn.load(path)


def test_the_loader_runs_the_declared_check(tmp_path, monkeypatch, allreduce):
    loss, _ = _mlp_loss()
    reduced = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.1), seed=0, passes=[allreduce])
    path = reduced.save(tmp_path / "reduced.gnp")

    def refuse(step, buffers):
        raise GraphError("refused by its pass")
    monkeypatch.setitem(STEP_RULES, "toy_allreduce", StepRule(refuse))
    with pytest.raises(PlanFileError, match="refused by its pass"):
        gn.load(path)


def test_only_stored_plan_passes_add_steps():
    with pytest.raises(GraphError, match="only a stored plan pass"):
        Pass("bad", lambda g: g, adds_steps={"toy_allreduce": StepRule(_check_allreduce)})
    with pytest.raises(GraphError, match="level"):
        Pass("bad", lambda g: g, level="somewhere")


def test_one_list_of_optional_passes_serves_the_flag_bisection_and_the_pipeline():
    names = optional_passes()
    for name in ("pool_before_bias", "save_pool_argmax", "fuse", "fuse_updates", "flatten_state", "plan_memory"):
        assert name in names
    assert gn.debug.OPTIMISATIONS == names + ("codegen",)
    training = default_pipeline(gn.optim.SGD(lr=0.1))
    assert [p.name for p in training if p.optional] == list(names)
    loss, _ = _mlp_loss()
    with gn.config.options(disabled_passes={"flatten_state", "plan_memory"}):
        plan = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.1)).plan
    assert plan.memory is None and plan.flat == ()


def test_the_pipeline_is_the_same_whatever_generates_the_kernels():
    loss, _ = _mlp_loss()
    with gn.config.options(codegen="numba"):
        numba_plan = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.1), seed=0)
    loss, _ = _mlp_loss()  # the same initial parameters, not shared with the plan above
    with gn.config.options(codegen="numpy"):
        numpy_plan = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.1), seed=0)
    assert [r.name for r in numba_plan.report] == [r.name for r in numpy_plan.report]
    assert [(s.op, s.inputs, s.outputs) for s in numba_plan.plan.steps] == \
        [(s.op, s.inputs, s.outputs) for s in numpy_plan.plan.steps]
    assert "fused" in numpy_plan.plan.op_counts()  # the NumPy fallback runs the fused groups
    batch = _batch()
    for _ in range(2):
        np.testing.assert_allclose(numba_plan.run(batch)["loss"], numpy_plan.run(batch)["loss"], rtol=1e-6)


def test_a_plan_is_not_changed_once_built():
    loss, _ = _mlp_loss()
    plan = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.1)).plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.memory = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.mode = "eval"  # type: ignore[misc]


def test_a_plan_is_plain_data_and_the_compiled_plan_binds_the_variables():
    loss, model = _mlp_loss()
    compiled = gn.compile(loss, optimizer=gn.optim.Adam(lr=1e-2))
    plan = compiled.plan
    assert plan.variables and all(isinstance(spec, VariableSpec) for spec in plan.variables.values())
    held = [value for spec in plan.variables.values() for value in dataclasses.astuple(spec)]
    assert all(isinstance(value, (str, int, bool, type(None))) for value in held)  # no arrays, no locks
    assert set(compiled.variables) == set(plan.variables)
    weight = next(p for p in model.parameters() if p.var.name.endswith("0.weight")).var
    assert any(var is weight for var in compiled.variables.values())
    assert {spec.kind for spec in plan.variables.values()} >= {"parameter", "optimizer_state", "hyper", "step"}


def test_a_plan_file_written_before_the_backend_reshaping_loads_and_continues_exactly():
    """tests/data/mlp_adam_v3_before_backends.gnp: format 3, saved by graphnet before backends
    became kernel tables (a 6-5-3 MLP, Adam, one step taken); its next step's loss then was
    0x1.e92ba60000000p-1."""
    from pathlib import Path

    loaded = gn.load(Path(__file__).parent / "data" / "mlp_adam_v3_before_backends.gnp")
    assert loaded.step_count == 1
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((8, 6)).astype(np.float32), "y": rng.integers(0, 3, 8)}
    assert float(loaded.run(feeds)["loss"]).hex() == "0x1.e92ba60000000p-1"


def test_extra_graph_passes_run_before_scheduling_and_show_in_the_report():
    seen = []

    def count_nodes(graph):
        seen.append(len(graph.nodes))
        return graph

    loss, _ = _mlp_loss()
    compiled = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.1), passes=[Pass("count_nodes", count_nodes)])
    names = [r.name for r in compiled.report]
    assert names.index("count_nodes") == names.index("schedule") - 1
    assert seen and seen[0] == next(r for r in compiled.report if r.name == "count_nodes").nodes_before
