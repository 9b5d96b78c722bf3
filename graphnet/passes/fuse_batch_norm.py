"""Training-mode batch norm as two kernels instead of some forty steps."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild
from ..ops.registry import make_node


def fuse_batch_norm(graph: Graph) -> Graph:
    """Replace each training-mode ``batch_norm`` (its mode resolved) by ``batch_norm_train``:
    the same results from one step (plus the unbiased variance, which its running-statistic
    updates read), whose gradient is one ``batch_norm_train_grad`` step. Evaluation-mode
    ones stay, for folding or the decomposition (one fused elementwise step).

    Before: ``tuple_get(batch_norm{training=True}(x, rm, rv, w, b), 0)``.
    After: ``tuple_get(batch_norm_train(x, rm, rv, w, b), 0)``. Run it after ``resolve_modes``
    and before ``state_updates`` (which asks the new op for its state writes).
    """

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op != "batch_norm" or node.attrs["training"] is not True:
            return None
        attrs = dict(node.attrs)
        del attrs["training"]
        new = make_node("batch_norm_train", list(inputs), attrs)
        return Node(op=new.op, inputs=new.inputs, attrs=new.attrs, type=new.type, name=node.name,
                    location=node.location, scope=node.scope, role=node.role, uid=new.uid)

    return rebuild(graph, rewrite)
