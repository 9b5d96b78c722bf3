"""Graphs built by hand (or read from a file) as plain records, checked before use.

A record is a dict: ``{"id": str, "op": str, "inputs": [ids], "attrs": {...}}``. Leaves
carry their type in attrs, as declared nodes do (placeholder: name, shape, dtype).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import networkx as nx

from .errors import GraphError, GraphnetError
from .ir import Attrs, Graph, Node
from .ops.attrs import check_attrs
from .ops.registry import REGISTRY


def graph_from_records(records: Sequence[Mapping[str, Any]], outputs: Mapping[str, str]) -> Graph:
    """Build a Graph from records; ``outputs`` maps output names to record ids.

    Raises GraphError for a duplicate id, an unknown op, an input id that no record
    defines (a dangling edge), a cycle, or a node whose op rejects its inputs' types.
    """
    by_id: dict[str, Mapping[str, Any]] = {}
    dag = nx.DiGraph()
    for rec in records:
        rid = rec.get("id")
        if not isinstance(rid, str) or rid in by_id:
            raise GraphError(f"record id {rid!r} is missing, not a string, or repeated")
        if rec.get("op") not in REGISTRY:
            raise GraphError(f"record {rid!r} uses unknown op {rec.get('op')!r}")
        by_id[rid] = rec
        dag.add_node(rid)
    for rid, rec in by_id.items():
        for src in rec.get("inputs", ()):
            if src not in by_id:
                raise GraphError(f"record {rid!r} reads {src!r}, which no record defines (a dangling input)")
            dag.add_edge(src, rid)
    if not nx.is_directed_acyclic_graph(dag):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(dag))
        raise GraphError(f"the graph has a cycle: {cycle}")
    nodes: dict[str, Node] = {}
    for rid in nx.lexicographical_topological_sort(dag):
        rec = by_id[rid]
        inputs = tuple(nodes[s] for s in rec.get("inputs", ()))
        attrs = dict(rec.get("attrs", {}))
        try:  # the attribute checks and the shape rule a declared node passes
            check_attrs(rec["op"], REGISTRY[rec["op"]].attrs, attrs)
            out_type = REGISTRY[rec["op"]].infer(*[i.type for i in inputs], **attrs)
        except (GraphnetError, TypeError) as exc:
            raise GraphError(f"record {rid!r} ({rec['op']}) rejects its inputs: {exc}") from None
        nodes[rid] = Node(rec["op"], inputs, Attrs(attrs), out_type, name=rec.get("name"),
                          location=rec.get("location", ""), scope=rec.get("scope", ""), role=rec.get("role", "forward"))
    missing = [o for o in outputs.values() if o not in nodes]
    if missing:
        raise GraphError(f"outputs name ids {missing} that no record defines")
    return Graph.build([nodes[o] for o in outputs.values()], list(outputs))
