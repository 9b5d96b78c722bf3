"""Dead-code elimination: keep only what the outputs, effects and gradients need."""

from __future__ import annotations

from ..ir import Graph


def dce(graph: Graph) -> Graph:
    """Drop every node that no output, effect (update, assignment) or gradient reaches.

    Rewrites leave orphans behind (a node merged by CSE, a folded subgraph); this removes them.
    """
    return Graph.build(graph.outputs, graph.output_names, graph.effects, graph.grads)
