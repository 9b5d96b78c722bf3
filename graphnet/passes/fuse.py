"""Elementwise fusion: chains of elementwise ops become one ``fused`` step each."""

from __future__ import annotations

from ..ir import Attrs, Graph, Node, next_uid, topological_order, with_inputs
from ..ops.registry import get_op

#: Elementwise ops that are never fused (none yet: random and effect ops are other categories).
NEVER_FUSED: frozenset[str] = frozenset({"fused"})


def _fusible(node: Node) -> bool:
    opdef = get_op(node.op)
    return opdef.category == "elementwise" and opdef.kernel is not None and node.op not in NEVER_FUSED


def fuse(graph: Graph) -> Graph:
    """Merge each elementwise node into its consumer's group when the consumer is elementwise
    too, the node has no other reader (not an output, an effect or a gradient either), and
    it has the consumer's type (so nothing is recomputed per element of a broadcast).

    Before: ``relu(add(matmul(x, w), b))``. After: ``fused{add, relu}(matmul(x, w), b)``.
    Run it after every rewriting pass and before ``schedule``.
    """
    users = graph.users()
    kept = {n.uid for n in graph.outputs} | {n.uid for n in graph.effects} | {
        n.uid for pair in graph.grads for n in pair}
    group_of: dict[int, int] = {}  # uid -> uid of the group's root (its last member)
    for node in reversed(graph.nodes):
        if not _fusible(node):
            continue
        readers = users[node.uid]
        if node.uid in kept or len(readers) != 1:
            group_of.setdefault(node.uid, node.uid)
            continue
        reader = readers[0]
        if reader.uid in group_of and reader.type == node.type and reader.inputs.count(node) == 1:
            group_of[node.uid] = group_of[reader.uid]
        else:
            group_of[node.uid] = node.uid
    members: dict[int, list[Node]] = {}
    for node in graph.nodes:
        if node.uid in group_of:
            members.setdefault(group_of[node.uid], []).append(node)
    replaced: dict[int, Node] = {}

    def new(node: Node) -> Node:
        return replaced.get(node.uid, node)

    for node in graph.nodes:
        root = group_of.get(node.uid)
        group = members.get(root, []) if root is not None else []
        if len(group) > 1 and node.uid == root:
            replaced[node.uid] = _group_node(group, new)
        elif node.inputs and (root is None or len(group) <= 1):
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
