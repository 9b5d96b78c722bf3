"""IR checker: ops registered, inputs earlier, every node's full type what its rule gives, effects sound."""

from __future__ import annotations

from ..errors import GraphError, GraphnetError
from ..ir import Graph
from ..ops.attrs import check_attrs
from ..ops.fused import written_inputs
from ..ops.registry import REGISTRY


def verify(graph: Graph) -> Graph:
    """Check ``graph`` and return it unchanged; raise GraphError on the first problem.

    Checks: ops are registered; inputs precede users in ``graph.nodes`` (no cycle, no
    input missing from the graph); each node's type (shape with its symbolic dims, and
    dtype) equals what its op's shape rule gives; multi-output nodes are read only through
    ``tuple_get``. Effects: every effect node is listed in ``graph.effects`` exactly once,
    nothing reads one, each writes a variable, and no variable is written twice.
    """
    seen: set[int] = set()
    listed = {e.uid for e in graph.effects}
    for node in graph.nodes:
        opdef = REGISTRY.get(node.op)
        if opdef is None:
            raise GraphError(f"node {node.label()} uses unknown op {node.op!r}")
        for inp in node.inputs:
            if inp.uid not in seen:
                raise GraphError(
                    f"node {node.label()} ({node.op}) reads {inp.label()}, which is not earlier in the graph "
                    f"(a cycle or a dangling input)"
                )
            if REGISTRY[inp.op].effect:
                raise GraphError(f"node {node.label()} ({node.op}) reads the effect {inp.label()} ({inp.op}); "
                                 f"effects have no value to read")
            if len(inp.types) > 1 and node.op != "tuple_get":
                raise GraphError(f"node {node.label()} ({node.op}) reads the multi-output {inp.op} "
                                 f"{inp.label()} directly; read its results with tuple_get")
        try:
            check_attrs(node.op, opdef.attrs, node.attrs)
            expected = opdef.infer(*[i.type for i in node.inputs], **node.attrs)
        except GraphnetError as exc:
            raise GraphError(f"node {node.label()} ({node.op}) fails its shape rule: {exc}") from None
        if expected != node.type:
            raise GraphError(f"node {node.label()} ({node.op}) is typed {node.type}, its rule gives {expected}")
        if opdef.effect and node.uid not in listed:
            raise GraphError(f"effect {node.label()} ({node.op}) is in the graph but not in its effect list "
                             f"(a dangling effect)")
        seen.add(node.uid)
    for out in list(graph.outputs) + list(graph.effects) + [n for pair in graph.grads for n in pair]:
        if out.uid not in seen:
            raise GraphError(f"output {out.label()} is not in the graph")
    verify_effects(graph)
    for out in graph.outputs:
        if len(out.types) > 1:
            raise GraphError(f"output {out.label()} is a multi-output {out.op}; output its results with tuple_get")
    return graph


def verify_effects(graph: Graph) -> None:
    """The effect list alone (cheap enough for every lowering): effect ops, listed once, writing
    variables, each variable at most once."""
    targets: dict[int, str] = {}  # variable id -> what wrote it, and where
    for i, effect in enumerate(graph.effects):
        if not REGISTRY[effect.op].effect:
            raise GraphError(f"effect {i} is a {effect.op}, not an effect op")
        if effect.uid in {e.uid for e in graph.effects[:i]}:
            raise GraphError(f"effect {effect.label()} ({effect.op}) is listed twice")
        count = written_inputs(effect.op, effect.attrs)
        kinds = effect.attrs["kinds"] if effect.op == "fused_assign" else (effect.attrs.get("kind"),) * count
        for target, kind in zip(effect.inputs[:count], kinds):
            if target.op != "variable":
                raise GraphError(f"effect {effect.label()} ({effect.op}) writes {target.label()}, a {target.op}, "
                                 f"not a variable")
            var = target.attrs["var"]
            where = f"{kind} {effect.op}" + (f" in {effect.scope}" if effect.scope else "") + (
                f" declared at {effect.location}" if effect.location else "")
            if var.id in targets:
                raise GraphError(f"variable {target.label()} is written twice in one run (by the {targets[var.id]} "
                                 f"and by the {where}): give one effect per variable (state_updates chains a "
                                 f"layer's updates when it is called twice)")
            targets[var.id] = where
