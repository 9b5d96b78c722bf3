"""State writes as effects: the running statistics that ops such as batch_norm own."""

from __future__ import annotations

from ..ir import Graph
from ..ops import assign
from ..ops.registry import derived_from, get_op
from ..ops.tuples import tuple_get
from ..tensor import Tensor


def state_updates(graph: Graph) -> Graph:
    """Append one ``assign`` effect (kind ``running_stat``) per state write an op declares.

    Before: ``y = tuple_get(batch_norm(x, rm, rv, ...), 0)``, no effects. After: the same,
    with effects ``assign(rm, rm * 0.9 + mean * 0.1)`` and ``assign(rv, ...)``, in graph
    order. Run it before ``decompose``, which still sees the composite ops that own state.
    """
    effects = list(graph.effects)
    for node in graph.nodes:
        rule = get_op(node.op).state_updates
        if rule is None:
            continue
        with derived_from(node, "forward"):
            outs = tuple(tuple_get(Tensor(node), i) for i in range(len(node.types))) if len(node.types) > 1 \
                else (Tensor(node),)
            for target, value in rule(outs, tuple(Tensor(i) for i in node.inputs), **node.attrs):
                effects.append(assign(target, value, kind="running_stat").node)
    if len(effects) == len(graph.effects):
        return graph
    return Graph.build(graph.outputs, graph.output_names, effects, graph.grads)
