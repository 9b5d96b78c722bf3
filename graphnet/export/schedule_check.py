"""A stored schedule checked against its graph: invariants, not equality with a fresh lowering.

A plan file holds the compiled graph and the schedule the executor runs. Loading rebuilds
the graph through each op's shape rule, then accepts any schedule that computes that
graph faithfully, so files stay loadable when later passes (memory planning, fusion)
reorder steps, while a crafted schedule (a step that computes something else, reads a
value before it exists, writes a feed, skips an effect) is refused.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import GraphnetError
from ..ir import Graph, Node
from ..ops.fused import written_inputs
from ..passes.lower import releases
from ..passes.pipeline import STEP_RULES
from ..plan import BUFFER_KINDS, PREFIXES, Buffer, Step
from .graph_json import check_dtype, check_shape, check_str, expect


def decode_buffers(data: Any) -> dict[str, Buffer]:
    expect(isinstance(data, list), "schedule: 'buffers' must be a list")
    buffers: dict[str, Buffer] = {}
    for item in data:
        expect(isinstance(item, list) and len(item) == 4, f"schedule: bad buffer record {str(item)[:80]}")
        name, shape, dtype, kind = item
        check_str(name, "buffer name", limit=600)
        expect(kind in BUFFER_KINDS and name.startswith(PREFIXES[kind]) and len(name) > len(PREFIXES[kind]),
               f"buffer {name!r}: kind {kind!r} and its name prefix disagree")
        expect(name not in buffers, f"buffer {name!r} is declared twice")
        buffers[name] = Buffer(name, check_shape(shape, f"buffer {name!r}"), check_dtype(dtype, f"buffer {name!r}"),
                               kind)
    return buffers


def decode_steps(data: Any, decode_attrs: Callable[[Any, str], dict[str, Any]]) -> list[Step]:
    expect(isinstance(data, list), "schedule: 'steps' must be a list")
    steps = []
    for i, item in enumerate(data):
        where = f"schedule step {i}"
        expect(isinstance(item, list) and len(item) == 5, f"{where}: expected [op, inputs, outputs, attrs, node]")
        op, inputs, outputs, attrs, node = item
        check_str(op, where, limit=64)
        for names in (inputs, outputs):
            expect(isinstance(names, list) and all(isinstance(n, str) for n in names),
                   f"{where}: inputs and outputs must be lists of buffer names")
        expect(isinstance(node, int) and not isinstance(node, bool) and node >= -1, f"{where}: bad node index")
        steps.append(Step(op, tuple(inputs), tuple(outputs), decode_attrs(attrs, where), node=node))
    return steps


def check_schedule(graph: Graph, buffers: dict[str, Buffer], steps: list[Step], feeds: dict[str, str],
                   outputs: dict[str, str], leaves: dict[str, int], first_effect: int,
                   release: list[tuple[str, ...]], same_attrs: Callable[[Step, Node], bool]) -> None:
    """Raise PlanFileError unless ``steps`` compute ``graph`` exactly, effects last and in order."""
    nodes = graph.nodes
    buffer_of: dict[int, tuple[str, ...]] = {}  # node uid -> buffers holding its value(s)
    defined: set[str] = set()
    leaf_seen: dict[str, int] = {}
    for name, index in leaves.items():
        expect(name in buffers and isinstance(index, int) and not isinstance(index, bool)
               and 0 <= index < len(nodes), f"leaf buffer {name!r} names no node")
        node, buf = nodes[index], buffers[name]
        kind = {"placeholder": "feed", "variable": "variable", "constant": "constant"}.get(node.op)
        expect(kind == buf.kind, f"leaf buffer {name!r} ({buf.kind}) holds a {node.op} node")
        expect((buf.shape, buf.dtype) == (node.type.shape, node.type.dtype),
               f"leaf buffer {name!r} is typed unlike its node")
        if node.op == "variable":  # several nodes may read one Variable through one buffer
            other = leaf_seen.get(name)
            expect(other is None or nodes[other].attrs["var"] is node.attrs["var"],
                   f"buffer {name!r} holds two different variables")
        else:
            expect(name not in leaf_seen, f"leaf buffer {name!r} holds two nodes")
        leaf_seen[name] = index
        buffer_of[node.uid] = (name,)
        defined.add(name)
    leaf_nodes = {n.uid for n in nodes if n.op in ("placeholder", "variable", "constant")}
    expect(leaf_nodes == {nodes[i].uid for i in leaves.values()}, "the schedule does not bind every leaf node")
    expect(set(defined) == {b for b, spec in buffers.items() if spec.kind != "temp"},
           "declared feed, variable or constant buffers that hold no leaf")
    expect(feeds == {n.attrs["name"]: PREFIXES["feed"] + n.attrs["name"] for n in nodes if n.op == "placeholder"},
           "the feeds do not match the graph's placeholders")
    effect_index = {e.uid: k for k, e in enumerate(graph.effects)}
    copies: dict[str, str] = {}  # copy buffer -> its source
    computed: set[int] = set()
    expect(0 <= first_effect <= len(steps), "first_effect is out of range")
    expect(len(steps) - first_effect == len(graph.effects), "the schedule's effects are not the graph's effects")
    for i, step in enumerate(steps):
        where = f"schedule step {i} ({step.op})"
        for name in step.inputs:
            expect(name in defined, f"{where} reads {name!r} before any step writes it")
        for name in step.outputs:
            expect(name in buffers and buffers[name].kind == "temp" and name not in defined,
                   f"{where} writes {name!r}, which is not a fresh temp buffer")
        if step.node == -1:
            # copies of outputs the lowering adds, and the steps plan passes declare (Pass.adds_steps)
            rule = STEP_RULES.get(step.op)
            expect(rule is not None, f"{where}: no pass declares {step.op!r} steps without a graph node")
            expect(i < first_effect and len(step.outputs) == 1,
                   f"{where}: a step without a graph node writes one buffer and runs before the effects")
            try:
                rule.check(step, buffers)
            except (GraphnetError, KeyError, IndexError, TypeError, ValueError) as exc:
                expect(False, f"{where}: {exc}")
            if rule.stands_for is not None:
                expect(0 <= rule.stands_for < len(step.inputs), f"{where}: it stands for no input")
                source = step.inputs[rule.stands_for]
                src, dst = buffers[source], buffers[step.outputs[0]]
                expect((src.shape, src.dtype) == (dst.shape, dst.dtype),
                       f"{where}: a step standing for its input keeps the input's type")
                copies[dst.name] = copies.get(source, source)
        else:
            expect(step.node < len(nodes), f"{where}: node {step.node} does not exist")
            node = nodes[step.node]
            expect(node.op == step.op and node.op not in ("placeholder", "variable", "constant", "tuple_get"),
                   f"{where} claims to compute node {step.node}, a {node.op}")
            expect(node.uid not in computed, f"{where}: node {step.node} is computed twice")
            expect(same_attrs(step, node), f"{where}: attributes differ from its node's")
            written = written_inputs(node.op, node.attrs) if node.uid in effect_index else 0
            for position, (inp, name) in enumerate(zip(node.inputs, step.inputs)):
                ok = name in _buffers_for(inp, buffer_of)
                if not ok and position >= written:  # a value an effect reads, copied before the effects
                    ok = copies.get(name) in _buffers_for(inp, buffer_of)
                expect(ok, f"{where} reads {name!r} where its node reads another value")
            expect(len(step.inputs) == len(node.inputs), f"{where} has the wrong number of inputs")
            if node.uid in effect_index:
                expect(i >= first_effect and effect_index[node.uid] == i - first_effect and not step.outputs,
                       f"{where}: effects run last, in the graph's order, and write no buffer")
            else:
                expect(i < first_effect, f"{where}: a pure step after the effects")
                expect(len(step.outputs) == len(node.types) and all(
                    (buffers[o].shape, buffers[o].dtype) == (t.shape, t.dtype)
                    for o, t in zip(step.outputs, node.types)), f"{where}: its buffers are typed unlike its node")
                buffer_of[node.uid] = step.outputs
            computed.add(node.uid)
        defined.update(step.outputs)
    must = {n.uid for n in nodes if n.op not in ("placeholder", "variable", "constant", "tuple_get")}
    expect(computed == must, f"the schedule leaves {len(must - computed)} node(s) of the graph uncomputed")
    expect(list(outputs) == list(graph.output_names), "the schedule's outputs are not the graph's")
    for (key, name), node in zip(outputs.items(), graph.outputs):
        ok = name in _buffers_for(node, buffer_of) or copies.get(name) in _buffers_for(node, buffer_of)
        expect(ok and name in defined, f"output {key!r} reads {name!r}, not its node's value")
    expect(release == releases(steps, buffers, outputs), "the schedule's buffer releases are not its last uses")


def _buffers_for(node: Node, buffer_of: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    if node.op == "tuple_get":
        parent = buffer_of.get(node.inputs[0].uid, ())
        index = node.attrs["index"]
        return (parent[index],) if index < len(parent) else ()
    return buffer_of.get(node.uid, ())
