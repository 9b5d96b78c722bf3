"""The optimizer's update rule, as graph ops: one set of effects per trainable parameter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GradientError, OptimizerError
from ..ir import Graph, Node
from ..ops import assign, cast
from ..ops.registry import derived_from
from ..tensor import Tensor, Variable, variable


@dataclass(frozen=True)
class OptimizerVariables:
    """The variables a training plan adds: the step counter, one per numeric hyperparameter,
    and each parameter's optimizer-state slots.

    A plan recompiled for a new update structure (graphnet.compile) passes the variables it
    has, so the new update continues from them: ``state`` (``(parameter id, slot)`` ->
    Variable) is reused where a slot exists and filled with what ``init_state`` gives where it
    does not; ``steps`` gives a parameter a step counter of its own (one that started training
    later counts its own updates, as PyTorch's per-parameter ``step`` does); the others use
    ``step``."""

    step: Variable
    hyper: dict[str, Variable]
    state: dict[tuple[int, str], Variable] = field(default_factory=dict)
    steps: dict[int, Variable] = field(default_factory=dict)

    @staticmethod
    def create(optimizer: Any, reuse: "OptimizerVariables | None" = None) -> "OptimizerVariables":
        step = reuse.step if reuse is not None else \
            Variable(np.zeros((), np.int64), "optimizer.step", trainable=False, kind="step")
        known = reuse.hyper if reuse is not None else {}
        hyper = {key: known[key] if key in known else
                 Variable(np.array(value, np.float64), f"optimizer.{key}", trainable=False, kind="hyper", key=key)
                 for key, value in optimizer.numeric_hyperparams().items()}
        if reuse is None:
            return OptimizerVariables(step, hyper)
        return OptimizerVariables(step, hyper, reuse.state, reuse.steps)

    def step_of(self, var: Variable) -> Variable:
        """The step counter of parameter ``var``'s updates."""
        return self.steps.get(var.id, self.step)

    def tensors(self) -> dict[str, Tensor]:
        return {key: variable(var) for key, var in self.hyper.items()}


def _param_name(node: Node) -> str:
    var = node.attrs["var"]
    return var.name or f"var{var.id}"


def optimizer_updates(graph: Graph, optimizer: Any, variables: OptimizerVariables) -> Graph:
    """Turn ``graph.grads`` into effects: for each parameter ``assign(param, new_param)``
    (kind ``param_update``) and one ``assign`` per optimizer-state slot (kind
    ``optimizer_state``), then ``assign(step, step + 1)`` (kind ``step_counter``) last.

    The state slots become variables of the plan (``0.weight@exp_avg``), initialised by
    ``optimizer.init_state``; hyperparameters are read from ``variables.hyper``.
    """
    if not graph.grads:
        raise GradientError("optimizer updates need gradients: run autodiff first")
    hyper_tensors = variables.tensors()
    counters: dict[int, tuple[Tensor, Tensor]] = {}  # step Variable id -> (its node, this update's step)

    def step_for(var: Variable) -> Tensor:
        counter = variables.step_of(var)
        if counter.id not in counters:
            with derived_from(graph.outputs[0], "update", scope="optimizer"):
                node = variable(counter)
                counters[counter.id] = (node, cast(node, "float64") + 1.0)
        return counters[counter.id][1]

    step_for(variables.step)  # the plan's own counter comes first, whoever uses it
    effects = list(graph.effects)
    for param_node, grad_node in graph.grads:
        var = param_node.attrs["var"]
        group = optimizer.group_of(var)
        if group is None:
            raise OptimizerError(f"{_param_name(param_node)} has a gradient but is in none of the optimizer's "
                                 f"parameter groups")
        h = optimizer.hyper_tensors(hyper_tensors, group)
        with optimizer.settings(group):
            effects += _updates(optimizer, param_node, grad_node, step_for(var), h, variables.state)
    with derived_from(graph.outputs[0], "update", scope="optimizer"):
        for node, _ in counters.values():
            effects.append(assign(node, node + 1, kind="step_counter").node)
    return Graph.build(graph.outputs, graph.output_names, effects)


def _updates(optimizer: Any, param_node: Node, grad_node: Node, step: Tensor, h: Any,
             known: dict[tuple[int, str], Variable]) -> list[Node]:
    """The effects updating one parameter and its optimizer state (slots in ``known`` are
    reused; new ones are added to it)."""
    var = param_node.attrs["var"]
    initial = optimizer.init_state(var.data)
    if set(initial) != set(optimizer.state_names):
        raise OptimizerError(f"{optimizer.name}: init_state gave slots {sorted(initial)}, "
                             f"state_names are {sorted(optimizer.state_names)}")
    state_vars = {}
    for slot, value in initial.items():
        existing = known.get((var.id, slot))
        if existing is None or existing.data.shape != np.shape(value):
            existing = known[var.id, slot] = Variable(
                np.array(value, dtype=var.data.dtype), f"{_param_name(param_node)}@{slot}", trainable=False,
                kind="optimizer_state", key=slot, owner=var)
        state_vars[slot] = existing
    with derived_from(param_node, "update", scope=_param_name(param_node).rpartition(".")[0]):
        state = {slot: variable(v) for slot, v in state_vars.items()}
        new_param, new_state = optimizer.update(Tensor(param_node), Tensor(grad_node), state, step, h)
        if set(new_state) != set(state_vars):
            raise OptimizerError(f"{optimizer.name}: update returned state {sorted(new_state)}, "
                                 f"state_names are {sorted(state_vars)}")
        effects = [assign(Tensor(param_node), _typed(new_param, param_node), kind="param_update").node]
        for slot, value in new_state.items():
            effects.append(assign(state[slot], _typed(value, state[slot].node), kind="optimizer_state").node)
    return effects


def _typed(value: Tensor, like: Node) -> Tensor:
    if not isinstance(value, Tensor) or value.dtype != like.type.dtype or value.ndim != like.type.ndim:
        raise OptimizerError(f"an optimizer update must give a tensor like the parameter {like.type}, got {value!r}")
    return value


def updated_parameters(graph: Graph) -> set[int]:
    """The ids of the Variables ``graph``'s effects update as parameters (``param_update``
    writes, fused or not): what a training plan trains."""
    updated = set()
    for node in graph.effects:
        kinds = node.attrs["kinds"] if node.op == "fused_assign" else (node.attrs.get("kind"),)
        for target, kind in zip(node.inputs, kinds):
            if kind == "param_update" and target.op == "variable":
                updated.add(target.attrs["var"].id)
    return updated
