"""Graphs to JSON-able records and back, trusting nothing on the way back.

Encoding is plain: one record per node in the graph's order, inputs by index, attributes
as JSON values. The two values an attribute may hold that JSON cannot are references to
tensors stored beside the JSON: a parameter's ``Variable`` (``{"$variable": name}``) and
a constant's array (``{"$tensor": key}``). Tuples become lists and come back as tuples.

Decoding rebuilds every node through its op's own shape rule and checks the result
against the stored type, so a record cannot claim a type its op would not produce, and
attributes of the wrong type fail there. Ops come only from graphnet's registry, dtypes
only from ``graphnet.dtypes.DTYPES``.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..dtypes import DTYPES
from ..errors import GraphnetError, PlanFileError
from ..ir import Attrs, Graph, Node, TensorType, TupleType
from ..ops.attrs import check_attrs
from ..ops.control import Body
from ..ops.registry import REGISTRY
from ..modes import ModeSwitch
from ..tensor import ConstValue, Variable

ROLES = ("forward", "grad", "update")
_MAX_DEPTH = 8  # attribute values nest shallowly (tuples of tuples at most)


# --- encoding ---------------------------------------------------------------------------------------------------

def encode_value(value: Any, tensor_key: Callable[[Any], dict[str, str]]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, (tuple, list)):
        return [encode_value(v, tensor_key) for v in value]
    if isinstance(value, (Variable, ConstValue)):
        return tensor_key(value)
    if isinstance(value, ModeSwitch):
        return {"$mode": {"path": value.path, "kind": value.kind, "training": value.training}}
    if isinstance(value, Body):
        return {"$body": {"args": [[_encode_shape(t.shape), t.dtype] for t in value.arg_types],
                          "outs": [[_encode_shape(t.shape), t.dtype] for t in value.out_types],
                          "carry": value.n_carry, "xs": value.n_xs, "history": value.history,
                          "graph": encode_graph(value.graph, tensor_key)}}
    raise PlanFileError(f"cannot store attribute value {value!r} of type {type(value).__name__}")


def _encode_shape(shape: Sequence[Any]) -> list[Any]:
    return [d if d is None or isinstance(d, str) else int(d) for d in shape]


def encode_graph(graph: Graph, tensor_key: Callable[[Any], dict[str, str]]) -> dict[str, Any]:
    """``graph`` as ``{"nodes": [...], "outputs": {name: index}, "effects": [index]}``.

    ``tensor_key(value)`` returns the reference stored for a Variable or ConstValue
    (and records the array to be written).
    """
    index = {node.uid: i for i, node in enumerate(graph.nodes)}
    nodes = []
    for node in graph.nodes:
        record = {
            "op": node.op,
            "inputs": [index[i.uid] for i in node.inputs],
            "attrs": {k: encode_value(v, tensor_key) for k, v in node.attrs.items()},
        }
        if isinstance(node.type, TupleType):
            record["types"] = [[_encode_shape(t.shape), t.dtype] for t in node.type.types]
        else:
            record.update(shape=_encode_shape(node.type.shape), dtype=node.type.dtype)
        nodes.append({
            **record,
            "name": node.name,
            "location": node.location,
            "scope": node.scope,
            "role": node.role,
        })
    return {"nodes": nodes, "outputs": {name: index[o.uid] for name, o in zip(graph.output_names, graph.outputs)},
            "effects": [index[e.uid] for e in graph.effects]}


# --- decoding -----------------------------------------------------------------------------------------------------

def expect(condition: bool, message: str) -> None:
    if not condition:
        raise PlanFileError(message)


def check_dtype(value: Any, where: str) -> str:
    expect(isinstance(value, str) and value in DTYPES, f"{where}: dtype {value!r} is not one of {sorted(DTYPES)}")
    return value


def check_shape(value: Any, where: str) -> tuple[Any, ...]:
    expect(isinstance(value, list) and len(value) <= 32, f"{where}: shape must be a list of at most 32 dims")
    for d in value:
        ok = d is None or (isinstance(d, str) and 0 < len(d) <= 64) or (
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 40)
        expect(ok, f"{where}: bad dimension {d!r} (an int >= 0, a name, or null)")
    return tuple(value)


def check_str(value: Any, where: str, *, optional: bool = False, limit: int = 4096) -> str | None:
    if optional and value is None:
        return None
    expect(isinstance(value, str) and len(value) <= limit, f"{where}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PlanFileError(f"{where}: a string holds a lone surrogate (it is not valid text)") from None
    return value


def _decode_value(value: Any, resolve: Callable[[Mapping[str, Any], str], Any], where: str, depth: int = 0) -> Any:
    expect(depth <= _MAX_DEPTH, f"{where}: attribute nests too deeply")
    if isinstance(value, str):
        return check_str(value, where)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, list):
        return tuple(_decode_value(v, resolve, where, depth + 1) for v in value)
    if isinstance(value, dict) and len(value) == 1:
        (tag, ref), = value.items()
        if tag == "$float":
            expect(ref in ("inf", "-inf", "nan"), f"{where}: bad float {ref!r}")
            return float(ref)
        if tag in ("$variable", "$tensor") and isinstance(ref, str):
            return resolve(value, where)
        if tag == "$body" and ref == "node":  # a schedule step's loop body: its node's (plan_file resolves it)
            return NODE_BODY
        if tag == "$body" and isinstance(ref, dict):
            return _decode_body(ref, resolve, where, depth)
        if tag == "$mode" and isinstance(ref, dict) and set(ref) == {"path", "kind", "training"}:
            expect(isinstance(ref["training"], bool), f"{where}: a mode's 'training' must be true or false")
            return ModeSwitch(path=check_str(ref["path"], where, limit=256), kind=check_str(ref["kind"], where, limit=64),
                              value=ref["training"])
    raise PlanFileError(f"{where}: attribute value {value!r} is not a number, string, list, null or tensor reference")


#: a schedule step's ``body`` attribute, standing for its graph node's (checked there)
NODE_BODY = "$body of the step's node"

#: loop bodies nest at most this deep in a plan file
MAX_BODY_DEPTH = 4


def _decode_body(ref: Mapping[str, Any], resolve: Callable[[Mapping[str, Any], str], Any], where: str,
                 depth: int) -> Body:
    """A loop body: its graph rebuilt like the outer graph's (every node through its rule),
    its arguments placeholders ``arg<i>`` of the declared types, its outputs of the declared
    types, nothing inside that reads or writes a variable."""
    expect(set(ref) == {"args", "outs", "carry", "xs", "history", "graph"},
           f"{where}: a loop body needs args, outs, carry, xs, history and graph")

    def types(items: Any, what: str) -> list[TensorType]:
        expect(isinstance(items, list) and len(items) <= 4096 and all(isinstance(t, list) and len(t) == 2
                                                                       for t in items),
               f"{where}: the body's {what} must list [shape, dtype] pairs")
        return [TensorType(check_shape(t[0], where), check_dtype(t[1], where)) for t in items]

    args, outs = types(ref["args"], "args"), types(ref["outs"], "outs")
    carry, xs, history = ref["carry"], ref["xs"], ref["history"]
    expect(all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (carry, xs))
           and carry + xs <= len(args) and carry <= len(outs) and isinstance(history, bool),
           f"{where}: bad carry/xs counts for a body of {len(args)} arguments")
    nesting = getattr(_loading, "bodies", 0)
    expect(nesting < MAX_BODY_DEPTH, f"{where}: loop bodies nest more than {MAX_BODY_DEPTH} deep")
    _loading.bodies = nesting + 1
    try:
        graph = decode_graph(ref["graph"], resolve, f"{where} body")
    finally:
        _loading.bodies = nesting
    for node in graph.nodes:
        if node.op == "placeholder":
            name = node.attrs["name"]
            index = int(name[3:]) if name.startswith("arg") and name[3:].isdigit() else -1
            expect(0 <= index < len(args) and node.type == args[index],
                   f"{where}: body argument {name!r} of type {node.type} is not one of its {len(args)} arguments")
        expect(node.op != "variable" and not REGISTRY[node.op].effect and not REGISTRY[node.op].random,
               f"{where}: a loop body cannot hold a {node.op}")
    expect([o.type for o in graph.outputs] == outs, f"{where}: the body's outputs are not of its declared types")
    return Body(args, carry, xs, outs, graph=graph, history=history)


_loading = threading.local()  # how deep in loop bodies this thread's decoding is


def decode_graph(data: Any, resolve: Callable[[Mapping[str, Any], str], Any], what: str) -> Graph:
    """Rebuild a Graph from ``encode_graph``'s records; ``resolve`` maps tensor references to values.

    Raises PlanFileError for anything malformed: an unknown op, an input that is not an
    earlier node (which also rules out cycles), bad attributes, a type the op's shape rule
    disagrees with, or outputs and effects that name no node.
    """
    expect(isinstance(data, dict), f"{what}: expected an object")
    records = data.get("nodes")
    expect(isinstance(records, list) and records, f"{what}: 'nodes' must be a non-empty list")
    nodes: list[Node] = []
    for i, rec in enumerate(records):
        where = f"{what} node {i}"
        expect(isinstance(rec, dict), f"{where}: expected an object")
        op = rec.get("op")
        expect(isinstance(op, str) and op in REGISTRY,
               f"{where}: unknown op {op!r}; only graphnet's registered ops can be loaded")
        inputs = rec.get("inputs")
        expect(isinstance(inputs, list), f"{where}: 'inputs' must be a list")
        for j in inputs:
            expect(isinstance(j, int) and not isinstance(j, bool) and 0 <= j < i,
                   f"{where} ({op}): input {j!r} is not an earlier node (a missing node or a cycle)")
        attrs_in = rec.get("attrs")
        expect(isinstance(attrs_in, dict), f"{where}: 'attrs' must be an object")
        attrs = {check_str(k, where, limit=64): _decode_value(v, resolve, f"{where} ({op}) attribute {k!r}")
                 for k, v in attrs_in.items()}
        if "types" in rec:
            types = rec["types"]
            expect(isinstance(types, list) and 1 <= len(types) <= 4096 and all(isinstance(t, list) and len(t) == 2
                                                                              for t in types),
                   f"{where}: 'types' must list [shape, dtype] pairs")
            stored = TupleType(tuple(TensorType(check_shape(t[0], where), check_dtype(t[1], where)) for t in types))
        else:
            stored = TensorType(check_shape(rec.get("shape"), where), check_dtype(rec.get("dtype"), where))
        role = rec.get("role")
        expect(role in ROLES, f"{where}: role {role!r} is not one of {ROLES}")
        input_nodes = tuple(nodes[j] for j in inputs)
        _check_leaf(op, attrs, where)
        try:
            check_attrs(op, REGISTRY[op].attrs, attrs)
            inferred = REGISTRY[op].infer(*[n.type for n in input_nodes], **attrs)
        except GraphnetError as exc:
            raise PlanFileError(f"{where} ({op}): its inputs or attributes are rejected: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
            raise PlanFileError(f"{where} ({op}): attributes of the wrong type or value: {exc}") from None
        expect(inferred == stored, f"{where} ({op}): stored type {stored} but the op gives {inferred}")
        try:
            frozen = Attrs(attrs)
            hash(frozen)
        except TypeError as exc:
            raise PlanFileError(f"{where} ({op}): attributes are not plain values: {exc}") from None
        nodes.append(Node(op, input_nodes, frozen, stored, name=check_str(rec.get("name"), where, optional=True),
                          location=check_str(rec.get("location", ""), where),
                          scope=check_str(rec.get("scope", ""), where), role=role))
    outputs = data.get("outputs")
    expect(isinstance(outputs, dict) and outputs, f"{what}: 'outputs' must be a non-empty object")
    effects = data.get("effects", [])
    expect(isinstance(effects, list), f"{what}: 'effects' must be a list")
    for ref in list(outputs.values()) + effects:
        expect(isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < len(nodes),
               f"{what}: output or effect {ref!r} names no node")
    for name in outputs:
        check_str(name, f"{what} output name", limit=256)
    return Graph(tuple(nodes[i] for i in outputs.values()), tuple(outputs), tuple(nodes[i] for i in effects),
                 tuple(nodes))


def decode_attrs(data: Any, where: str) -> dict[str, Any]:
    """A schedule step's attributes: plain values only (steps read tensors through buffers)."""
    def no_tensor(ref: Mapping[str, Any], at: str) -> Any:
        raise PlanFileError(f"{at}: a schedule step's attribute cannot hold a tensor")

    expect(isinstance(data, dict), f"{where}: 'attrs' must be an object")
    return {check_str(k, where, limit=64): _decode_value(v, no_tensor, f"{where} attribute {k!r}")
            for k, v in data.items()}


