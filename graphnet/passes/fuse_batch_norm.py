"""Training-mode batch norm as two kernels instead of some forty steps."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild
from ..ops.registry import make_node


def fuse_batch_norm(graph: Graph) -> Graph:
    """Replace each training-mode ``batch_norm`` (its mode resolved) by ``batch_norm_train``:
    the same results from one step (plus the unbiased variance, which its running-statistic
    updates read), whose gradient is one ``batch_norm_train_grad`` step. A ReLU that alone
    reads the normalised output is folded in (``relu=True``: the kernel applies it, and the
    gradient step masks by the output), saving a pass each way. Evaluation-mode ones stay,
    for folding or the decomposition (one fused elementwise step).

    Before: ``relu(tuple_get(batch_norm{training=True}(x, rm, rv, w, b), 0))``.
    After: ``tuple_get(batch_norm_train{relu=True}(x, rm, rv, w, b), 0)``. Run it after
    ``resolve_modes`` and before ``state_updates`` (which asks the new op for its state writes).
    """
    users = graph.users()
    kept = {n.uid for n in graph.outputs} | {n.uid for n in graph.effects} | {
        n.uid for pair in graph.grads for n in pair}

    def relu_reader(node: Node) -> Node | None:
        """The ReLU that alone reads ``node``'s normalised output, if any."""
        outputs = [u for u in users[node.uid] if u.op == "tuple_get" and u.attrs["index"] == 0]
        if len(outputs) != 1 or outputs[0].uid in kept:
            return None
        readers = users[outputs[0].uid]
        return readers[0] if len(readers) == 1 and readers[0].op == "relu" else None

    folded: set[int] = set()  # uids of ReLUs folded into their batch norm

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.uid in folded:
            return inputs[0]  # the batch norm's output, already rectified
        if node.op != "batch_norm" or node.attrs["training"] is not True:
            return None
        attrs = dict(node.attrs)
        del attrs["training"]
        relu = relu_reader(node)
        attrs["relu"] = relu is not None
        if relu is not None:
            folded.add(relu.uid)
        new = make_node("batch_norm_train", list(inputs), attrs)
        return Node(op=new.op, inputs=new.inputs, attrs=new.attrs, type=new.type, name=node.name,
                    location=node.location, scope=node.scope, role=node.role, uid=new.uid)

    return rebuild(graph, rewrite)
