"""Training-mode batch norm as two kernels instead of some forty steps."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild
from ..ops.registry import make_node


def fuse_batch_norm(graph: Graph) -> Graph:
    """Replace each training-mode ``batch_norm`` (its mode resolved, its running-statistic
    writes already effects) by ``batch_norm_train``: the same three results from one step,
    whose gradient is one ``batch_norm_train_grad`` step. Evaluation-mode ones stay, for the
    decomposition (one fused elementwise step).

    Before: ``tuple_get(batch_norm{training=True}(x, rm, rv, w, b), 0)``.
    After: ``tuple_get(batch_norm_train(x, w, b), 0)``. Run it after ``state_updates``
    and before ``decompose``.
    """

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op != "batch_norm" or node.attrs["training"] is not True:
            return None
        attrs = node.attrs
        affine = inputs[1 + 2 * attrs["stats"]:]
        new = make_node("batch_norm_train", [inputs[0], *affine],
                        {"eps": attrs["eps"], "weight": attrs["weight"], "bias": attrs["bias"]})
        return Node(op=new.op, inputs=new.inputs, attrs=new.attrs, type=new.type, name=node.name,
                    location=node.location, scope=node.scope, role=node.role, uid=new.uid)

    return rebuild(graph, rewrite)
