"""IR checker: every node's op is registered and its recorded type is what its rule gives."""

from __future__ import annotations

from ..errors import GraphError, ShapeError
from ..ir import Graph
from ..ops.registry import REGISTRY


def verify(graph: Graph) -> Graph:
    """Check ``graph`` and return it unchanged; raise GraphError on the first problem.

    Checks: ops are registered, inputs precede users in ``graph.nodes`` (no cycle, no
    input missing from the graph), and each node's type matches its op's shape rule.
    """
    seen: set[int] = set()
    for node in graph.nodes:
        opdef = REGISTRY.get(node.op)
        if opdef is None:
            raise GraphError(f"node {node.label()} uses unknown op {node.op!r}")
        for inp in node.inputs:
            if inp.uid not in seen:
                raise GraphError(
                    f"node {node.label()} ({node.op}) reads {inp.label()}, which is not earlier in the graph "
                    f"(a cycle or a dangling input)"
                )
        try:
            expected = opdef.infer(*[i.type for i in node.inputs], **node.attrs)
        except ShapeError as exc:
            raise GraphError(f"node {node.label()} ({node.op}) fails its shape rule: {exc}") from None
        if expected.dtype != node.type.dtype or len(expected.shape) != len(node.type.shape):
            raise GraphError(f"node {node.label()} ({node.op}) is typed {node.type}, its rule gives {expected}")
        seen.add(node.uid)
    for out in list(graph.outputs) + list(graph.effects):
        if out.uid not in seen:
            raise GraphError(f"output {out.label()} is not in the graph")
    return graph
