"""Softmax cross-entropy as one step, and its gradient as one more."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild
from ..ops.registry import make_node


def fuse_cross_entropy(graph: Graph) -> Graph:
    """Replace each ``cross_entropy`` by ``tuple_get(softmax_cross_entropy(...), 0)``: the loss
    from one step that also keeps the probabilities, so the gradient is
    ``(softmax - onehot)`` scaled, in one ``softmax_cross_entropy_grad`` step, instead of
    log_softmax, pick, the reduction and their dozen gradient steps.

    Before: ``cross_entropy{reduction=mean}(logits, labels)``. After:
    ``tuple_get(softmax_cross_entropy{reduction=mean}(logits, labels), 0)``. Run it before
    ``decompose`` (which would expand cross_entropy into its pieces).
    """

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op != "cross_entropy":
            return None
        fused = make_node("softmax_cross_entropy", list(inputs), dict(node.attrs))
        fused = Node(op=fused.op, inputs=fused.inputs, attrs=fused.attrs, type=fused.type, location=node.location,
                     scope=node.scope, role=node.role, uid=fused.uid)
        loss = make_node("tuple_get", [fused], {"index": 0})
        return Node(op=loss.op, inputs=loss.inputs, attrs=loss.attrs, type=loss.type, name=node.name,
                    location=node.location, scope=node.scope, role=node.role, uid=loss.uid)

    return rebuild(graph, rewrite)
