"""Deterministic text printers for graphs and plans, one line per node or step."""

from __future__ import annotations

from typing import Any, Mapping

from . import ir, plan as plan_module
from .compile import normalize_outputs
from .ir import Graph, Node, TensorType
from .ops.control import Body
from .plan import Plan


def _attr_text(attrs: Any, skip: tuple[str, ...] = ("value", "var", "name", "shape", "dtype")) -> str:
    if any(isinstance(v, Body) for v in attrs.values()):  # a loop or branch: its bodies print below it
        items = [f"{k}={v}" for k, v in attrs.items() if not isinstance(v, Body) and v is not None]
        return " {" + ", ".join(items) + "}" if items else ""
    if "body" in attrs:  # a fused group: its members, in order
        return " {" + ", ".join(op + _attr_text(dict(a)) for op, _, a in attrs["body"]) + "}"
    items = [f"{k}={v}" for k, v in attrs.items() if k not in skip]
    return " {" + ", ".join(items) + "}" if items else ""


def format_graph(graph: Graph) -> str:
    """The graph in the style of ``jax.make_jaxpr``: inputs, one equation a line, outputs.

    Node ids are renumbered in print order, so equal graphs print equally.
    """
    ids: dict[int, str] = {}
    lines = []
    inputs = []
    for node in graph.nodes:
        if node.op == "placeholder":
            ids[node.uid] = node.attrs["name"]
            inputs.append(f"{ids[node.uid]}:{node.type}")
        elif node.op == "variable":
            ids[node.uid] = node.label()
            inputs.append(f"{ids[node.uid]}:{node.type}")
        elif node.op == "constant":
            ids[node.uid] = f"c{sum(1 for k in ids.values() if k.startswith('c') and k[1:].isdigit())}"
            lines.append(f"  {ids[node.uid]}:{node.type} = const {node.attrs['value']!r}")
    for node in graph.nodes:
        if node.uid in ids:
            continue
        ids[node.uid] = f"%{len([k for k in ids.values() if k.startswith('%')])}"
        args = " ".join(ids[i.uid] for i in node.inputs)
        tag = "" if node.role == "forward" else f"  [{node.role}]"
        where = f"  # {node.scope + ' ' if node.scope else ''}{node.location}" if node.location else ""
        lines.append(f"  {ids[node.uid]}:{node.type} = {node.op}{_attr_text(node.attrs)} {args}{tag}{where}")
        lines += _body_lines(node.attrs)
    outs = ", ".join(f"{name}={ids[o.uid]}" for name, o in zip(graph.output_names, graph.outputs))
    effects = ", ".join(f"{ids[e.uid]}:{e.attrs.get('kind', e.op)}" for e in graph.effects)
    grads = ", ".join(f"d{ids[p.uid]}={ids[g.uid]}" for p, g in graph.grads)
    head = "{ lambda " + " ".join(inputs) + " ."
    tail = (f"  in ({outs})" + (f" effects ({effects})" if effects else "") + (f" grads ({grads})" if grads else "")
            + " }")
    return "\n".join([head] + lines + [tail])


def _body_lines(attrs: Any) -> list[str]:
    """A loop's or branch's bodies, indented under it (as jaxprs print a scan's)."""
    lines = []
    for key, body in attrs.items():
        if isinstance(body, Body):
            kind = f"{key} (with each step's carry)" if body.history else key
            lines += [f"      {kind}:"] + ["      " + line for line in format_graph(body.graph).splitlines()]
    return lines


def format_plan(plan: Plan, hyper: Mapping[str, float] | None = None) -> str:
    """The plan's buffers and steps, one step a line, with the buffers freed after it."""
    lines = ["plan {" + (f"  # mode {plan.mode}" if plan.mode else "")]
    for name, buf in plan.buffers.items():
        if buf.kind != "temp":
            lines.append(f"  {buf.kind:<9} {name}: {TensorType(buf.shape, buf.dtype)}")
    for i, (step, rel) in enumerate(zip(plan.steps, plan.release)):
        if i == plan.first_effect and i < len(plan.steps):
            lines.append("  effects:")
        tag = "" if step.role == "forward" else f"  [{step.role}]"
        free = f"  free {' '.join(rel)}" if rel else ""
        if step.outputs:
            target = ", ".join(f"{o}:{TensorType(plan.buffers[o].shape, plan.buffers[o].dtype)}"
                               for o in step.outputs) + " = "
            attrs = _attr_text(step.attrs)
        elif step.op == "fused_assign":
            count = len(step.attrs["results"])
            target = ", ".join(step.inputs[:count]) + " <- "
            attrs = " {" + ", ".join(step.attrs["kinds"]) + ": " + ", ".join(op for op, _, _ in step.attrs["body"]) + "}"
        else:
            target = f"{step.inputs[0]} <- "
            attrs = f" {{{step.attrs.get('kind', '')}}}"
        lines.append(f"  {i:>4}: {target}{step.op}{attrs} {' '.join(step.inputs)}{tag}{free}")
        lines += _body_lines(step.attrs)
    lines.append("  outputs " + ", ".join(f"{k}={v}" for k, v in plan.outputs.items()))
    if plan.optimizer:  # ``hyper``: the values the last run read; else those compiled in
        lines.append(f"  optimizer {plan.optimizer['name']} {dict(hyper) if hyper else plan.optimizer['hyper']}")
    lines.append("}")
    return "\n".join(lines)


def make_graph(outputs: Any) -> Graph:
    """The graph that computes ``outputs`` (a tensor, list or dict), for printing or passes."""
    names, nodes = normalize_outputs(outputs, caller_locals=None)
    return Graph.build(nodes, names)


def describe(node: Node) -> str:
    return f"{node.label()} = {node.op}{_attr_text(node.attrs)} : {node.type}"


ir.DISPLAY["text"] = format_graph
plan_module.DISPLAY["text"] = format_plan
