"""Composite ops (batch_norm, cross_entropy) expanded into the primitive ops they are made of."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild
from ..ops.registry import derived_from, get_op
from ..ops.tuples import make_tuple_node
from ..tensor import Tensor
from .autodiff import expand_vjp


def decompose(graph: Graph) -> Graph:
    """Replace every composite node by its decomposition (a multi-output one by a
    ``make_tuple`` of its results, which the ``tuple_get`` nodes reading it see through).

    Before: ``y = tuple_get(batch_norm(x, rm, rv), 0)``. After: ``y = (x - mean(x)) / sqrt(...)``.
    """

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op == "tuple_get" and inputs[0].op == "make_tuple":
            return inputs[0].inputs[node.attrs["index"]]
        opdef = get_op(node.op)
        if node.op == "composite_vjp":
            with derived_from(node, node.role):
                outs = expand_vjp(tuple(Tensor(i) for i in inputs), dict(node.attrs))
        elif opdef.decompose is None:
            return None
        else:
            with derived_from(node, node.role):
                outs = opdef.decompose(*[Tensor(i) for i in inputs], **node.attrs)
        if isinstance(outs, tuple):
            return make_tuple_node([o.node for o in outs])
        return outs.node

    return rebuild(graph, rewrite)
