"""The optimizer's update rule, as graph ops: one set of effects per trainable parameter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GradientError, OptimizerError
from ..ir import Graph, Node
from ..ops import assign, cast
from ..ops.registry import derived_from
from ..tensor import Tensor, Variable, variable


@dataclass(frozen=True)
class OptimizerVariables:
    """The variables a training plan adds: the step counter and one per numeric hyperparameter."""

    step: Variable
    hyper: dict[str, Variable]

    @staticmethod
    def create(optimizer: Any) -> "OptimizerVariables":
        step = Variable(np.zeros((), np.int64), "optimizer.step", trainable=False, kind="step")
        hyper = {key: Variable(np.array(value, np.float64), f"optimizer.{key}", trainable=False, kind="hyper",
                               key=key)
                 for key, value in optimizer.numeric_hyperparams().items()}
        return OptimizerVariables(step, hyper)

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
    step_node = variable(variables.step)
    hyper_tensors = variables.tensors()
    with derived_from(graph.outputs[0], "update", scope="optimizer"):
        step = cast(step_node, "float64") + 1.0
    effects = list(graph.effects)
    for param_node, grad_node in graph.grads:
        var = param_node.attrs["var"]
        group = optimizer.group_of(var)
        if group is None:
            raise OptimizerError(f"{_param_name(param_node)} has a gradient but is in none of the optimizer's "
                                 f"parameter groups")
        h = optimizer.hyper_tensors(hyper_tensors, group)
        with optimizer.settings(group):
            effects += _updates(optimizer, param_node, grad_node, step, h)
    with derived_from(graph.outputs[0], "update", scope="optimizer"):
        effects.append(assign(step_node, step_node + 1, kind="step_counter").node)
    return Graph.build(graph.outputs, graph.output_names, effects)


def _updates(optimizer: Any, param_node: Node, grad_node: Node, step: Tensor, h: Any) -> list[Node]:
    """The effects updating one parameter and its optimizer state."""
    var = param_node.attrs["var"]
    initial = optimizer.init_state(var.data)
    if set(initial) != set(optimizer.state_names):
        raise OptimizerError(f"{optimizer.name}: init_state gave slots {sorted(initial)}, "
                             f"state_names are {sorted(optimizer.state_names)}")
    state_vars = {slot: Variable(np.array(value, dtype=var.data.dtype), f"{_param_name(param_node)}@{slot}",
                                 trainable=False, kind="optimizer_state", key=slot, owner=var)
                  for slot, value in initial.items()}
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
