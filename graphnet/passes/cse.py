"""Common-subexpression elimination: one node for each distinct (op, inputs, attributes)."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild, with_inputs
from ..ops.registry import get_op

_NEVER_MERGED = frozenset({"placeholder", "variable"})


def cse(graph: Graph) -> Graph:
    """Merge nodes with the same op, the same (already merged) inputs and equal attributes.

    Random ops (dropout masks), collectives (each one a message), side effects, placeholders and variables are never merged;
    constants merge by value. Before: two ``exp(x)`` nodes. After: one, read by both users.
    """
    seen: dict[tuple, Node] = {}

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        opdef = get_op(node.op)
        if node.op in _NEVER_MERGED or opdef.random or opdef.effect or opdef.category == "collective":
            return None
        key = (node.op, tuple(i.uid for i in inputs), node.attrs, node.type)
        if key not in seen:
            seen[key] = with_inputs(node, inputs)
        return seen[key]

    return rebuild(graph, rewrite)