def same_attrs(step: Any, node: Node) -> bool:
    """A step's attributes are its node's, value for value and type for type (``True`` is not ``1``;
    floats bit for bit, so a NaN attribute equals itself and -0.0 is not 0.0)."""
    def typed(value: Any) -> Any:
        if isinstance(value, tuple):
            return ("tuple", tuple(typed(v) for v in value))
        if isinstance(value, float):
            return ("float", value.hex())
        return (type(value).__name__, value)

    if set(step.attrs) != set(node.attrs):
        return False
    return all(typed(step.attrs[k]) == typed(node.attrs[k]) for k in node.attrs)


def _check_leaf(op: str, attrs: dict[str, Any], where: str) -> None:
    """Leaf ops' shape rules only echo their attributes: check those here."""
    if op == "placeholder":
        expect(set(attrs) == {"name", "shape", "dtype"}, f"{where}: a placeholder has name, shape and dtype")
        check_str(attrs["name"], where, limit=256)
        check_shape(list(attrs["shape"]) if isinstance(attrs["shape"], tuple) else attrs["shape"], where)
        check_dtype(attrs["dtype"], where)
    elif op == "variable":
        expect(set(attrs) == {"var", "shape", "dtype"} and isinstance(attrs["var"], Variable),
               f"{where}: a variable node needs a $variable reference, shape and dtype")
        var = attrs["var"]
        expect(attrs["dtype"] == var.data.dtype.name and attrs["shape"] == tuple(var.data.shape),
               f"{where}: parameter {var.name!r} is stored as {var.data.dtype.name}{list(var.data.shape)} but "
               f"the graph declares {attrs['dtype']}{list(attrs['shape']) if isinstance(attrs['shape'], tuple) else attrs['shape']}")
    elif op == "constant":
        expect(set(attrs) == {"value"} and isinstance(attrs["value"], ConstValue),
               f"{where}: a constant node needs a $tensor reference")
