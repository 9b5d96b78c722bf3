"""Max pooling that keeps its arg-max for the backward pass, instead of searching again."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild
from ..ops.registry import make_node


def _like(new: Node, old: Node, name: str | None = None) -> Node:
    return Node(op=new.op, inputs=new.inputs, attrs=new.attrs, type=new.type, name=name, location=old.location,
                scope=old.scope, role=old.role, uid=new.uid)


def _key(node: Node, x: Node) -> tuple:
    return x.uid, tuple(sorted(node.attrs.items()))


def save_pool_argmax(graph: Graph) -> Graph:
    """Pair each ``max_pool2d`` with the ``max_pool2d_grad`` of the same input and attributes:
    the pool becomes ``max_pool2d_saving`` (the same output, plus where each window's
    maximum was, as two small uint8 arrays) and the gradient ``max_pool2d_grad_saved``,
    which routes the gradient by those indices and reads ``x`` only for its shape (so ``x``
    may die after the forward pass). Unpaired pools (inference) are left alone.

    Before: ``y = max_pool2d(x)``, ``dx = max_pool2d_grad(g, x)``. After:
    ``s = max_pool2d_saving(x)``, ``y = tuple_get(s, 0)``,
    ``dx = max_pool2d_grad_saved(g, tuple_get(s, 1), tuple_get(s, 2), x)``. Run it after autodiff.
    """
    grads = {_key(n, n.inputs[1]) for n in graph.nodes if n.op == "max_pool2d_grad"}
    if not grads:
        return graph
    saving: dict[tuple, Node] = {}  # (input uid, attrs) -> the max_pool2d_saving node

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op == "max_pool2d" and _key(node, node.inputs[0]) in grads:
            pool = _like(make_node("max_pool2d_saving", list(inputs), dict(node.attrs)), node)
            saving[_key(node, node.inputs[0])] = pool
            return _like(make_node("tuple_get", [pool], {"index": 0}), node, node.name)
        if node.op == "max_pool2d_grad" and _key(node, node.inputs[1]) in saving:
            pool = saving[_key(node, node.inputs[1])]
            args = [make_node("tuple_get", [pool], {"index": 1}), make_node("tuple_get", [pool], {"index": 2})]
            new = make_node("max_pool2d_grad_saved", [inputs[0], *args, inputs[1]], dict(node.attrs))
            return _like(new, node, node.name)
        return None

    return rebuild(graph, rewrite)
