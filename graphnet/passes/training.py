"""Turn a loss graph into a training-step graph: gradients, clipping, and optimizer updates."""

from __future__ import annotations

from typing import Any

from ..errors import GradientError
from ..ir import Graph, Node
from ..ops import maximum, sqrt, sum as reduce_sum
from ..ops.registry import derived_from
from ..tensor import Tensor
from .autodiff import gradients


def trainable_variables(graph: Graph) -> list[Node]:
    """The trainable variable nodes the first output depends on, in graph order."""
    from ..ir import topological_order

    return [n for n in topological_order([graph.outputs[0]]) if n.op == "variable" and n.attrs["var"].trainable]


def clip_by_global_norm(grads: list[Tensor], max_norm: float) -> list[Tensor]:
    """Scale all gradients by min(1, max_norm / (global L2 norm + 1e-6)), as PyTorch's clip_grad_norm_."""
    total = None
    for g in grads:
        sq = reduce_sum(g * g)
        total = sq if total is None else total + sq
    assert total is not None
    norm = sqrt(total)
    scale = 1.0 / maximum(norm / max_norm + 1e-6 / max_norm, 1.0)
    return [g * scale for g in grads]


def add_training_updates(graph: Graph, optimizer: Any) -> Graph:
    """Differentiate the first output with respect to every trainable variable it reads and
    add one ``update`` side effect per variable. The gradients are not outputs: the updates
    consume them. With ``optimizer.max_grad_norm`` set, gradients are clipped first.
    """
    loss = graph.outputs[0]
    params = trainable_variables(graph)
    if not params:
        raise GradientError(f"nothing to train: {loss.label()} depends on no trainable parameter")
    grad_nodes = gradients(loss, params)
    grads = [Tensor(g) for g in grad_nodes]
    max_norm = getattr(optimizer, "max_grad_norm", None)
    if max_norm is not None:
        with derived_from(loss, "grad"):
            grads = clip_by_global_norm(grads, float(max_norm))
    updates = []
    for p, g in zip(params, grads):
        with derived_from(p, "update"):
            from ..ops.common import declare

            updates.append(declare("update", [Tensor(p), g]).node)
    return Graph.build(graph.outputs, graph.output_names, tuple(graph.effects) + tuple(updates))
