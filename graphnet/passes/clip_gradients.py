"""Gradient clipping by global norm, between autodiff and the optimizer updates."""

from __future__ import annotations

from ..ir import Graph
from ..ops import maximum, sqrt, sum as reduce_sum
from ..ops.registry import derived_from
from ..ops.casting import scalar
from ..tensor import Tensor


def clip_gradients(graph: Graph, max_norm: Tensor) -> Graph:
    """Scale every gradient in ``graph.grads`` by min(1, max_norm / (global L2 norm + 1e-6)),
    as PyTorch's ``clip_grad_norm_``. ``max_norm`` is a float64 scalar tensor (the plan's
    ``max_grad_norm`` hyper variable, so changing it between runs takes effect).
    """
    if not graph.grads:
        return graph
    loss = graph.outputs[0]
    with derived_from(loss, "grad"):
        grads = [Tensor(g) for _, g in graph.grads]
        total = None
        for g in grads:
            sq = reduce_sum(g * g)
            total = sq if total is None else total + sq
        norm = sqrt(total)
        like = grads[0]
        scale = 1.0 / maximum(norm / scalar(max_norm, like) + scalar(1e-6 / max_norm, like), 1.0)
        clipped = [g * scale for g in grads]
    pairs = tuple((p, g.node) for (p, _), g in zip(graph.grads, clipped))
    return Graph.build(graph.outputs, graph.output_names, graph.effects, pairs)
