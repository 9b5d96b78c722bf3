"""Constant folding: evaluate at compile time every op whose inputs are all constants."""

from __future__ import annotations

import numpy as np

from ..ir import Attrs, Graph, Node, next_uid, rebuild
from ..ops.registry import get_op
from ..tensor import ConstValue

#: Folding these would bake large arrays into the plan for no gain in work.
_MAX_FOLDED_ELEMENTS = 1 << 16


def constant_fold(graph: Graph) -> Graph:
    """Replace pure ops on constant inputs by the constant they compute (with NumPy).

    Before: ``mul(const 2, const 3)``. After: ``const 6``. Random ops, collectives (their values come from other processes), side effects and
    results larger than 65536 elements are left alone.
    """

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if not inputs or any(i.op != "constant" for i in inputs):
            return None
        opdef = get_op(node.op)
        if opdef.kernel is None or opdef.random or opdef.effect or opdef.category == "collective" or len(node.types) > 1:
            return None
        value = np.asarray(opdef.kernel(np, *[i.attrs["value"].array for i in inputs], **node.attrs))
        if value.size > _MAX_FOLDED_ELEMENTS:
            return None
        value = value.astype(node.dtype, copy=False)
        return Node(
            op="constant", inputs=(), attrs=Attrs({"value": ConstValue(value)}), type=node.type,
            name=node.name, location=node.location, scope=node.scope, role=node.role, uid=next_uid(),
        )

    return rebuild(graph, rewrite)
