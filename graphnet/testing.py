"""Helpers for testing passes: compare graphs by structure, as TVM's and PyTensor's tests do.

    before = gn.make_graph({"y": x * 1.0})
    expected = gn.make_graph({"y": x})
    assert_graph_equal(simplify(before), expected)

Two graphs are equal when their outputs (by name), effects (in order) and gradients are
computed by the same ops with equal attributes and types, from inputs that are equal in
the same way. Leaves match when they are the same placeholder (name, type), the same
Variable, or constants of equal value. Node identities, uids, locations and roles are
ignored.
"""

from __future__ import annotations

from .ir import Graph, Node


class GraphMismatch(AssertionError):
    """Two graphs differ; the message names the first difference found."""


def _leaf_key(node: Node) -> object:
    if node.op == "variable":
        return ("variable", id(node.attrs["var"]))
    return (node.op, node.attrs, node.type)


def _match(a: Node, b: Node, pairs: dict[int, int], path: str) -> None:
    if pairs.get(a.uid) == b.uid:
        return
    if a.uid in pairs:
        raise GraphMismatch(f"{path}: {a.op} is shared in one graph but not in the other")
    if a.op != b.op:
        raise GraphMismatch(f"{path}: {a.op} vs {b.op}")
    if a.type != b.type:
        raise GraphMismatch(f"{path} ({a.op}): type {a.type} vs {b.type}")
    if not a.inputs and _leaf_key(a) != _leaf_key(b):
        raise GraphMismatch(f"{path}: leaves differ: {a!r} vs {b!r}")
    if a.attrs != b.attrs:
        raise GraphMismatch(f"{path} ({a.op}): attributes {a.attrs!r} vs {b.attrs!r}")
    if len(a.inputs) != len(b.inputs):
        raise GraphMismatch(f"{path} ({a.op}): {len(a.inputs)} vs {len(b.inputs)} inputs")
    pairs[a.uid] = b.uid
    for i, (x, y) in enumerate(zip(a.inputs, b.inputs)):
        _match(x, y, pairs, f"{path}.{a.op}[{i}]")


def assert_graph_equal(actual: Graph, expected: Graph) -> None:
    """Raise GraphMismatch (an AssertionError) naming the first structural difference."""
    if actual.output_names != expected.output_names:
        raise GraphMismatch(f"outputs {list(actual.output_names)} vs {list(expected.output_names)}")
    if len(actual.effects) != len(expected.effects) or len(actual.grads) != len(expected.grads):
        raise GraphMismatch(f"{len(actual.effects)} effects and {len(actual.grads)} gradients vs "
                            f"{len(expected.effects)} and {len(expected.grads)}")
    pairs: dict[int, int] = {}
    for name, a, b in zip(actual.output_names, actual.outputs, expected.outputs):
        _match(a, b, pairs, name)
    for i, (a, b) in enumerate(zip(actual.effects, expected.effects)):
        _match(a, b, pairs, f"effect {i}")
    for i, ((pa, ga), (pb, gb)) in enumerate(zip(actual.grads, expected.grads)):
        _match(pa, pb, pairs, f"grad {i} parameter")
        _match(ga, gb, pairs, f"grad {i}")


def graph_equal(actual: Graph, expected: Graph) -> bool:
    """True when ``assert_graph_equal`` finds no difference."""
    try:
        assert_graph_equal(actual, expected)
    except GraphMismatch:
        return False
    return True
