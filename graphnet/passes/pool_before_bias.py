"""Max pooling moved ahead of a per-channel bias, so the bias is added to the pooled values."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild
from ..ops.registry import make_node


def _channel_bias(node: Node) -> tuple[Node, Node] | None:
    """(the activation, the bias) when ``node`` adds a (1, C, 1, 1) bias to an (N, C, H, W)
    activation of the same dtype; else None."""
    if node.op != "add" or len(node.inputs) != 2:
        return None
    for x, bias in (node.inputs, node.inputs[::-1]):
        shape = bias.type.shape
        if x.type.ndim == 4 and x.type.shape == node.type.shape and x.type.dtype == node.type.dtype \
                and bias.type.ndim == 4 and shape[0] == 1 and shape[2] == 1 and shape[3] == 1 \
                and shape[1] == x.type.shape[1] and bias.type.dtype == node.type.dtype:
            return x, bias
    return None


def pool_before_bias(graph: Graph) -> Graph:
    """Rewrite ``max_pool2d(x + b)`` as ``max_pool2d(x) + b`` for a per-channel bias ``b``
    (a convolution's): a window's maximum moves with a constant added to all of it, and
    rounding is monotonic, so the values are the same bit for bit, while the bias is added
    to (and its gradient summed over) the pooled activation, a quarter of the size for 2x2
    windows; the add then fuses with the activation function after the pool. Only where
    nothing else reads ``x + b``. (A maximum tied only after rounding may send its gradient
    to another element of the window, as any choice among equal maxima is.)

    Before: ``max_pool2d(add(conv2d(x, w), reshape(b)))``.
    After: ``add(max_pool2d(conv2d(x, w)), reshape(b))``. Run it before ``autodiff``, so that
    the gradient is built from the rewritten forward pass.
    """
    users = graph.users()
    outputs = {node.uid for node in graph.outputs}

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op != "max_pool2d" or len(users[node.inputs[0].uid]) != 1 or node.inputs[0].uid in outputs:
            return None
        found = _channel_bias(inputs[0])
        if found is None:
            return None
        x, bias = found
        pooled = make_node("max_pool2d", [x], dict(node.attrs))
        pooled = Node(op=pooled.op, inputs=pooled.inputs, attrs=pooled.attrs, type=pooled.type,
                      location=node.location, scope=node.scope, role=node.role, uid=pooled.uid)
        added = make_node("add", [pooled, bias])
        return Node(op=added.op, inputs=added.inputs, attrs=added.attrs, type=added.type, name=node.name,
                    location=inputs[0].location, scope=inputs[0].scope, role=inputs[0].role, uid=added.uid)

    return rebuild(graph, rewrite)
