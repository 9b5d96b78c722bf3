"""What the graph requires of its feeds' unknown dims (see graphnet.dims)."""

from __future__ import annotations

from typing import Any

from ..dims import DimConstraints, Sym, recording
from ..errors import GraphnetError
from ..ir import Graph, TensorType, TupleType, ValueType
from ..ops.registry import get_op


def dim_constraints(graph: Graph, mode: Any = None) -> DimConstraints:
    """Re-run every shape rule with one Sym per unknown placeholder dim, recording which dims
    the rules unify, bind to sizes, or broadcast. The graph is not changed.

    ``mode``: the plan's train/eval mode (as ``gn.compile`` takes it), for requirements of
    one mode only (training batch norm needs two values per channel). Run it on the graph as declared: composite ops (cross_entropy) state there what they
    require (equal batch dims) before decomposition hides it behind broadcasting.
    """
    constraints = DimConstraints()
    types: dict[int, ValueType] = {}
    with recording(constraints, mode) as where:
        for node in graph.nodes:
            if node.op == "placeholder":
                name = node.attrs["name"]
                shape = []
                for axis, d in enumerate(node.type.shape):
                    if d is None:
                        d = Sym(f"{name}#{axis}", name, axis)
                        constraints.origin[d] = f"{name}'s dim {axis}"
                    if isinstance(d, str):
                        constraints.feed_dims.append((name, axis, d))
                    shape.append(d)
                types[node.uid] = TensorType(tuple(shape), node.type.dtype)
            elif not node.inputs:
                types[node.uid] = node.type
            else:
                where[0] = f"{node.op}{f' in {node.scope}' if node.scope else ''}" + (
                    f" ({node.location})" if node.location else "")
                try:
                    types[node.uid] = get_op(node.op).infer(*[types[i.uid] for i in node.inputs], **node.attrs)
                except GraphnetError:  # symbols the rule cannot follow: keep the declared type
                    types[node.uid] = node.type
                if isinstance(types[node.uid], TupleType) != isinstance(node.type, TupleType):
                    types[node.uid] = node.type
    return constraints
