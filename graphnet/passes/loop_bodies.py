"""Loop bodies (``scan``) through the passes: the body-level passes applied inside bodies, the
backward body built by autodiff, and the forward scan merged with the history scan its
gradient reads."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from ..ir import Attrs, Graph, Node, TensorType, next_uid, rebuild, topological_order, with_inputs
from ..ops.control import BODY_BUILDERS, Body
from ..ops import matmul, reshape, transpose
from ..ops.common import sum_to
from ..ops.registry import derived_from, get_op, make_node
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


def _inline(graph: Graph, args: list[Node]) -> list[Node]:
    """``graph``'s outputs computed from ``args`` (argument i for its placeholder ``arg<i>``)."""
    mapping: dict[int, Node] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            mapping[node.uid] = args[int(node.attrs["name"][3:])]
        else:
            mapping[node.uid] = with_inputs(node, tuple(mapping[i.uid] for i in node.inputs))
    return [mapping[o.uid] for o in graph.outputs]


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
    outs = _inline(body.graph, c_t + x_t + consts)
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
    outs = _inline(body.graph, args)
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
        return (node.attrs["body"].origin, tuple(i.uid for i in node.inputs), node.attrs["reverse"],
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


def save_loop_residuals(graph: Graph) -> Graph:
    """Backward scans that read the values their forward step computed instead of computing
    them again: each value of a backward body that depends on no cotangent and that a
    cotangent computation reads (the gates, their activations, the product of the carry with
    a weight) becomes an extra per-step output of the forward scan (its history), stacked, and
    an extra per-step input of the backward scan. The forward loop runs once; the backward
    loop only differentiates.

    Before: ``scan{f + history}(c, xs, w)`` and ``scan{vjp of f}(..., history, w)`` whose body
    recomputes f's step. After: the forward body also gives those values; the backward body
    reads them."""
    pairs: dict[int, Node] = {}  # backward scan uid -> the history scan feeding it
    for node in graph.nodes:
        body = node.attrs.get("body") if node.op == "scan" else None
        if not isinstance(body, Body) or body.vjp_of is None:
            continue
        forward, carry_f, xs_f, consts_f = body.vjp_of
        nc, nx = forward.n_carry, forward.n_xs
        if nc == 0:
            continue
        seen = node.inputs[len(carry_f) + len(consts_f) + nx]
        history = seen.inputs[0] if seen.op == "tuple_get" else None
        if history is not None and history.op == "scan" and history.attrs["body"].history \
                and not history.attrs["body"].base.checkpoint and not forward.checkpoint:
            pairs[node.uid] = history
    if not pairs:
        return graph
    plans = {}
    for backward_uid, history in pairs.items():
        backward = next(n for n in graph.nodes if n.uid == backward_uid)
        plan = _residual_plan(history, backward)
        if plan is not None:
            plans[history.uid] = plans[backward_uid] = plan
    if not plans:
        return graph
    made: dict[int, Node] = {}

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        plan = plans.get(node.uid)
        if plan is None:
            return None
        if node.uid == plan["history"].uid:
            attrs = {**node.attrs, "body": plan["forward_body"]}
            out = get_op("scan").infer(*[i.type for i in inputs], **attrs)
            made[node.uid] = replace(node, inputs=inputs, attrs=Attrs(attrs), type=out, uid=next_uid())
            return made[node.uid]
        history = made[plan["history"].uid]
        first = len(plan["history"].type.types)
        residuals = [make_node("tuple_get", [history], {"index": first + j}) for j in range(plan["count"])]
        at = plan["consts_at"]
        new_inputs = inputs[:at] + tuple(residuals) + inputs[at:]
        attrs = {**node.attrs, "body": plan["backward_body"]}
        out = get_op("scan").infer(*[i.type for i in new_inputs], **attrs)
        return replace(node, inputs=new_inputs, attrs=Attrs(attrs), type=out, uid=next_uid())

    return rebuild(graph, rewrite)


def _residual_plan(history: Node, backward: Node) -> dict[str, Any] | None:
    """The new forward and backward bodies for one pair, or None when nothing is worth saving."""
    body: Body = backward.attrs["body"]
    forward, carry_f, xs_f, consts_f = body.vjp_of
    nc, nx, ny, nk = forward.n_carry, forward.n_xs, forward.n_ys, forward.n_consts
    kc, kk = len(carry_f), len(consts_f)
    graph = body.graph
    cotangent_args = set(range(kc + kk)) | set(range(kc + kk + nx + nc, kc + kk + nx + nc + ny))
    step_args = set(range(kc + kk, kc + kk + nx + nc))  # the step's xs and the carry that entered it
    tangent: dict[int, bool] = {}  # depends on a cotangent: the differentiation itself
    varies: dict[int, bool] = {}  # depends on the step's values (not only on outer ones)
    for node in graph.nodes:
        if node.op == "placeholder":
            index = int(node.attrs["name"][3:])
            tangent[node.uid], varies[node.uid] = index in cotangent_args, index in step_args
        else:
            tangent[node.uid] = any(tangent[i.uid] for i in node.inputs)
            varies[node.uid] = any(varies[i.uid] for i in node.inputs)
    frontier: dict[int, Node] = {}

    def keep(node: Node) -> None:
        """Save ``node``'s value if it is costly (a matrix product, a convolution, a library
        kernel); make cheap ones (elementwise, views, reductions) again from saved values and the
        step's arguments, as JAX's ``dots_saveable`` policy does; values the same every step
        (outer values only) are never saved."""
        if node.op in ("placeholder", "constant") or not varies[node.uid] or node.uid in frontier:
            return
        if node.op in ("tuple_get", "fused") or get_op(node.op).category in ("layout", "elementwise", "reduction"):
            for i in node.inputs:
                keep(i)
            return
        frontier[node.uid] = node

    for node in graph.nodes:
        if tangent[node.uid]:
            for i in node.inputs:
                if not tangent[i.uid]:
                    keep(i)
    for out in graph.outputs:
        if not tangent[out.uid]:
            keep(out)
    if not frontier or any(not isinstance(n.type, TensorType) for n in frontier.values()):
        return None
    # the backward body's primal arguments -> the forward body's
    to_forward = {kc + kk + i: nc + i for i in range(nx)}
    to_forward.update({kc + kk + nx + i: i for i in range(nc)})
    to_forward.update({kc + kk + nx + nc + ny + i: nc + nx + i for i in range(nk)})
    history_body: Body = history.attrs["body"]
    forward_graph = history_body.graph
    forward_args = {int(n.attrs["name"][3:]): n for n in forward_graph.nodes if n.op == "placeholder"}
    clones: dict[int, Node] = {}
    for node in topological_order(list(frontier.values())):
        if node.op == "placeholder":
            index = to_forward[int(node.attrs["name"][3:])]
            clones[node.uid] = forward_args.get(index) or placeholder(
                f"arg{index}", history_body.arg_types[index].shape, history_body.arg_types[index].dtype).node
        else:
            clones[node.uid] = with_inputs(node, tuple(clones[i.uid] for i in node.inputs))
    saved = list(frontier.values())
    outputs = list(forward_graph.outputs) + [clones[n.uid] for n in saved]
    new_forward = Body(history_body.arg_types, nc, nx, history_body.out_types + tuple(n.type for n in saved),
                       graph=Graph.build(outputs, [f"out{i}" for i in range(len(outputs))]),
                       base=history_body.base, history=True)
    # the backward body: the saved values become per-step arguments, after its other xs
    count, consts_at = len(saved), kc + kk + nx + nc + ny
    renamed: dict[int, Node] = {}
    for j, node in enumerate(saved):
        renamed[node.uid] = placeholder(f"arg{consts_at + j}", node.type.shape, node.type.dtype).node
    mapping: dict[int, Node] = {}
    for node in graph.nodes:
        if node.uid in renamed:
            mapping[node.uid] = renamed[node.uid]
        elif node.op == "placeholder" and int(node.attrs["name"][3:]) >= consts_at:
            index = int(node.attrs["name"][3:]) + count
            mapping[node.uid] = placeholder(f"arg{index}", node.type.shape, node.type.dtype).node
        else:
            mapping[node.uid] = with_inputs(node, tuple(mapping[i.uid] for i in node.inputs))
    new_graph = Graph.build([mapping[o.uid] for o in graph.outputs], graph.output_names)
    arg_types = body.arg_types[:consts_at] + tuple(n.type for n in saved) + body.arg_types[consts_at:]
    new_backward = Body(arg_types, body.n_carry, body.n_xs + count, body.out_types, graph=new_graph)
    new_backward.vjp_of = body.vjp_of
    return {"history": history, "forward_body": new_forward, "backward_body": new_backward, "count": count,
            "consts_at": backward_consts_at(body)}


def backward_consts_at(body: Body) -> int:
    """Where the outer values start among a backward scan node's inputs."""
    return body.n_carry + body.n_xs


def prune_loop_outputs(graph: Graph) -> Graph:
    """Scans without the per-step outputs nothing reads (a backward scan's gradient for an input
    no one asked about, a history nobody needs): the body stops computing them, and whatever
    only they needed goes with them. Carries stay: the next step reads them.

    Before: ``scan -> (c, ys0, ys1)`` with ``ys0`` unread. After: ``scan -> (c, ys1)``."""
    users = graph.users()
    kept_outputs = {o.uid for o in graph.outputs}
    plans: dict[int, list[int]] = {}
    for node in graph.nodes:
        if node.op != "scan" or node.uid in kept_outputs:
            continue
        readers = users[node.uid]
        if any(r.op != "tuple_get" for r in readers):
            continue
        body: Body = node.attrs["body"]
        read = {r.attrs["index"] for r in readers}
        keep = [i for i in range(len(body.out_types)) if i < body.n_carry or i in read]
        if len(keep) < len(body.out_types) and len(keep) > 0:
            plans[node.uid] = keep
    if not plans:
        return graph
    renumber: dict[int, dict[int, int]] = {}

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.uid in plans:
            keep = plans[node.uid]
            body: Body = node.attrs["body"]
            outputs = [body.graph.outputs[i] for i in keep]
            pruned = Body(body.arg_types, body.n_carry, body.n_xs, [body.out_types[i] for i in keep],
                          graph=Graph.build(outputs, [f"out{i}" for i in range(len(outputs))]),
                          base=body.base if body.history else None, history=body.history)
            pruned.vjp_of = body.vjp_of
            attrs = {**node.attrs, "body": pruned}
            new = replace(node, inputs=inputs, attrs=Attrs(attrs),
                          type=get_op("scan").infer(*[i.type for i in inputs], **attrs), uid=next_uid())
            renumber[new.uid] = {old: k for k, old in enumerate(keep)}
            return new
        if node.op == "tuple_get" and inputs[0].uid in renumber:
            index = renumber[inputs[0].uid][node.attrs["index"]]
            return replace(node, inputs=inputs, attrs=Attrs({"index": index}), uid=next_uid())
        return None

    return rebuild(graph, rewrite)


def hoist_loop_sums(graph: Graph) -> Graph:
    """Sums a loop builds step by step, made once after it: a carry that only accumulates
    ``acc + transpose(a) @ b`` (a weight's gradient over the steps) becomes one product of the
    stacked ``a`` and ``b`` after the loop, and ``acc + sum_to(b)`` (a bias's) one sum: one large
    product instead of one small product and one weight-sized addition per step.

    Before: ``scan`` whose body gives ``arg2 + transpose(h) @ g`` for carry 2. After: the scan
    gives ``h`` and ``g`` per step; ``init + transpose(reshape(H)) @ reshape(G)`` after it."""
    plans = {}
    for node in graph.nodes:
        if node.op == "scan":
            found = _accumulators(node.attrs["body"])
            if found:
                plans[node.uid] = found
    if not plans:
        return graph
    finals: dict[int, dict[int, Node]] = {}  # new scan uid -> old carry index -> its value after the loop
    shifted: dict[int, dict[int, int]] = {}  # new scan uid -> old result index -> new one

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.uid in plans:
            new, value_of, index_of = _hoist(node, inputs, plans[node.uid])
            finals[new.uid], shifted[new.uid] = value_of, index_of
            return new
        if node.op == "tuple_get" and inputs[0].uid in finals:
            index = node.attrs["index"]
            if index in finals[inputs[0].uid]:
                return finals[inputs[0].uid][index]
            return replace(node, inputs=inputs, attrs=Attrs({"index": shifted[inputs[0].uid][index]}),
                           uid=next_uid())
        return None

    return rebuild(graph, rewrite)


def _accumulators(body: Body) -> dict[int, tuple[str, Node, Node | None]]:
    """Carry index -> ("matmul", a, b) or ("sum_to", b, None) for each carry that nothing but
    its own sum reads: it only accumulates a per-step term."""
    graph = body.graph
    args = {int(n.attrs["name"][3:]): n for n in graph.nodes if n.op == "placeholder"}
    readers: dict[int, int] = {}
    for n in graph.nodes:
        for i in n.inputs:
            readers[i.uid] = readers.get(i.uid, 0) + 1
    outputs_read = [o.uid for o in graph.outputs]
    found = {}
    for j in range(body.n_carry):
        out, arg = graph.outputs[j], args.get(j)
        if arg is None or out.op != "add" or readers.get(arg.uid, 0) != 1 or outputs_read.count(out.uid) != 1 \
                or readers.get(out.uid, 0) != 0:
            continue
        term = out.inputs[1] if out.inputs[0] is arg else out.inputs[0] if out.inputs[1] is arg else None
        if term is None or term.type != out.type:  # (the sum alone reads the carry: the term cannot)
            continue
        if term.op == "matmul" and term.inputs[0].op == "transpose" and term.inputs[0].attrs["axes"] == (1, 0) \
                and term.inputs[0].inputs[0].type.ndim == 2 and term.inputs[1].type.ndim == 2 \
                and isinstance(term.inputs[0].inputs[0].type.shape[1], int) and isinstance(term.inputs[1].type.shape[1], int):
            found[j] = ("matmul", term.inputs[0].inputs[0], term.inputs[1])
        elif term.op == "sum_to" and len(term.attrs["shape"]) == 1 and term.inputs[0].type.ndim == 2:
            found[j] = ("sum_to", term.inputs[0], None)
    return found


def _hoist(node: Node, inputs: tuple[Node, ...], found: dict[int, tuple[str, Node, Node | None]]
           ) -> tuple[Node, dict[int, Node], dict[int, int]]:
    """The scan without the accumulating carries (their terms' parts as per-step outputs), the
    value each removed carry has after the loop, and where its other results moved."""
    body: Body = node.attrs["body"]
    graph = body.graph
    nc, total = body.n_carry, len(body.arg_types)
    kept_carries = [i for i in range(nc) if i not in found]
    new_index = {old: k for k, old in enumerate(kept_carries)}
    new_index.update({old: old - len(found) for old in range(nc, total)})
    parts: list[Node] = []
    for j in sorted(found):
        kind, a, b = found[j]
        parts += [a] if kind == "sum_to" else [a, b]
    mapping: dict[int, Node] = {}
    for n in graph.nodes:
        if n.op == "placeholder":
            old = int(n.attrs["name"][3:])
            mapping[n.uid] = n if old not in new_index or new_index[old] == old else \
                placeholder(f"arg{new_index[old]}", n.type.shape, n.type.dtype).node
        else:
            mapping[n.uid] = with_inputs(n, tuple(mapping[i.uid] for i in n.inputs))
    outputs = [mapping[graph.outputs[i].uid] for i in kept_carries] + \
        [mapping[o.uid] for o in graph.outputs[nc:]] + [mapping[p.uid] for p in parts]
    new_body = Body([body.arg_types[i] for i in range(total) if i not in found], nc - len(found), body.n_xs,
                    [o.type for o in outputs], graph=Graph.build(outputs, [f"out{i}" for i in range(len(outputs))]),
                    base=body.base if body.history else None, history=body.history)
    new_body.vjp_of, new_body.checkpoint = body.vjp_of, body.checkpoint
    attrs = {**node.attrs, "body": new_body}
    new_inputs = tuple(x for i, x in enumerate(inputs) if i not in found)
    new = replace(node, inputs=new_inputs, attrs=Attrs(attrs),
                  type=get_op("scan").infer(*[i.type for i in new_inputs], **attrs), uid=next_uid())
    ny = body.n_ys
    index_of = {old: k for k, old in enumerate(kept_carries)}
    index_of.update({nc + y: len(kept_carries) + y for y in range(ny)})
    first_part = len(kept_carries) + ny
    value_of: dict[int, Node] = {}
    with derived_from(node, node.role):
        k = first_part
        for j in sorted(found):
            kind, a, b = found[j]
            init = Tensor(inputs[j])
            stacked_a = Tensor(make_node("tuple_get", [new], {"index": k}))
            if kind == "sum_to":
                value = init + sum_to(stacked_a, tuple(init.shape))
                k += 1
            else:
                stacked_b = Tensor(make_node("tuple_get", [new], {"index": k + 1}))
                flat_a = reshape(stacked_a, (-1, a.type.shape[1]))
                flat_b = reshape(stacked_b, (-1, b.type.shape[1]))
                value = init + matmul(transpose(flat_a), flat_b)
                k += 2
            value_of[j] = value.node
    return new, value_of, index_of
