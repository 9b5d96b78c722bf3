"""Attention written by hand becomes the attention op: ``softmax(q @ k^T * c [+ mask]) @ v``
runs as one blocked, online-softmax kernel that never holds the (L, S) scores of long
sequences, and its gradient likewise."""

from __future__ import annotations

import math

import numpy as np

from ..errors import GraphnetError
from ..ir import Graph, Node, rebuild, with_inputs
from ..ops.attention import attention
from ..ops.registry import derived_from
from ..tensor import Tensor


def _scalar(node: Node) -> float | None:
    """The value of a float constant holding one number, else None."""
    if node.op != "constant":
        return None
    array = node.attrs["value"].array
    if array.size != 1 or array.dtype.kind != "f":
        return None
    value = float(np.asarray(array).reshape(()))
    return value if math.isfinite(value) and value > 0 else None


def _swaps_last_two(node: Node) -> bool:
    axes = node.attrs.get("axes") if node.op == "transpose" else None
    return axes is not None and len(axes) >= 2 and tuple(axes[:-2]) == tuple(range(len(axes) - 2)) and \
        tuple(axes[-2:]) == (len(axes) - 1, len(axes) - 2)


def _match(node: Node, users: dict[int, list[Node]]) -> tuple[Node, Node, Node, list[Node], float] | None:
    """(q, k, v, masks, scale) when ``node`` is ``softmax(q @ k^T * c [+ mask]) @ v`` with the
    softmax over the last axis and read only there."""
    if node.op != "matmul" or len(node.inputs) != 2:
        return None
    probs, v = node.inputs
    if probs.op != "softmax" or probs.attrs["axis"] != len(probs.type.shape) - 1 or len(users[probs.uid]) != 1:
        return None
    scores, masks = probs.inputs[0], []
    if scores.op == "add" and len(users[scores.uid]) == 1:
        a, b = scores.inputs
        product = next((x for x in (a, b) if x.op in ("mul", "div", "matmul")), None)
        if product is None:
            return None
        masks = [b if product is a else a]
        if not masks[0].type.dtype.startswith("float"):
            return None
        scores = product
    scale = 1.0
    if scores.op in ("mul", "div") and len(users[scores.uid]) == 1:
        a, b = scores.inputs
        c = _scalar(b) if scores.op == "div" else (_scalar(b) if _scalar(b) is not None else _scalar(a))
        if c is None:
            return None
        scale = 1.0 / c if scores.op == "div" else c
        scores = a if scores.op == "div" or _scalar(b) is not None else b
    if scores.op != "matmul" or len(users[scores.uid]) != 1:
        return None
    q, k_t = scores.inputs
    if not _swaps_last_two(k_t) or q.type.ndim < 2:
        return None
    return q, k_t.inputs[0], v, masks, scale


def fuse_attention(graph: Graph) -> Graph:
    """Replace each ``softmax(q @ swapaxes(k) * c + mask) @ v`` (c a positive constant; the
    mask optional and additive; the softmax read by the product alone) by the
    scaled_dot_product_attention op with ``scale=c``. Forms it cannot prove equal are left alone.

    Before: ``matmul(softmax(add(mul(matmul(q, transpose(k)), 0.125), mask)), v)``.
    After: ``tuple_get(scaled_dot_product_attention(q, k, v, mask){scale=0.125}, 0)``."""
    users = graph.users()
    if not any(n.op == "softmax" for n in graph.nodes):
        return graph

    new: dict[int, Node] = {}  # old uid -> the node the rebuilt graph has (upstream matches replaced)

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        result = with_inputs(node, inputs)
        found = _match(node, users)
        if found is not None:
            q, k, v, masks, scale = found
            try:
                with derived_from(node, node.role):
                    fused = attention(Tensor(new[q.uid]), Tensor(new[k.uid]), Tensor(new[v.uid]),
                                      [Tensor(new[m.uid]) for m in masks], scale=scale)
                if fused.node.type == node.type:
                    result = fused.node
            except GraphnetError:
                pass  # shapes the op does not take: left as written
        new[node.uid] = result
        return result

    return rebuild(graph, rewrite)
