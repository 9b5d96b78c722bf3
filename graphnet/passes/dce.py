"""Dead-code elimination: keep only what the outputs and side effects need."""

from __future__ import annotations

from ..ir import Graph


def dce(graph: Graph) -> Graph:
    """Drop every node that no output and no side effect (update, assignment) reaches.

    Rewrites leave orphans behind (a node merged by CSE, a folded subgraph); this removes them.
    """
    return Graph.build(graph.outputs, graph.output_names, graph.effects)
