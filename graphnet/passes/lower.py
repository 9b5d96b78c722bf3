"""Lowering: a scheduled graph becomes a Plan of steps over named buffers."""

from __future__ import annotations

from ..errors import GraphError
from ..ir import Graph
from ..ops.fused import written_inputs
from ..ops.registry import get_op
from ..plan import PREFIXES, Buffer, Plan, Step, VariableSpec, view_roots
from ..tensor import Variable
from .verify import verify_effects


def _unique(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def lower(graph: Graph) -> Plan:
    """One step per computed node in ``graph.nodes`` order (run ``schedule`` first).

    Buffers are named in their own namespace (see graphnet.plan): feeds ``in:<placeholder>``,
    variables ``var:<parameter name>``, constants ``const:<i>``, computed values ``%<i>``.
    A multi-output node is one step writing one buffer per result; ``tuple_get`` reads
    one of them without a step. Outputs that may share memory with a variable, feed or
    constant (``transpose(w)``), and effect values that may share memory with a variable
    some effect writes, are copied by ``copy`` steps before the first effect, so no run
    hands out a live view of state or reads a value an earlier effect has overwritten.
    The plan passes (flat optimizer state, the memory plan) run after it in the pipeline.
    """
    verify_effects(graph)
    names: dict[int, tuple[str, ...]] = {}  # node uid -> its buffer(s)
    buffers: dict[str, Buffer] = {}
    feeds: dict[str, str] = {}
    constants, variables = {}, {}
    steps: list[Step] = []
    var_buffer: dict[int, str] = {}
    var_names: set[str] = set()
    effect_uids = {e.uid for e in graph.effects}
    first_effect = -1

    def add_buffer(name: str, node_type: object, kind: str) -> str:
        buffers[name] = Buffer(name, node_type.shape, node_type.dtype, kind)  # type: ignore[attr-defined]
        return name

    temp_count = 0
    for index, node in enumerate(graph.nodes):
        if node.op == "placeholder":
            user = node.attrs["name"]
            if user in feeds:
                raise GraphError(f"two different placeholders are both named {user!r}")
            feeds[user] = add_buffer(PREFIXES["feed"] + user, node.type, "feed")
            names[node.uid] = (feeds[user],)
        elif node.op == "variable":
            var: Variable = node.attrs["var"]
            if (var.data.dtype.name, tuple(var.data.shape)) != (node.type.dtype, node.type.shape):
                raise GraphError(f"parameter {var.name or var.id} holds {var.data.dtype.name}"
                                 f"{list(var.data.shape)}, but the graph was declared with {node.type}: declare "
                                 f"the graph again after changing it (model.double(), a new shape)")
            if var.id not in var_buffer:  # the same Variable may be seen through several nodes
                display = _unique(var.name or f"var{var.id}", var_names)
                var_names.add(display)
                var_buffer[var.id] = add_buffer(PREFIXES["variable"] + display, node.type, "variable")
                variables[var_buffer[var.id]] = VariableSpec.of(var)
            names[node.uid] = (var_buffer[var.id],)
        elif node.op == "constant":
            name = add_buffer(f"{PREFIXES['constant']}{len(constants)}", node.type, "constant")
            constants[name] = node.attrs["value"].array
            names[node.uid] = (name,)
        elif node.op == "tuple_get":
            names[node.uid] = (names[node.inputs[0].uid][node.attrs["index"]],)
        elif node.op == "make_tuple":
            raise GraphError("make_tuple reached the lowering: run the decompose pass")
        else:
            inputs = tuple(names[i.uid][0] for i in node.inputs)
            if node.uid in effect_uids:
                if first_effect < 0:
                    first_effect = len(steps)
                outputs: tuple[str, ...] = ()
            else:
                if first_effect >= 0:
                    raise GraphError(f"{node.op} {node.label()} is scheduled after an effect: run schedule")
                outputs = tuple(add_buffer(f"{PREFIXES['temp']}{temp_count + k}", t, "temp")
                                for k, t in enumerate(node.types))
                temp_count += len(outputs)
            steps.append(Step(node.op, inputs, outputs, dict(node.attrs), node.role, node.location, node.scope,
                              index))
            names[node.uid] = outputs
    if first_effect < 0:
        first_effect = len(steps)
    outputs_map = {key: names[o.uid][0] for key, o in zip(graph.output_names, graph.outputs)}

    # copies before the effects: outputs sharing memory with state, effect values an effect may overwrite
    roots = view_roots(steps, buffers, lambda op: get_op(op).views)
    copies: dict[str, str] = {}
    copy_steps: list[Step] = []

    def copied(buffer: str) -> str:
        if buffer not in copies:
            spec = buffers[buffer]
            name = add_buffer(f"{PREFIXES['temp']}{temp_count + len(copies)}", spec, "temp")
            copies[buffer] = name
            copy_steps.append(Step("copy", (buffer,), (name,), {}, "forward"))
        return copies[buffer]

    for key, buffer in outputs_map.items():
        if any(buffers[r].kind != "temp" for r in roots[buffer]):
            outputs_map[key] = copied(buffer)
    counts = [written_inputs(s.op, s.attrs) for s in steps[first_effect:]]
    written = {name for s, count in zip(steps[first_effect:], counts) for name in s.inputs[:count]}
    effect_steps = []
    for step, count in zip(steps[first_effect:], counts):
        # what an effect reads besides its targets must not change under it as earlier effects write
        inputs = step.inputs[:count] + tuple(copied(v) if roots[v] & written else v for v in step.inputs[count:])
        if inputs != step.inputs:
            step = Step(step.op, inputs, step.outputs, step.attrs, step.role, step.location, step.scope, step.node)
        effect_steps.append(step)
    steps = steps[:first_effect] + copy_steps + effect_steps
    first_effect += len(copy_steps)
    return Plan(buffers, steps, feeds, outputs_map, constants, variables, releases(steps, buffers, outputs_map),
                first_effect)


def releases(steps: list[Step], buffers: dict[str, Buffer], outputs: dict[str, str]) -> list[tuple[str, ...]]:
    """For each step, the temp buffers it reads for the last time (outputs are kept)."""
    last_use: dict[str, int] = {}
    for i, step in enumerate(steps):
        for name in step.inputs:
            last_use[name] = i
    keep = set(outputs.values())
    release: list[list[str]] = [[] for _ in steps]
    for name, i in last_use.items():
        if buffers[name].kind == "temp" and name not in keep:
            release[i].append(name)
    return [tuple(sorted(r)) for r in release]
