"""Algebraic simplification: drop identities that autodiff and composed ops leave behind."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, rebuild


def _is_const(node: Node, value: float) -> bool:
    return node.op == "constant" and node.attrs["value"].array.size == 1 and bool(
        np.all(node.attrs["value"].array == value)
    )


def _static(node: Node) -> bool:
    return all(isinstance(d, int) for d in node.type.shape)


def _same_type(a: Node, b: Node) -> bool:
    return a.type == b.type and _static(a)


def simplify(graph: Graph) -> Graph:
    """Rewrite ``x * 1``, ``1 * x``, ``x / 1``, ``x + 0``, ``0 + x``, ``x - 0`` and ``-(-x)``
    to ``x``, and shape ops that provably change nothing (a reshape, broadcast, sum_to or
    cast to the type ``x`` already has) to ``x``. A rewrite fires only when the result's
    type equals ``x``'s, so broadcasting is never lost.
    """

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        op = node.op
        if op in ("mul", "add", "sub", "div"):
            a, b = inputs
            unit = 1.0 if op in ("mul", "div") else 0.0
            if _is_const(b, unit) and a.type == node.type:
                return a
            if op in ("mul", "add") and _is_const(a, unit) and b.type == node.type:
                return b
        elif op == "neg" and inputs[0].op == "neg":
            return inputs[0].inputs[0]
        elif op in ("reshape", "reshape_like", "broadcast_like", "broadcast_to", "sum_to", "cast"):
            if _same_type(inputs[0], node):
                return inputs[0]
        return None

    return rebuild(graph, rewrite)
