"""Reverse-mode differentiation as a graph transformation.

From a scalar node, walk the graph backwards and declare gradient nodes with each op's
gradient rule (written with graphnet ops, so the result can be differentiated again).
A value read by several ops receives the sum of their contributions.
"""

from __future__ import annotations

from typing import Sequence

from .. import dtypes
from ..errors import GradientError
from ..ir import Graph, Node, topological_order
from ..ops.registry import derived_from, get_op
from ..tensor import Tensor, constant


def _on_path(order: list[Node], wrt: Sequence[Node]) -> set[int]:
    """uids of float nodes that depend on some node in ``wrt`` (``order`` is topological)."""
    live = {w.uid for w in wrt}
    for node in order:
        if node.uid not in live and dtypes.is_float(node.dtype) and any(i.uid in live for i in node.inputs):
            live.add(node.uid)
    return live


def gradients(y: Node, wrt: Sequence[Node]) -> list[Node]:
    """Nodes computing d y / d w for each w in ``wrt`` (``y`` must be a float scalar)."""
    if y.type.shape != ():
        raise GradientError(
            f"gradients need a scalar output, got {y.label()} of shape {y.type.shape} "
            f"(declared at {y.location}); reduce it first, e.g. with gn.sum or gn.mean"
        )
    if not dtypes.is_float(y.dtype):
        raise GradientError(f"gradients need a floating output, got {y.label()} of dtype {y.dtype}")
    for w in wrt:
        if not dtypes.is_float(w.dtype):
            raise GradientError(
                f"cannot differentiate with respect to {w.label()}: its dtype {w.dtype} is not floating "
                f"(gradients do not flow through integer tensors)"
            )
    order = topological_order([y])
    live = _on_path(order, wrt)
    contributions: dict[int, list[Tensor]] = {y.uid: [Tensor(constant(1.0, y.dtype).node)]}
    grads: dict[int, Tensor] = {}
    for node in reversed(order):
        parts = contributions.pop(node.uid, None)
        if not parts or node.uid not in live:
            continue
        with derived_from(node, "grad"):
            g = parts[0]
            for extra in parts[1:]:
                g = g + extra
            grads[node.uid] = g
            live_inputs = [i.uid in live for i in node.inputs]
            if not any(live_inputs):
                continue
            opdef = get_op(node.op)
            if opdef.grad is None:
                raise GradientError(
                    f"op {node.op!r} (declared at {node.location}) has no gradient rule, "
                    f"but a requested gradient flows through it"
                )
            input_grads = opdef.grad(g, Tensor(node), tuple(Tensor(i) for i in node.inputs), **node.attrs)
        for inp, wanted, gi in zip(node.inputs, live_inputs, input_grads):
            if wanted and gi is not None:
                contributions.setdefault(inp.uid, []).append(gi)
    result = []
    for w in wrt:
        if w.uid in grads:
            result.append(grads[w.uid].node)
        else:  # not connected to y: the gradient is zero, as in JAX
            with derived_from(w, "grad"):
                from ..ops import broadcast_like

                result.append(broadcast_like(constant(0.0, w.dtype), Tensor(w)).node)
    return result


def autodiff(graph: Graph, wrt: Sequence[Node]) -> Graph:
    """Append d(first output)/d(w) for each ``w`` as outputs named ``grad:<name>``.

    Before: outputs (loss, ...). After: outputs (loss, ..., grad:w1, grad:w2, ...).
    """
    grads = gradients(graph.outputs[0], wrt)
    names = tuple(graph.output_names) + tuple(f"grad:{w.label()}" for w in wrt)
    return Graph.build(list(graph.outputs) + grads, names, graph.effects)
