"""Scheduling: the order in which the plan's steps run."""

from __future__ import annotations

from ..ir import Graph, topological_order


def schedule(graph: Graph) -> Graph:
    """Order nodes depth-first from the outputs, with every effect last, in the graph's effect order.

    Effects (optimizer updates, running-statistic writes, the step counter) write variables
    that other steps read, so they run only after every pure step of the plan. Depth-first
    order keeps each value's producer close to its users, which shortens buffer lifetimes.
    The effects' inputs are visited last effect first: parameters are declared input side
    first, so the backward pass then reaches each layer's weight gradient as soon as the
    gradient of that layer's output exists (as PyTorch's autograd does), and the activations
    it reads die there instead of staying alive to the end of the backward pass.
    Must be the last pass: it fixes ``graph.nodes`` order, which the lowering follows.
    """
    pure_roots = list(graph.outputs) + [i for e in reversed(graph.effects) for i in e.inputs]
    pure_roots += [n for pair in graph.grads for n in pair]
    listed = {e.uid for e in graph.effects}
    pure = [n for n in topological_order(pure_roots) if n.uid not in listed]
    pure = _waits_last(pure)
    return Graph(graph.outputs, graph.output_names, graph.effects, tuple(pure) + graph.effects, graph.grads)


def _waits_last(order: list) -> list:
    """Every ``allreduce_wait`` and what depends on it after everything else (in the same
    relative order): a data-parallel plan starts each gradient bucket's sum as soon as the
    bucket is complete and waits for the sums only once the backward pass is done."""
    after: set[int] = set()
    for node in order:
        if node.op == "allreduce_wait" or any(i.uid in after for i in node.inputs):
            after.add(node.uid)
    if not after:
        return order
    return [n for n in order if n.uid not in after] + [n for n in order if n.uid in after]
