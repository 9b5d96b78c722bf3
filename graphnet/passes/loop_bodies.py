"""Loop bodies (``scan``) through the passes: the body-level passes applied inside bodies, the
backward body built by autodiff, and the forward scan merged with the history scan its
gradient reads."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from ..ir import Attrs, Graph, Node, next_uid, rebuild, with_inputs
from ..ops.control import BODY_BUILDERS, Body
from ..ops.registry import get_op
from ..tensor import Tensor, placeholder
from .autodiff import vjp


def map_bodies(graph: Graph, fn: Callable[[Graph], Graph]) -> Graph:
    """``graph`` with ``fn`` applied to every scan body in it (bodies inside bodies first)."""
    if not any(isinstance(v, Body) for n in graph.nodes for v in n.attrs.values()):
        return graph

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        bodies = {k: v for k, v in node.attrs.items() if isinstance(v, Body)}
        if not bodies:
            return None
        changed = {}
        for key, body in bodies.items():
            new_graph = fn(map_bodies(body.graph, fn))
            if new_graph is not body.graph:
                changed[key] = body.with_graph(new_graph)
        if not changed:
            return None
        return replace(node, inputs=inputs, attrs=Attrs({**node.attrs, **changed}), uid=next_uid())

    return rebuild(graph, rewrite)


def build_vjp_body(body: Body, carry_f: tuple[int, ...], xs_f: tuple[int, ...],
                   consts_f: tuple[int, ...]) -> Graph:
    """The graph of ``graphnet.ops.control.vjp_body(body, ...)``: one step of ``body``
    recomputed from the carry that entered it, and its vector-Jacobian product."""
    nc, nx, ny = body.n_carry, body.n_xs, body.n_ys
    types = body.arg_types
    count = iter(range(10 ** 9))

    def arg(t: Any) -> Node:
        return placeholder(f"arg{next(count)}", t.shape, t.dtype).node

    ct_carry = [arg(types[i]) for i in carry_f]
    sums = [arg(types[i]) for i in consts_f]
    x_t = [arg(t) for t in types[nc:nc + nx]]
    c_t = [arg(t) for t in types[:nc]]
    ct_y = [arg(t) for t in body.out_types[nc:]]
    consts = [arg(t) for t in types[nc + nx:]]
    forward_args = c_t + x_t + consts
    mapping: dict[int, Node] = {}
    for node in body.graph.nodes:
        if node.op == "placeholder":
            mapping[node.uid] = forward_args[int(node.attrs["name"][3:])]
        else:
            mapping[node.uid] = with_inputs(node, tuple(mapping[i.uid] for i in node.inputs))
    outs = [mapping[o.uid] for o in body.graph.outputs]
    seeded = [(outs[i], ct) for i, ct in zip(carry_f, ct_carry)]
    seeded += [(outs[nc + j], ct_y[j]) for j in range(ny) if outs[nc + j].type.dtype.startswith("float")]
    wrt = [c_t[i] for i in carry_f] + [consts[i - nc - nx] for i in consts_f] + [x_t[i - nc] for i in xs_f]
    grads = vjp([o for o, _ in seeded], [ct for _, ct in seeded], wrt)
    k = len(carry_f)
    outputs = grads[:k] + [(Tensor(s) + Tensor(g)).node for s, g in zip(sums, grads[k:k + len(consts_f)])] \
        + grads[k + len(consts_f):]
    return Graph.build(outputs, [f"out{i}" for i in range(len(outputs))])


BODY_BUILDERS["vjp"] = build_vjp_body


def build_branch_vjp_body(body: Body, wanted: tuple[int, ...]) -> Graph:
    """The graph of ``graphnet.ops.control.branch_vjp_body``: (the body's arguments, its
    outputs' cotangents) -> the ``wanted`` arguments' gradients."""
    args = [placeholder(f"arg{i}", t.shape, t.dtype).node for i, t in enumerate(body.arg_types)]
    cts = [placeholder(f"arg{len(args) + j}", t.shape, t.dtype).node for j, t in enumerate(body.out_types)]
    mapping: dict[int, Node] = {}
    for node in body.graph.nodes:
        if node.op == "placeholder":
            mapping[node.uid] = args[int(node.attrs["name"][3:])]
        else:
            mapping[node.uid] = with_inputs(node, tuple(mapping[i.uid] for i in node.inputs))
    outs = [mapping[o.uid] for o in body.graph.outputs]
    seeded = [(o, ct) for o, ct in zip(outs, cts) if o.type.dtype.startswith("float")]
    grads = vjp([o for o, _ in seeded], [ct for _, ct in seeded], [args[i] for i in wanted])
    return Graph.build(grads, [f"out{i}" for i in range(len(grads))])


BODY_BUILDERS["branch_vjp"] = build_branch_vjp_body


def merge_scans(graph: Graph) -> Graph:
    """One scan where a forward scan and its gradient's history scan (the same body, inputs
    and direction, also giving each step's carry) both run: the history scan's results serve
    both, so training runs the forward loop once.

    Before: ``scan{body}(c, xs, w)`` and ``scan{body+history}(c, xs, w)``. After: the second
    alone, read by the first one's readers."""
    def key(node: Node) -> tuple:
        return (node.attrs["body"].base.id, tuple(i.uid for i in node.inputs), node.attrs["reverse"],
                node.attrs["length"])

    wanted = {key(n) for n in graph.nodes if n.op == "scan" and n.attrs["body"].history}
    if not any(n.op == "scan" and not n.attrs["body"].history and key(n) in wanted for n in graph.nodes):
        return graph
    shared: dict[tuple, Node] = {}

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op != "scan" or key(node) not in wanted:
            return None
        k = key(node)
        if k not in shared:
            body = node.attrs["body"]
            if body.history:
                shared[k] = with_inputs(node, inputs)
            else:
                attrs = {**node.attrs, "body": body.with_history()}
                out = get_op("scan").infer(*[i.type for i in inputs], **attrs)
                shared[k] = replace(node, inputs=inputs, attrs=Attrs(attrs), type=out, uid=next_uid())
        return shared[k]

    return rebuild(graph, rewrite)
