"""Evaluation-mode batch norm folded into the convolution before it."""

from __future__ import annotations

from ..ir import Graph, Node, rebuild
from ..ops.elementwise import sqrt
from ..ops.nn import conv2d
from ..ops.registry import derived_from
from ..ops.shape import reshape
from ..ops.tuples import make_tuple_node
from ..tensor import Tensor


def _conv_and_bias(x: Node, users: dict | None) -> tuple[Node, Node | None] | None:
    """(the conv2d node, its bias vector or None) when ``x`` is a convolution's output (with or
    without its bias added) that nothing else reads (``users``: readers by uid; None skips
    that check); else None."""
    def alone(node: Node) -> bool:
        return users is None or len(users[node.uid]) == 1

    if x.op == "conv2d" and alone(x):
        return x, None
    if x.op == "add" and alone(x):
        for conv, bias in (x.inputs, x.inputs[::-1]):
            if conv.op == "conv2d" and alone(conv) and bias.op == "reshape" \
                    and bias.inputs[0].type.ndim == 1 and bias.type.ndim == 4:
                return conv, bias.inputs[0]
    return None


def fold_batch_norm(graph: Graph) -> Graph:
    """Fold each evaluation-mode ``batch_norm`` that reads a convolution into that convolution:
    scale = weight / sqrt(running_var + eps) multiplies the filters per output channel, and
    (conv bias - running_mean) * scale + bias becomes the convolution's bias, computed from
    the variables at every run (so the plan follows later training). The activation is then
    read once less per element.

    Before: ``tuple_get(batch_norm{training=False}(conv2d(x, w), rm, rv, g, b), 0)``.
    After: ``conv2d(x, w * reshape(g / sqrt(rv + eps), (C, 1, 1, 1))) + reshape(b - rm * ..., (1, C, 1, 1))``.
    Run it after ``resolve_modes`` and before ``decompose``.
    """
    users = graph.users()

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op != "batch_norm" or node.attrs["training"] is not False or not node.attrs["stats"]:
            return None
        if node.inputs[0].type.ndim != 4 or _conv_and_bias(node.inputs[0], users) is None:
            return None
        conv, conv_bias = _conv_and_bias(inputs[0], None)  # the rewritten nodes, which later ones read
        attrs = node.attrs
        rm, rv = inputs[1], inputs[2]
        affine = list(inputs[3:])
        gamma = affine.pop(0) if attrs["weight"] else None
        beta = affine.pop(0) if attrs["bias"] else None
        channels = conv.type.shape[1]
        with derived_from(node, node.role):
            scale = 1.0 / sqrt(Tensor(rv) + attrs["eps"])
            if gamma is not None:
                scale = scale * Tensor(gamma)
            shift = (Tensor(conv_bias) - Tensor(rm) if conv_bias is not None else -Tensor(rm)) * scale
            if beta is not None:
                shift = shift + Tensor(beta)
            weight = Tensor(conv.inputs[1]) * reshape(scale, (channels, 1, 1, 1))
            y = conv2d(Tensor(conv.inputs[0]), weight, shift, **{k: conv.attrs[k] for k in
                                                                ("stride", "padding", "dilation", "groups")})
        return make_tuple_node([y.node, rm, rv])

    return rebuild(graph, rewrite)
