"""State writes as effects: the running statistics that ops such as batch_norm own."""

from __future__ import annotations

from ..ir import Graph
from ..ops import assign
from ..ops.registry import derived_from, get_op
from ..ops.tuples import tuple_get
from ..tensor import Tensor


def state_updates(graph: Graph) -> Graph:
    """Append one ``assign`` effect (kind ``running_stat``) per variable an op's state rule writes.

    Before: ``y = tuple_get(batch_norm(x, rm, rv, ...), 0)``, no effects. After: the same,
    with effects ``assign(rm, rm * 0.9 + mean * 0.1)`` and ``assign(rv, ...)``, in graph
    order. A layer called twice in one step (a GAN's discriminator on real and on fake
    batches) updates its state once per call, in call order, as PyTorch does: the second
    call's rule reads the first's new value, and one effect writes the result
    (``rm <- (rm * 0.9 + mean1 * 0.1) * 0.9 + mean2 * 0.1``). Run it before ``decompose``,
    which still sees the composite ops that own state.
    """
    latest: dict[int, Tensor] = {}  # variable id -> the value written so far this run
    targets: dict[int, Tensor] = {}  # variable id -> the variable, in the order first written
    for node in graph.nodes:
        rule = get_op(node.op).state_updates
        if rule is None:
            continue
        with derived_from(node, "forward"):
            outs = tuple(tuple_get(Tensor(node), i) for i in range(len(node.types))) if len(node.types) > 1 \
                else (Tensor(node),)
            ins = tuple(latest.get(i.attrs["var"].id, Tensor(i)) if i.op == "variable" else Tensor(i)
                        for i in node.inputs)
            for target, value in rule(outs, ins, **node.attrs):
                at = next(k for k, t in enumerate(ins) if t is target)
                var = node.inputs[at].attrs["var"]
                targets.setdefault(var.id, Tensor(node.inputs[at]))
                latest[var.id] = value
    if not latest:
        return graph
    effects = list(graph.effects)
    for var_id, target in targets.items():
        with derived_from(latest[var_id].node, "forward"):
            effects.append(assign(target, latest[var_id], kind="running_stat").node)
    return Graph.build(graph.outputs, graph.output_names, effects, graph.grads)
