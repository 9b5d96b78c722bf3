"""Elementwise fusion: chains of elementwise ops become one ``fused`` step each."""

from __future__ import annotations

from ..ir import Attrs, Graph, Node, next_uid, topological_order, with_inputs
from ..ops.fused import MAX_MEMBERS, reduces
from ..ops.registry import get_op

#: Elementwise ops that are never fused (none yet: random and effect ops are other categories).
NEVER_FUSED: frozenset[str] = frozenset({"fused"})


def _cheap(op: str) -> bool:
    """Cheap enough to recompute for every element of a broadcast (``OpDef.recompute``): a
    producer of a smaller shape than its reader (a per-channel scale) joins the reader's group
    only then; transcendental functions stay separate steps over the small shape."""
    return get_op(op).recompute


def _fusible(node: Node) -> bool:
    opdef = get_op(node.op)
    return opdef.category == "elementwise" and opdef.kernel is not None and node.op not in NEVER_FUSED


def _joins(node: Node, reader: Node) -> str | None:
    """Why ``node`` may not be computed inside ``reader``'s loop, or None when it may."""
    if node.type.shape == reader.type.shape:
        return None
    if _cheap(node.op):
        return None
    return f"{node.op} over {node.type.shape} would be recomputed for each element of {reader.type.shape}"


def plan_groups(graph: Graph) -> tuple[dict[int, list[Node]], list[tuple[Node, str]]]:
    """The fusion decision: each group's members (graph order, the root last) by its root's
    uid, and for every elementwise node left alone, why it could not join a group."""
    users = graph.users()
    kept = {n.uid for n in graph.outputs} | {n.uid for n in graph.effects} | {
        n.uid for pair in graph.grads for n in pair}
    group_of: dict[int, frozenset[int]] = {}  # uid -> the roots (last members) of the groups it is in
    size: dict[int, int] = {}  # root -> members so far (one is kept free for a closing reduction)
    why_alone: dict[int, str] = {}
    for node in reversed(graph.nodes):
        if not _fusible(node):
            continue
        readers = users[node.uid]
        outside = sorted({r.op for r in readers if r.uid not in group_of})
        roots = frozenset().union(*(group_of.get(r.uid, frozenset()) for r in readers))
        refusals = [reason for r in readers if r.uid in group_of and (reason := _joins(node, r)) is not None]
        # a cheap scalar (a hyperparameter cast) is computed inside each group reading it
        copied = len(roots) > 1 and node.type.shape == () and _cheap(node.op)
        full = any(size.get(r, 0) >= MAX_MEMBERS - 1 for r in roots)
        if node.uid in kept or not readers or outside or (len(roots) > 1 and not copied) or refusals or full:
            group_of[node.uid] = frozenset({node.uid})
            size[node.uid] = 1
            if node.uid in kept:
                why_alone[node.uid] = "its value is needed outside (an output, a gradient or an effect's value)"
            elif outside:
                why_alone[node.uid] = "read by " + ", ".join(outside)
            elif len(roots) > 1:
                why_alone[node.uid] = f"read by {len(roots)} different groups (fusing would compute it twice)"
            elif refusals:
                why_alone[node.uid] = refusals[0]
            elif full:
                why_alone[node.uid] = f"its reader's group is full ({MAX_MEMBERS - 1} members): it starts another"
        else:
            group_of[node.uid] = roots
            for r in roots:
                size[r] = size.get(r, 0) + 1
    for node in graph.nodes:  # a reduction of a group's result, read by nothing else, ends that group
        if reduces(node.op) and node.inputs and get_op(node.op).kernel is not None:
            source = node.inputs[0]
            if group_of.get(source.uid) == frozenset({source.uid}) and source.uid not in kept \
                    and [r.uid for r in users[source.uid]] == [node.uid] and node.type.dtype == source.type.dtype:
                old, new = source.uid, frozenset({node.uid})
                for uid, roots in list(group_of.items()):
                    if old in roots:
                        group_of[uid] = (roots - {old}) | new
                group_of[node.uid] = new
                why_alone.pop(old, None)
    members: dict[int, list[Node]] = {}
    for node in graph.nodes:
        for root in sorted(group_of.get(node.uid, ())):
            members.setdefault(root, []).append(node)
    alone = [(node, why_alone.get(node.uid, "no elementwise neighbour"))
             for root, group in members.items() if len(group) == 1 for node in group]
    return {root: group for root, group in members.items() if len(group) > 1}, alone


def explain(graph: Graph) -> list[dict]:
    """The fusion decisions on ``graph`` as plain data, for the compile report."""
    groups, alone = plan_groups(graph)
    notes: list[dict] = [{"group": group[-1].name or f"%{group[-1].uid}",
                          "members": [[n.op, n.location or "?"] for n in group]} for group in groups.values()]
    notes += [{"not_fused": node.op, "at": node.location or "?", "why": reason} for node, reason in alone]
    return notes


def fuse(graph: Graph) -> Graph:
    """Merge each elementwise node into its readers' group when they are all elementwise and
    in one group, the node is not itself needed outside (an output, an effect or a gradient),
    and it has its readers' shape or is cheap to recompute per element of their broadcast.

    Before: ``relu(add(matmul(x, w), b))``. After: ``fused{add, relu}(matmul(x, w), b)``.
    Run it after every rewriting pass and before ``schedule``.
    """
    groups, _ = plan_groups(graph)
    inside = {node.uid for group in groups.values() for node in group}
    replaced: dict[int, Node] = {}

    def new(node: Node) -> Node:
        return replaced.get(node.uid, node)

    for node in graph.nodes:
        if node.uid in groups:
            replaced[node.uid] = _group_node(groups[node.uid], new)
        elif node.inputs and node.uid not in inside:
            inputs = tuple(new(i) for i in node.inputs)
            if inputs != node.inputs:
                replaced[node.uid] = with_inputs(node, inputs)
    outputs = tuple(new(o) for o in graph.outputs)
    effects = tuple(new(e) for e in graph.effects)
    grads = tuple((new(p), new(g)) for p, g in graph.grads)
    return Graph(outputs, graph.output_names, effects,
                 tuple(topological_order(list(outputs) + list(effects) + [n for pair in grads for n in pair])),
                 grads)


def _group_node(group: list[Node], new) -> Node:
    """The fused node computing ``group`` (members in graph order, the root last)."""
    index = {n.uid: i for i, n in enumerate(group)}
    externals: list[Node] = []
    body = []
    for node in group:
        args = []
        for inp in node.inputs:
            if inp.uid in index:
                args.append(index[inp.uid])
            else:
                outer = new(inp)
                if outer not in externals:
                    externals.append(outer)
                args.append(-externals.index(outer) - 1)
        body.append((node.op, tuple(args), tuple(sorted(node.attrs.items()))))
    root = group[-1]
    return Node(op="fused", inputs=tuple(externals), attrs=Attrs({"body": tuple(body)}), type=root.type,
                name=root.name, location=root.location, scope=root.scope, role=root.role, uid=next_uid())
