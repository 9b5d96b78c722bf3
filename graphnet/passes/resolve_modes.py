"""Train/eval mode resolved: each module's switch becomes the bool its ops compute with."""

from __future__ import annotations

from dataclasses import replace

from ..ir import Attrs, Graph, Node, next_uid, rebuild
from ..modes import ModeSwitch, resolve
from ..ops import broadcast_like
from ..ops.registry import derived_from
from ..ops.tuples import make_tuple_node
from ..tensor import Tensor, constant


def resolve_modes(graph: Graph, mode: str | None = None) -> Graph:
    """Replace every ``training`` attribute that is a module's ModeSwitch by a bool: the
    module's mode now (``mode=None``), or ``mode`` ("train" / "eval") for every module.

    Eval-mode dropout becomes the identity (its mask, for gradients declared through it,
    is ones). Before: ``dropout(x) {training=mode(drop: eval)}``. After: ``x``.
    """

    def rewrite(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        value = node.attrs.get("training")
        if not isinstance(value, (bool, ModeSwitch)):
            return None
        training = resolve(value, mode)
        if node.op == "count_batches" and not training:
            return inputs[0]  # evaluation counts no batches (and conv -> batch_norm stays adjacent for folding)
        if node.op == "dropout" and not training:
            with derived_from(node, node.role):
                ones = broadcast_like(constant(1.0, inputs[0].type.dtype), Tensor(inputs[0])).node
            return make_tuple_node([inputs[0], ones])
        if training is value:
            return None
        return replace(node, inputs=inputs, attrs=Attrs({**node.attrs, "training": training}), uid=next_uid())

    return rebuild(graph, rewrite)


def mode_switches(graph: Graph) -> list[ModeSwitch]:
    """The distinct module switches ``graph``'s nodes read, in graph order."""
    found = {id(n.attrs["training"]): n.attrs["training"] for n in graph.nodes
             if isinstance(n.attrs.get("training"), ModeSwitch)}
    return list(found.values())
