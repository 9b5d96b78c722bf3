"""Reverse-mode differentiation as a graph transformation.

From a scalar node, walk the graph backwards and declare gradient nodes with each op's
gradient rule (written with graphnet ops, so the result can be differentiated again).
A value read by several ops receives the sum of their contributions. A multi-output op
receives one gradient per result (None where no gradient flows); a composite op without
a rule of its own is differentiated through its decomposition.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .. import dtypes
from ..errors import GradientError
from ..ir import Graph, Node, TupleType, topological_order
from ..ops import broadcast_like, stop_gradient, sum as reduce_sum
from ..modes import ModeSwitch
from ..ops.common import declare
from ..ops.registry import derived_from, get_op, user_location
from ..ops.tuples import results, tuple_get
from ..ops.vjp import split_attrs
from ..tensor import Tensor, constant


def _is_float(node: Node) -> bool:
    return any(dtypes.is_float(t.dtype) for t in node.types)


def _on_path(order: list[Node], wrt: Sequence[Node]) -> set[int]:
    """uids of float nodes that depend on some node in ``wrt`` (``order`` is topological)."""
    live = {w.uid for w in wrt}
    for node in order:
        if node.uid not in live and _is_float(node) and any(i.uid in live for i in node.inputs):
            live.add(node.uid)
    return live


def expand_vjp(values: tuple[Tensor, ...], attrs: dict[str, Any]) -> Tensor | tuple[Tensor, ...]:
    """A ``composite_vjp`` node's value: d <g, f(x)> / dx through f's decomposition, ``g`` held
    constant (it may itself depend on ``x``, through later uses of f's result)."""
    name, wanted, has_g, inner = split_attrs(attrs)
    ins, gs = values[:len(wanted)], iter(values[len(wanted):])
    outs = get_op(name).decompose(*ins, **inner)
    outs = outs if isinstance(outs, tuple) else (outs,)
    total = None
    for out, h in zip(outs, has_g):
        if h:
            term = reduce_sum(stop_gradient(next(gs)) * out)
            total = term if total is None else total + term
    grads = [Tensor(g) for g in gradients(total.node, [i.node for i, w in zip(ins, wanted) if w])]
    return grads[0] if len(grads) == 1 else tuple(grads)


def _composite_vjp(gs: tuple[Tensor | None, ...], node: Node, live_inputs: list[bool]) -> list[Any]:
    """Input gradients of a composite op: expanded now, or (when its mode is a module's switch
    that only gn.compile resolves) as one ``composite_vjp`` node the decompose pass expands."""
    ins = tuple(Tensor(i) for i in node.inputs)
    has_g = tuple(g is not None for g in gs)
    attrs = {**node.attrs, "vjp_of": node.op, "wanted": tuple(live_inputs), "has_g": has_g}
    if any(isinstance(v, ModeSwitch) for v in node.attrs.values()):
        vjp = declare("composite_vjp", list(ins) + [g for g in gs if g is not None], attrs)
        grads = iter(results(vjp) if sum(live_inputs) > 1 else (vjp,))
    else:
        expanded = expand_vjp(ins + tuple(g for g in gs if g is not None), attrs)
        grads = iter(expanded if isinstance(expanded, tuple) else (expanded,))
    return [next(grads) if live else None for live in live_inputs]


def gradients(y: Node, wrt: Sequence[Node]) -> list[Node]:
    """Nodes computing d y / d w for each w in ``wrt`` (``y`` must be a float scalar)."""
    if y.type.shape != ():
        raise GradientError(
            f"gradients need a scalar output, got {y.label()} of shape {y.type.shape} "
            f"(declared at {y.location}); reduce it first, e.g. with gn.sum or gn.mean"
        )
    if not dtypes.is_float(y.dtype):
        raise GradientError(f"gradients need a floating output, got {y.label()} of dtype {y.dtype} "
                            f"(declared at {y.location}; differentiated at {user_location()})")
    for w in wrt:
        if not dtypes.is_float(w.dtype):
            raise GradientError(
                f"cannot differentiate with respect to {w.label()} (declared at {w.location}; differentiated "
                f"at {user_location()}): its dtype {w.dtype} is not floating (gradients do not flow through "
                f"integer tensors; cast it first if it stands for real numbers)"
            )
    return vjp([y], [constant(1.0, y.dtype).node], wrt)


def vjp(outputs: Sequence[Node], cotangents: Sequence[Node], wrt: Sequence[Node]) -> list[Node]:
    """Nodes computing the vector-Jacobian product: sum over i of <cotangents[i], d outputs[i] / d w>
    for each w in ``wrt`` (each cotangent shaped like its output; zeros where w is not reached).
    What ``gradients`` is with one scalar output and a cotangent of 1; loop bodies' backward
    steps seed every output with its own cotangent this way."""
    order = topological_order(list(outputs))
    live = _on_path(order, wrt)
    # uid -> result index -> contributions (index 0 for single-result nodes)
    contributions: dict[int, dict[int, list[Tensor]]] = {}
    for out, ct in zip(outputs, cotangents):
        contributions.setdefault(out.uid, {}).setdefault(0, []).append(Tensor(ct))
    grads: dict[int, Tensor] = {}
    for node in reversed(order):
        parts = contributions.pop(node.uid, None)
        if not parts or node.uid not in live:
            continue
        with derived_from(node, "grad"):
            summed: dict[int, Tensor] = {}
            for index, terms in parts.items():
                g = terms[0]
                for extra in terms[1:]:
                    g = g + extra
                summed[index] = g
            if node.op == "tuple_get":  # hand the gradient to the result it reads
                parent = node.inputs[0]
                contributions.setdefault(parent.uid, {}).setdefault(node.attrs["index"], []).append(summed[0])
                continue
            multi = isinstance(node.type, TupleType)  # (a loop with one result is still read through tuple_get)
            if not multi:
                grads[node.uid] = summed[0]
            live_inputs = [i.uid in live for i in node.inputs]
            if not any(live_inputs):
                continue
            opdef = get_op(node.op)
            gs = tuple(summed.get(i) for i in range(len(node.types)))
            if opdef.grad is not None:
                if multi:
                    outs = tuple(tuple_get(Tensor(node), i) for i in range(len(node.types)))
                    input_grads = opdef.grad(gs, outs, tuple(Tensor(i) for i in node.inputs), **node.attrs)
                else:
                    input_grads = opdef.grad(gs[0], Tensor(node), tuple(Tensor(i) for i in node.inputs),
                                             **node.attrs)
            elif opdef.decompose is not None:
                input_grads = _composite_vjp(gs, node, live_inputs)
            else:
                raise GradientError(
                    f"op {node.op!r} (declared at {node.location}) has no gradient rule, "
                    f"but a requested gradient flows through it"
                )
        for inp, wanted, gi in zip(node.inputs, live_inputs, input_grads):
            if wanted and gi is not None:
                contributions.setdefault(inp.uid, {}).setdefault(0, []).append(gi)
    result = []
    for w in wrt:
        if w.uid in grads:
            result.append(grads[w.uid].node)
        else:  # not connected to y: the gradient is zero, as in JAX
            with derived_from(w, "grad"):
                result.append(broadcast_like(constant(0.0, w.dtype), Tensor(w)).node)
    return result


def trainable_variables(graph: Graph, select: Callable[[Any], bool] | None = None) -> list[Node]:
    """The variable nodes the first output depends on that are parameters not frozen
    (``requires_grad``) and, with ``select``, chosen by it; in graph order, one per Variable."""
    seen: set[int] = set()
    result = []
    for n in topological_order([graph.outputs[0]]):
        if n.op != "variable":
            continue
        var = n.attrs["var"]
        if var.trainable and var.requires_grad and (select is None or select(var)) and var.id not in seen:
            seen.add(n.attrs["var"].id)
            result.append(n)
    return result


def autodiff(graph: Graph, wrt: Sequence[Node] | None = None, select: Callable[[Any], bool] | None = None) -> Graph:
    """Attach d(first output)/d(w) as ``graph.grads`` for each ``w`` (by default every
    parameter the first output reads that is not frozen and that ``select`` chooses). The
    gradients are not outputs: the clipping and optimizer-update passes read them from
    ``graph.grads``.
    """
    params = trainable_variables(graph, select) if wrt is None else list(wrt)
    if not params:
        loss = graph.outputs[0]
        raise GradientError(
            f"nothing to train: {loss.label()} (declared at {loss.location}; compiled at {user_location()}) "
            f"depends on no trainable parameter: every parameter it reads is frozen (requires_grad_(False)), "
            f"in none of the optimizer's parameter groups, or it reads none")
    grads = gradients(graph.outputs[0], params)
    return Graph.build(graph.outputs, graph.output_names, graph.effects, tuple(zip(params, grads)))
