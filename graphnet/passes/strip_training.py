"""Inference export: a training graph without its gradients, updates and state writes."""

from __future__ import annotations

from typing import Sequence

from ..errors import GraphError
from ..ir import Graph, topological_order


def strip_training(graph: Graph, outputs: Sequence[str] | None = None) -> Graph:
    """Keep only the computation of ``outputs`` (all of the graph's outputs by default).

    Effects (optimizer updates, running-statistic writes, the step counter) and gradients are
    dropped, and with them every node that only they read. Run ``schedule`` afterwards. Raises
    GraphError for an output name the graph does not have.
    """
    names = list(graph.output_names) if outputs is None else list(outputs)
    by_name = dict(zip(graph.output_names, graph.outputs))
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise GraphError(f"no output(s) {unknown} to keep; the graph's outputs are {list(graph.output_names)}")
    kept = tuple(by_name[n] for n in names)
    return Graph(kept, tuple(names), (), tuple(topological_order(kept)))
