"""Gradients of slices that tile an axis, put together without full-size zeros: the sum of
``slice_grad``s of one value whose slices cover an axis exactly is one ``concat`` of their
gradients (the LSTM's four gates: one array, not four zero-padded ones and three additions)."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild, with_inputs
from ..ops.registry import derived_from
from ..ops.shape import concat
from ..tensor import Tensor


def _leaves(node: Node, users: dict[int, list[Node]], top: bool = True) -> list[Node] | None:
    """The terms of a chain of additions read only inside it (None: not such a chain)."""
    if node.op != "add" or (not top and len(users[node.uid]) != 1):
        return [node]
    found: list[Node] = []
    for i in node.inputs:
        more = _leaves(i, users, top=False) if i.op == "add" and len(users[i.uid]) == 1 else [i]
        if more is None:
            return None
        found += more
    return found


def _tiling(terms: list[Node]) -> tuple[int, list[Node]] | None:
    """(axis, the terms ordered along it) when ``terms`` are slice gradients into one shape whose
    slices are whole but for one axis, where they cover [0, size) exactly in steps of 1."""
    if len(terms) < 2 or any(t.op != "slice_grad" for t in terms):
        return None
    like = terms[0].type
    if any(t.type != like for t in terms) or not all(isinstance(d, int) for d in like.shape[1:]):
        return None
    keys = [t.attrs["key"] for t in terms]
    if any(len(k) != len(like.shape) for k in keys):
        return None
    partial = {a for k in keys for a, (start, stop, step) in enumerate(k) if (start, stop, step) != (None, None, None)}
    if len(partial) != 1:
        return None
    axis = partial.pop()
    size = like.shape[axis]
    if not isinstance(size, int):
        return None
    spans = []
    for term, key in zip(terms, keys):
        start, stop, step = key[axis]
        if step not in (None, 1) or start is None or stop is None or start < 0 or stop < 0:
            return None
        spans.append((start, stop, term))
    spans.sort(key=lambda s: s[0])
    position = 0
    for start, stop, _ in spans:
        if start != position or stop <= start:
            return None
        position = stop
    return (axis, [t for _, _, t in spans]) if position == size else None


def merge_slice_grads(graph: Graph) -> Graph:
    """Replace each sum of slice gradients that tile one axis of a value by the concatenation of
    the sliced gradients, in order along that axis.

    Before: ``slice_grad(gi, x){[:, 0:H]} + slice_grad(gf, x){[:, H:2H]} + ...``.
    After: ``concat([gi, gf, ...], axis=1)``."""
    users = graph.users()
    if not any(n.op == "slice_grad" for n in graph.nodes):
        return graph
    new: dict[int, Node] = {}

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        result = None
        if node.op == "add" and not any(u.op == "add" and len(users[node.uid]) == 1 for u in users[node.uid]):
            terms = _leaves(node, users)
            found = _tiling(terms) if terms else None
            if found is not None:
                axis, ordered = found
                with derived_from(node, node.role):
                    joined = concat([Tensor(new[t.inputs[0].uid]) for t in ordered], axis)
                if joined.node.type == node.type:
                    result = joined.node
        if result is None:
            result = with_inputs(node, inputs)
        new[node.uid] = result
        return result

    return rebuild(graph, rewrite)
