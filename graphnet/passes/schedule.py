"""Scheduling: the order in which the plan's steps run."""

from __future__ import annotations

from ..ir import Graph, topological_order
from ..ops.registry import get_op


def schedule(graph: Graph) -> Graph:
    """Order nodes depth-first from the outputs, with every side effect last.

    Side effects (optimizer updates, running-statistic assignments) write to variables
    that other steps read, so they run only after every pure step of the plan. Depth-first
    order keeps each value's producer close to its users, which shortens buffer lifetimes.
    Must be the last pass: it fixes ``graph.nodes`` order, which the lowering follows.
    """
    pure_roots = list(graph.outputs) + [i for e in graph.effects for i in e.inputs]
    pure = [n for n in topological_order(pure_roots) if not get_op(n.op).effect]
    effects = [n for n in graph.effects if n not in pure]
    return type(graph)(graph.outputs, graph.output_names, graph.effects, tuple(pure + effects))
