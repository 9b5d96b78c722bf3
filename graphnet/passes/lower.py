"""Lowering: a scheduled graph becomes a Plan of steps over named buffers."""

from __future__ import annotations

from ..ir import Graph, Node
from ..plan import Buffer, Plan, Step
from ..tensor import Variable


def _variable_name(var: Variable, taken: set[str]) -> str:
    base = var.name or f"var{var.id}"
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def lower(graph: Graph) -> Plan:
    """One step per computed node in ``graph.nodes`` order (run ``schedule`` first).

    Feeds are named after their placeholders, variables after their parameters
    (``0.weight``), constants ``const<i>``, computed values ``t<i>``.
    """
    names: dict[int, str] = {}
    buffers: dict[str, Buffer] = {}
    feeds, constants, variables = {}, {}, {}
    steps: list[Step] = []
    var_buffer: dict[int, str] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            name = node.attrs["name"]
            if name in feeds:
                from ..errors import GraphError

                raise GraphError(f"two different placeholders are both named {name!r}")
            feeds[name] = name
            kind = "feed"
        elif node.op == "variable":
            var = node.attrs["var"]
            if var.id in var_buffer:  # the same Variable seen through another node
                names[node.uid] = var_buffer[var.id]
                continue
            name = _variable_name(var, set(buffers))
            var_buffer[var.id] = name
            variables[name] = var
            kind = "variable"
        elif node.op == "constant":
            name = f"const{len(constants)}"
            constants[name] = node.attrs["value"].array
            kind = "constant"
        else:
            name = f"t{len(steps)}"
            steps.append(Step(node.op, tuple(names[i.uid] for i in node.inputs), name, dict(node.attrs),
                              node.role, node.location, node.scope))
            kind = "temp"
        names[node.uid] = name
        buffers[name] = Buffer(name, node.type.shape, node.type.dtype, kind)
    outputs = {key: names[o.uid] for key, o in zip(graph.output_names, graph.outputs)}
    return Plan(buffers, steps, feeds, outputs, constants, variables, _releases(steps, buffers, outputs))


def _releases(steps: list[Step], buffers: dict[str, Buffer], outputs: dict[str, str]) -> list[tuple[str, ...]]:
    last_use: dict[str, int] = {}
    for i, step in enumerate(steps):
        for name in step.inputs:
            last_use[name] = i
    keep = set(outputs.values())
    release: list[list[str]] = [[] for _ in steps]
    for name, i in last_use.items():
        if buffers[name].kind == "temp" and name not in keep:
            release[i].append(name)
    return [tuple(r) for r in release]


