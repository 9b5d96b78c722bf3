"""Algebraic simplification: drop identities that autodiff and composed ops leave behind."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, rebuild
from ..ops.registry import derived_from


def _is_const(node: Node, value: float) -> bool:
    return node.op == "constant" and node.attrs["value"].array.size == 1 and bool(
        np.all(node.attrs["value"].array == value)
    )


def _static(node: Node) -> bool:
    return all(isinstance(d, int) for d in node.type.shape)


def _same_type(a: Node, b: Node) -> bool:
    return a.type == b.type and _static(a)


def _compose(inner: tuple[int, ...], outer: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(inner[a] for a in outer)


def _transpose(x: Node, axes: tuple[int, ...], like: Node) -> Node:
    """``x`` permuted by ``axes``, folding into a transpose that ``x`` already is."""
    if x.op == "transpose":
        axes = _compose(x.attrs["axes"], axes)
        x = x.inputs[0]
    if axes == tuple(range(len(axes))):
        return x
    from ..ops import transpose
    from ..tensor import Tensor

    with derived_from(like, like.role):
        return transpose(Tensor(x), axes).node


def _swaps_last_two(axes: tuple[int, ...]) -> bool:
    n = len(axes)
    return n >= 2 and axes == tuple(range(n - 2)) + (n - 1, n - 2)


def simplify(graph: Graph) -> Graph:
    """Rewrite ``x * 1``, ``1 * x``, ``x / 1``, ``x + 0``, ``0 + x``, ``x - 0`` and ``-(-x)``
    to ``x``, and shape ops that provably change nothing (a reshape, broadcast, sum_to or
    cast to the type ``x`` already has) to ``x``. A rewrite fires only when the result's
    type equals ``x``'s, so broadcasting is never lost.

    Transposes compose (``transpose(transpose(x))`` is one transpose, or ``x``), and a
    transposed matrix product read only there becomes ``matmul(b^T, a^T)``: BLAS then
    writes the result contiguously, instead of handing the optimizer a strided view.
    """
    users = {uid: len(readers) for uid, readers in graph.users().items()}

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        op = node.op
        if op in ("mul", "add", "sub", "div"):
            a, b = inputs
            unit = 1.0 if op in ("mul", "div") else 0.0
            if _is_const(b, unit) and a.type == node.type:
                return a
            if op in ("mul", "add") and _is_const(a, unit) and b.type == node.type:
                return b
        elif op == "transpose":
            x, axes = inputs[0], node.attrs["axes"]
            if (x.op == "matmul" and _swaps_last_two(axes) and users.get(node.inputs[0].uid) == 1
                    and x.inputs[0].type.ndim == x.inputs[1].type.ndim):
                a, b = x.inputs
                from ..ops import matmul
                from ..tensor import Tensor

                with derived_from(node, node.role):
                    return matmul(Tensor(_transpose(b, axes, node)), Tensor(_transpose(a, axes, node))).node
            return _transpose(x, axes, node)
        elif op == "stop_gradient":  # compiled graphs hold their gradients already
            return inputs[0]
        elif op == "count_batches":  # its count is an effect by now (state_updates runs first)
            return inputs[0]
        elif op == "neg" and inputs[0].op == "neg":
            return inputs[0].inputs[0]
        elif op in ("reshape", "reshape_like", "broadcast_like", "broadcast_to", "sum_to", "cast"):
            if _same_type(inputs[0], node):
                return inputs[0]
        return None

    return rebuild(graph, rewrite)
