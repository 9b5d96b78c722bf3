"""State writes fused with the values they write: an optimizer update in one step per parameter."""

from __future__ import annotations

from ..ir import Attrs, Graph, Node, next_uid, topological_order
from ..ops.fused import MAX_MEMBERS, reduces
from ..ops.registry import get_op


def _elementwise_value(node: Node) -> bool:
    opdef = get_op(node.op)
    if node.op == "fused":
        return not reduces(node.attrs["body"][-1][0])  # a group ending in a reduction stays a value
    return opdef.category == "elementwise" and opdef.kernel is not None


def plan_updates(graph: Graph) -> list[list[Node]]:
    """Clusters of ``assign`` effects to merge: each effect's value is elementwise (a fused
    group or one op) of its variable's exact type, read by nothing but its assign and the
    values of the same cluster (Adam's new parameter reads the new exp_avg and exp_avg_sq)."""
    users = graph.users()
    kept = {n.uid for n in graph.outputs} | {n.uid for pair in graph.grads for n in pair}
    assign_of: dict[int, Node] = {}
    for effect in graph.effects:
        if effect.op != "assign":
            continue
        value = effect.inputs[1]
        if _elementwise_value(value) and value.type == effect.inputs[0].type and value.uid not in kept \
                and value.uid not in assign_of:
            assign_of[value.uid] = effect
    changed = True
    while changed:  # a value read outside the candidates stays a value of its own
        changed = False
        for uid in list(assign_of):
            readers = users[uid]
            if any(r is not assign_of[uid] and r.uid not in assign_of for r in readers) \
                    or sum(1 for r in readers if r is assign_of[uid]) != 1:
                del assign_of[uid]
                changed = True
    parent = {uid: uid for uid in assign_of}

    def root(uid: int) -> int:
        while parent[uid] != uid:
            parent[uid] = parent[parent[uid]]
            uid = parent[uid]
        return uid

    for uid in assign_of:
        for reader in users[uid]:
            if reader.uid in assign_of:
                parent[root(uid)] = root(reader.uid)
    clusters: dict[int, list[Node]] = {}
    for effect in graph.effects:  # in effect order
        value = effect.inputs[1] if effect.op == "assign" else None
        if value is not None and value.uid in assign_of and assign_of[value.uid] is effect:
            clusters.setdefault(root(value.uid), []).append(effect)
    # a merged update over ops.fused.MAX_MEMBERS members would be refused at load: keep those apart
    return [effects for effects in clusters.values() if _members(effects) <= MAX_MEMBERS]


def _members(effects: list[Node]) -> int:
    """How many members the fused_assign merging ``effects`` would hold."""
    return sum(len(e.inputs[1].attrs["body"]) if e.inputs[1].op == "fused" else 1 for e in effects)


def explain(graph: Graph) -> list[dict]:
    """The merged updates as plain data, for the compile report: the variables each writes,
    and the ops of the values it computes with their source lines."""
    notes = []
    for effects in plan_updates(graph):
        names = ", ".join(e.inputs[0].attrs["var"].name or "?" for e in effects)
        members = []
        for effect in effects:
            value = effect.inputs[1]
            ops = [op for op, _, _ in value.attrs["body"]] if value.op == "fused" else [value.op]
            members += [[op, value.location or "?"] for op in ops]
        notes.append({"group": f"writes {names}", "members": members})
    return notes


def fuse_updates(graph: Graph) -> Graph:
    """Replace each cluster of ``plan_updates`` by one ``fused_assign`` effect that computes the
    values and writes every variable in place, in the first merged effect's position.

    Before (Adam, one parameter): ``m' = fused{..}(m, g)``, ``v' = fused{..}(v, g)``,
    ``p' = fused{..}(p, m', v', ...)``, effects ``assign(p, p')``, ``assign(m, m')``,
    ``assign(v, v')``. After: the effect ``fused_assign(p, m, v, g, ...)``. Run it after ``fuse``.
    """
    clusters = plan_updates(graph)
    if not clusters:
        return graph
    order = {n.uid: i for i, n in enumerate(graph.nodes)}
    replaced: dict[int, Node | None] = {}
    for effects in clusters:
        merged = _merge(sorted(effects, key=lambda e: order[e.inputs[1].uid]))
        replaced[effects[0].uid] = merged
        for effect in effects[1:]:
            replaced[effect.uid] = None
    effects = tuple(replaced.get(e.uid, e) for e in graph.effects if replaced.get(e.uid, e) is not None)
    roots = list(graph.outputs) + list(effects) + [n for pair in graph.grads for n in pair]
    return Graph(graph.outputs, graph.output_names, effects, tuple(topological_order(roots)), graph.grads)


def _merge(effects: list[Node]) -> Node:
    """One fused_assign for ``effects`` (ordered so each value comes after those it reads)."""
    externals: list[Node] = [e.inputs[0] for e in effects]  # the variables written come first
    body: list[tuple] = []
    member_of: dict[int, int] = {}  # uid of a merged value -> its member index

    def argument(node: Node) -> int:
        if node.uid in member_of:
            return member_of[node.uid]
        if node not in externals:
            externals.append(node)
        return -externals.index(node) - 1

    for effect in effects:
        value = effect.inputs[1]
        if value.op == "fused":
            offset = len(body)
            for op, args, attrs in value.attrs["body"]:
                body.append((op, tuple(offset + a if a >= 0 else argument(value.inputs[-a - 1]) for a in args), attrs))
        else:
            body.append((value.op, tuple(argument(i) for i in value.inputs), tuple(sorted(value.attrs.items()))))
        member_of[value.uid] = len(body) - 1
    first = effects[0]
    attrs = {"body": tuple(body), "results": tuple(member_of[e.inputs[1].uid] for e in effects),
             "kinds": tuple(e.attrs["kind"] for e in effects)}
    return Node(op="fused_assign", inputs=tuple(externals), attrs=Attrs(attrs), type=first.inputs[0].type,
                name=first.name, location=first.location, scope=first.scope, role=first.role, uid=next_uid())
