"""Save a compiled plan to one file and load it back: format version 3.

The file is a safetensors file (see docs/plan-format.md). Its tensors are the plan's
variables (``var/<name>``: parameters, buffers, optimizer state, hyperparameters, the step
counter) and the graphs' constants (``const/<graph>/<node>``); its
``__metadata__["graphnet"]`` is a JSON document holding the compiled graph, the graph as
declared, the schedule, the compile options, the optimizer's configuration and the
random-generator state.

Loading trusts nothing in the file: safetensors checks the tensor table (offsets, sizes,
overlaps); the JSON is checked field by field; graphs are rebuilt through each op's
shape rule; the schedule must compute that graph (every node once, inputs before use,
attributes and types as the graph's, effects last and in order; see schedule_check);
every tensor must be declared, of an allowed dtype and the declared shape. Nothing is
unpickled, imported or evaluated.

Version 4 adds the kernel choices the saving executor made (which convolution algorithm
each step ran, on NumPy), so that a loaded plan computes the same bits even where timing or
a later graphnet would choose differently. Version 3 added each pass's notes (the fusion
groups and what was left alone, shown by ``graphnet inspect --report``); version 2 and 3
files still load. Version 1 files
(graphnet 0.1, whose optimizer updates were executor callbacks) are refused with
PlanVersionError: compile the model again and save it.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
import stat
import struct
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from ..version import __version__
from ..dtypes import DTYPES
from ..errors import ExecutorError, GraphnetError, OptimizerError, PlanFileError, PlanVersionError
from ..executors import get_executor
from ..modes import plan_mode
from ..ir import Graph
from ..passes import (
    default_pipeline, dim_constraints, finish_plan, mode_switches, run_to_plan, strip_training, updated_parameters,
)
from ..ops.control import Body
from ..plan import PREFIXES, PassRecord, Plan, Step, VariableSpec, bind_variables
from ..optim import from_config
from ..passes import verify
from ..tensor import VARIABLE_KINDS, ConstValue, Variable
from .atomic import atomic_write, remove_stale_temporaries
from .graph_json import (
    NODE_BODY, check_dtype, check_str, decode_attrs, decode_graph, encode_graph, encode_value, expect, same_attrs,
)
from .schedule_check import check_schedule, decode_buffers, decode_steps

FORMAT = "graphnet-plan"
FORMAT_VERSION = 4
METADATA_KEY = "graphnet"


# --- saving -------------------------------------------------------------------------------------------------------

class _Tensors:
    """The tensor table being written, and stable names for Variables and constants."""

    def __init__(self, plan_variables: Mapping[str, Variable]) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self._var_names = {var.id: name[len(PREFIXES["variable"]):] for name, var in plan_variables.items()}
        self._graph = ""
        self._const_index = 0

    def start_graph(self, name: str) -> None:
        """Constants met from now on are keyed ``const/<name>/<i>``, counting from 0."""
        self._graph, self._const_index = name, 0

    def variable(self, var: Variable) -> dict[str, str]:
        name = self._var_names.get(var.id)
        if name is None:  # a variable only the declared graph reads (a pass removed it)
            base, k = var.name or f"var{var.id}", 1
            name = base
            while name in self.variables or name in self._var_names.values():
                name, k = f"{base}_{k}", k + 1
            self._var_names[var.id] = name
        if name not in self.variables:
            owner = None if var.owner is None else self.variable(var.owner)["$variable"]
            self.variables[name] = {"trainable": bool(var.trainable), "kind": var.kind, "key": var.key,
                                    "owner": owner}
            self.arrays[f"var/{name}"] = np.array(var.data, order="C")
        return {"$variable": name}

    def reference(self, value: Any) -> dict[str, str]:
        if isinstance(value, Variable):
            return self.variable(value)
        key = f"const/{self._graph}/{self._const_index}"
        self._const_index += 1
        self.arrays[key] = np.array(value.array, order="C")
        return {"$tensor": key}


def encode_schedule(plan: Plan, graph: Graph) -> dict[str, Any]:
    """The plan's steps and buffers as JSON values (parameters and constants by name only)."""
    def plain(value: Any) -> Any:
        if isinstance(value, Body):  # the body is stored once, with the step's graph node
            return {"$body": "node"}
        return encode_value(value, _no_tensors)

    index = {node.uid: i for i, node in enumerate(graph.nodes)}
    leaves: dict[str, int] = {}
    var_buffers = {spec.id: name for name, spec in plan.variables.items()}
    constants = iter(name for name, buf in plan.buffers.items() if buf.kind == "constant")
    for node in graph.nodes:
        if node.op == "placeholder":
            leaves[plan.feeds[node.attrs["name"]]] = index[node.uid]
        elif node.op == "variable":
            leaves.setdefault(var_buffers[node.attrs["var"].id], index[node.uid])
        elif node.op == "constant":
            leaves[next(constants)] = index[node.uid]
    return {
        "buffers": [[b.name, plain(b.shape), b.dtype, b.kind] for b in plan.buffers.values()],
        "steps": [[s.op, list(s.inputs), list(s.outputs), {k: plain(v) for k, v in s.attrs.items()}, s.node]
                  for s in plan.steps],
        "leaves": leaves,
        "feeds": dict(plan.feeds),
        "outputs": dict(plan.outputs),
        "release": [list(r) for r in plan.release],
        "first_effect": plan.first_effect,
    }


def _no_tensors(value: Any) -> dict[str, str]:
    raise PlanFileError(f"a plan step holds a tensor attribute ({value!r}); steps read tensors through buffers")


def _inference_view(compiled: Any, outputs: Sequence[str] | None) -> tuple[Plan, Graph, Graph]:
    """The forward-only plan: ``outputs`` (by default every output but a training plan's loss),
    compiled again from the declared graph in eval mode, without gradients, updates,
    running-statistic writes or optimizer state."""
    source = compiled.source
    if outputs is None:
        skip = source.output_names[:1] if compiled.plan.trainable else ()
        outputs = [n for n in source.output_names if n not in skip]
        if not outputs:
            raise PlanFileError("the training plan outputs only its loss: name the outputs an inference plan "
                                "keeps, e.g. plan.save(path, outputs=['logits']) after compiling them with the loss")
    kept = strip_training(source, outputs)
    mode = "eval"
    graph, plan, records = run_to_plan(kept, default_pipeline(None, mode))
    plan = finish_plan(plan, records, mode=plan_mode(mode_switches(kept), mode), dims=dim_constraints(kept, mode))
    return plan, graph, kept


def plan_bytes(compiled: Any, *, inference: bool = False, outputs: Sequence[str] | None = None) -> bytes:
    """The bytes of the plan file for ``compiled`` (see :func:`save_plan`)."""
    from safetensors.numpy import save

    if inference or outputs is not None:
        plan, graph, source = _inference_view(compiled, outputs)
        optimizer = None
    else:
        plan, graph, source = compiled.plan, compiled.graph, compiled.source
        optimizer = compiled.optimizer
    bound = bind_variables(plan, graph)
    tensors = _Tensors(bound)
    for var in bound.values():  # every variable of the plan, even one only the schedule names
        tensors.variable(var)
    tensors.start_graph("graph")
    graph_json = encode_graph(graph, tensors.reference)
    tensors.start_graph("source")
    source_json = encode_graph(source, tensors.reference)
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "graphnet_version": __version__,
        "kind": "training" if plan.trainable else "inference",
        "compile": {"executor": compiled.executor.name, "check_numerics": bool(compiled.executor.check_numerics),
                    "seed": compiled.executor.seed},
        "variables": tensors.variables,
        "graph": graph_json,
        "source": source_json,
        "schedule": encode_schedule(plan, graph),
        "passes": [[r.name, r.nodes_before, r.nodes_after, r.seconds, list(r.notes)] for r in plan.passes],
        "optimizer": None if optimizer is None else {
            "name": optimizer.name, "hyper": optimizer.hyperparams(), "structure": optimizer.structure()},
        "rng": None if optimizer is None and inference else compiled.executor.get_rng_state(),
        "mode": plan.mode,
        # the training executor's choices serve an inference view too: its convolutions' keys
        # (op, shapes, dtype, attributes) are the forward ones the training plan ran
        "kernel_choices": {"executor": compiled.executor.name, "choices": compiled.executor.kernel_choices()},
    }
    try:
        text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PlanFileError(f"the plan cannot be stored as JSON: {exc}") from None
    return save(tensors.arrays, metadata={METADATA_KEY: text})


def save_plan(compiled: Any, path: str | os.PathLike[str], *, inference: bool = False,
              outputs: Sequence[str] | None = None) -> str:
    """Save ``compiled`` to ``path``, atomically; returns the path.

    The file holds the graph, the compiled schedule, the parameters, the optimizer state
    and step counters, and the compile options, so that ``load`` continues training
    exactly where this plan stopped. ``inference=True`` (or naming ``outputs`` to keep)
    writes a forward-only plan instead: no gradients, no updates, no optimizer state.
    """
    return atomic_write(path, plan_bytes(compiled, inference=inference, outputs=outputs))


# --- loading ------------------------------------------------------------------------------------------------------

def _read(path: str) -> bytes:
    """The file's bytes, read into memory (never memory-mapped: a file rewritten while it loads
    must give PlanFileError, not SIGBUS); FIFOs and devices are refused without blocking."""
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise PlanFileError(f"cannot read plan file {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise PlanFileError(f"{path!r} is a folder, not a plan file")
    if not stat.S_ISREG(info.st_mode):
        raise PlanFileError(f"{path!r} is not a regular file (a device, pipe or socket)")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise PlanFileError(f"cannot read plan file {path!r}: {exc.strerror or exc}") from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise PlanFileError(f"{path!r} is not a regular file (a device, pipe or socket)")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 24)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > before.st_size:
                break
        after = os.fstat(fd)
    except OSError as exc:
        raise PlanFileError(f"cannot read plan file {path!r}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise PlanFileError(f"{path!r} changed while it was being read; load it again once it is written")
    return data


def _open(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """The header and tensors of a plan file, after safetensors' own checks."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = os.fspath(path)
    data = _read(path)
    remove_stale_temporaries(path)
    if len(data) < 8:
        raise PlanFileError(f"plan file {path!r} is {'empty' if not data else 'truncated'} ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    expect(size <= len(data) - 8, f"{path!r} is not a valid plan file (its header length runs past the end)")
    try:
        table = json.loads(data[8:8 + size])
    except (ValueError, RecursionError) as exc:
        raise PlanFileError(f"{path!r} is not a valid plan file (its tensor table is not JSON: {exc})") from None
    expect(isinstance(table, dict), f"{path!r} is not a valid plan file (its tensor table is not an object)")
    metadata = table.get("__metadata__") or {}
    expect(isinstance(metadata, dict), f"{path!r} is not a valid plan file (bad metadata)")
    try:
        tensors = dict(load(data))
    except (SafetensorError, OSError, ValueError, TypeError, OverflowError) as exc:
        raise PlanFileError(f"{path!r} is not a valid plan file (its tensor table is malformed: {exc})") from None
    size_of_file = len(data)
    text = metadata.get(METADATA_KEY)
    expect(isinstance(text, str), f"{path!r} is a safetensors file but not a graphnet plan (no plan header)")

    def no_constants(token: str) -> Any:
        raise PlanFileError(f"{path!r}: the plan header holds the non-JSON value {token}")

    try:
        header = json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise PlanFileError(f"{path!r}: the plan header is not valid JSON: {exc}") from None
    expect(isinstance(header, dict), f"{path!r}: the plan header must be a JSON object")
    return header, tensors, size_of_file


_HEADER_FIELDS = {"format", "version", "graphnet_version", "kind", "compile", "variables", "graph", "source",
                  "schedule", "passes", "optimizer", "rng", "mode", "kernel_choices"}

#: at most this many kernel choices in a file (a plan has one per convolution step and shape)
MAX_KERNEL_CHOICES = 4096


def _check_version(header: Mapping[str, Any], path: str) -> None:
    expect(header.get("format") == FORMAT, f"{path!r}: not a graphnet plan (format {header.get('format')!r})")
    version = header.get("version")
    expect(isinstance(version, int) and not isinstance(version, bool), f"{path!r}: the format version is missing")
    if version > FORMAT_VERSION:
        raise PlanVersionError(
            f"{path!r} was written in plan format version {version} (by graphnet "
            f"{header.get('graphnet_version', '?')}); this graphnet ({__version__}) reads format versions up to "
            f"{FORMAT_VERSION}: upgrade graphnet to load it")
    if version == 1:
        raise PlanVersionError(
            f"{path!r} was written in plan format version 1 (graphnet {header.get('graphnet_version', '?')}), "
            f"whose optimizer updates ran outside the plan; graphnet {__version__} reads version {FORMAT_VERSION} "
            f"only: compile the model again with this graphnet and save it")
    if version < 1:
        raise PlanVersionError(f"{path!r} has format version {version}, which no graphnet release wrote; "
                               f"version 1 is the first")


def _variables(header: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> dict[str, Variable]:
    declared = header.get("variables")
    expect(isinstance(declared, dict), "'variables' must be an object")
    variables: dict[str, Variable] = {}
    for name, spec in declared.items():
        check_str(name, "variable name", limit=512)
        expect(isinstance(spec, dict) and isinstance(spec.get("trainable"), bool) and spec.get("kind") in VARIABLE_KINDS,
               f"variable {name!r}: expected {{'trainable': true|false, 'kind': one of {VARIABLE_KINDS}, ...}}")
        expect(spec["trainable"] == (spec["kind"] == "parameter"), f"variable {name!r}: only parameters train")
        key = check_str(spec.get("key"), f"variable {name!r} key", optional=True, limit=64)
        array = tensors.get(f"var/{name}")
        expect(array is not None, f"variable {name!r} is declared but its values are missing")
        check_dtype(array.dtype.name, f"variable {name!r}")
        variables[name] = Variable(np.array(array, copy=True), name, spec["trainable"], kind=spec["kind"], key=key)
    for name, spec in declared.items():
        owner = spec.get("owner")
        if spec["kind"] == "optimizer_state":
            expect(isinstance(owner, str) and owner in variables and variables[owner].kind == "parameter",
                   f"optimizer state {name!r} must name the parameter it belongs to")
            variables[name].owner = variables[owner]
        else:
            expect(owner is None, f"variable {name!r}: only optimizer state has an owner")
    return variables


def _check_tensor_keys(header: Mapping[str, Any], tensors: Mapping[str, np.ndarray], used: set[str]) -> None:
    expected = set(used) | {f"var/{n}" for n in header["variables"]}
    extra = sorted(set(tensors) - expected)
    missing = sorted(expected - set(tensors))
    expect(not missing, f"tensors missing from the file: {missing[:5]}")
    expect(not extra, f"the file holds tensors no part of the plan uses: {extra[:5]}")
    for key, array in tensors.items():
        expect(array.dtype.name in DTYPES, f"tensor {key!r} has dtype {array.dtype.name}, not one graphnet allows")


def _optimizer(header: Mapping[str, Any], plan: Plan, bound: Mapping[str, Variable]) -> Any:
    spec = header.get("optimizer")
    if not plan.trainable:
        expect(spec is None, "an inference plan must not carry an optimizer")
        return None
    expect(isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("hyper"), dict),
           "a training plan needs its optimizer's name and hyperparameters")
    try:
        names = {var.name: var for var in bound.values() if var.kind == "parameter"}
        optimizer = from_config(spec["name"], spec["hyper"], names)
    except OptimizerError as exc:
        raise PlanFileError(f"the plan's optimizer cannot be rebuilt: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise PlanFileError(f"the plan's optimizer has bad hyperparameters: {exc}") from None
    expect(spec.get("structure") == optimizer.structure(),
           "the optimizer's settings do not match the update compiled into the plan")
    hyper = {var.key for var in plan.variables_of_kind("hyper").values()}
    expect(hyper <= set(optimizer.numeric_hyperparams()), "the plan reads hyperparameters its optimizer lacks")
    return optimizer


def _passes(value: Any, version: int) -> list[PassRecord]:
    expect(isinstance(value, list), "'passes' must be a list")
    records = []
    for item in value:
        expect(isinstance(item, list) and len(item) == (4 if version < 3 else 5) and isinstance(item[0], str)
               and all(isinstance(v, int) and not isinstance(v, bool) for v in item[1:3])
               and isinstance(item[3], (int, float)) and not isinstance(item[3], bool),
               f"bad pass record {str(item)[:200]}")
        records.append(PassRecord(check_str(item[0], "pass name", limit=64), item[1], item[2], float(item[3]),
                                  _notes(item[4]) if version >= 3 else ()))
    return records


#: The shapes a pass's notes may take (see graphnet.passes.fuse.explain): key -> value kinds.
_NOTE_SHAPES = ({"group": "str", "members": "pairs"}, {"not_fused": "str", "at": "str", "why": "str"})


def _notes(value: Any) -> tuple[dict[str, Any], ...]:
    """A pass's notes, which are only ever displayed: plain strings in known shapes."""
    expect(isinstance(value, list), "a pass's notes must be a list")
    notes = []
    for note in value:
        shape = next((s for s in _NOTE_SHAPES if isinstance(note, dict) and set(note) == set(s)), None)
        expect(shape is not None, f"bad pass note {str(note)[:200]}")
        for key, kind in shape.items():
            if kind == "str":
                check_str(note[key], f"pass note {key!r}")
            else:
                expect(isinstance(note[key], list) and all(isinstance(p, list) and len(p) == 2 for p in note[key]),
                       f"pass note {key!r} must be a list of pairs")
                for pair in note[key]:
                    check_str(pair[0], "pass note member")
                    check_str(pair[1], "pass note member")
        notes.append(note)
    return tuple(notes)


class LoadedPlan(NamedTuple):
    """What a plan file holds, checked and bound to an executor (``gn.load`` wraps it in a
    CompiledPlan that continues exactly where the saved one stopped)."""

    plan: Plan
    graph: Graph
    executor: Any
    optimizer: Any
    source: Graph


def load_parts(path: str | os.PathLike[str], executor: str = "numpy") -> LoadedPlan:
    """Read and check a plan file and bind its plan to ``executor``. Raises PlanFileError
    (PlanVersionError for a format it cannot read) for anything wrong with the file;
    nothing from the file is run."""
    return _load(path, executor)[0]


def _load(path: str | os.PathLike[str], executor: str) -> tuple[LoadedPlan, dict[str, Any], int]:
    """The loaded plan, with the file's header and size (what ``file_summary`` reports)."""
    executor_cls = get_executor(executor)
    path = os.fspath(path)
    header, tensors, size = _open(path)
    _check_version(header, path)
    try:
        return _build(header, tensors, executor_cls), header, size
    except PlanFileError as exc:
        raise type(exc)(f"{path!r}: {exc}") from None
    except RecursionError:
        raise PlanFileError(f"{path!r}: the plan nests too deeply") from None
    except GraphnetError as exc:
        raise PlanFileError(f"{path!r}: the plan is inconsistent: {exc}") from None


def _build(header: Mapping[str, Any], tensors: Mapping[str, np.ndarray], executor_cls: Any) -> Any:
    unknown = sorted(set(header) - _HEADER_FIELDS)
    if unknown:
        raise PlanFileError(f"unknown header field {str(unknown[0])[:64]!r}")
    expect(header.get("kind") in ("training", "inference"), f"bad plan kind {str(header.get('kind'))[:32]!r}")
    variables = _variables(header, tensors)
    used: set[str] = set()

    def resolve(ref: Mapping[str, str], where: str) -> Any:
        (tag, key), = ref.items()
        if tag == "$variable":
            expect(key in variables, f"{where}: variable {key!r} is not declared")
            return variables[key]
        expect(key.startswith("const/") and key in tensors, f"{where}: constant tensor {key!r} is missing")
        used.add(key)
        return ConstValue(tensors[key])

    graph = decode_graph(header.get("graph"), resolve, "graph")
    source = decode_graph(header.get("source"), resolve, "source graph")
    _check_tensor_keys(header, tensors, used)
    verify(graph)
    verify(source)  # render --passes replays it into autodiff
    stored = _plan(header.get("schedule"), graph, variables)
    mode = header.get("mode")
    expect(mode in (None, "train", "eval", "mixed"), f"bad plan mode {str(mode)[:32]!r}")
    optimizer = _optimizer(header, stored, bind_variables(stored, graph))
    if optimizer is not None:  # the parameters the plan does not train were frozen when it was compiled
        updated = updated_parameters(graph)
        for var in variables.values():
            if var.kind == "parameter" and var.id not in updated:
                var.requires_grad = False
    described = None if optimizer is None else {"name": optimizer.name, "hyper": optimizer.hyperparams(),
                                                 "structure": optimizer.structure()}
    # which updates run flat, and where values are written, are derived, not stored: the plan
    # passes that derive them run again on the checked steps
    plan = finish_plan(stored, _passes(header.get("passes", []), header["version"]), mode=mode,
                       dims=dim_constraints(source), optimizer=described, derive=True)
    options = header.get("compile")
    expect(isinstance(options, dict), "'compile' must be an object")
    seed, check_numerics = options.get("seed"), options.get("check_numerics", False)
    expect(seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2 ** 64),
           f"bad seed {seed!r}")
    expect(isinstance(check_numerics, bool), "check_numerics must be true or false")
    try:
        executor = executor_cls(plan, seed, check_numerics, variables=bind_variables(plan, graph))
        if header.get("rng") is not None:
            executor.set_rng_state(header["rng"])
        saved_by, choices = _kernel_choices(header.get("kernel_choices"))
        if saved_by == executor.name:  # another backend's choices name kernels this one lacks
            executor.use_kernel_choices(choices)
    except ExecutorError as exc:
        raise PlanFileError(f"the saved state does not fit the plan: {exc}") from None
    return LoadedPlan(plan, graph, executor, optimizer, source)


def _with_node_body(step: Step, graph: Graph, index: int) -> Step:
    """A loop or branch step's bodies are its node's (stored once, with the node)."""
    keys = [k for k, v in step.attrs.items() if isinstance(v, str) and v == NODE_BODY]
    if not keys:
        return step
    node = graph.nodes[step.node] if 0 <= step.node < len(graph.nodes) else None
    expect(node is not None and all(isinstance(node.attrs.get(k), Body) for k in keys),
           f"schedule step {index}: its body names no loop or branch node")
    return replace(step, attrs={**step.attrs, **{k: node.attrs[k] for k in keys}})


def _kernel_choices(value: Any) -> tuple[str | None, dict[str, str]]:
    """The executor that saved the plan and its kernel choices (``{}`` before version 4)."""
    if value is None:
        return None, {}
    expect(isinstance(value, dict) and set(value) == {"executor", "choices"},
           "'kernel_choices' must be {\"executor\": name, \"choices\": {key: kernel}}")
    executor = check_str(value["executor"], "kernel_choices executor", limit=64)
    choices = value["choices"]
    expect(isinstance(choices, dict) and len(choices) <= MAX_KERNEL_CHOICES,
           f"'kernel_choices' must map at most {MAX_KERNEL_CHOICES} keys to kernel names")
    for key, name in choices.items():
        check_str(key, "kernel choice key", limit=1024)
        check_str(name, "kernel choice", limit=64)
    return executor, choices


def _plan(data: Any, graph: Graph, variables: Mapping[str, Variable]) -> Plan:
    """The stored schedule as a Plan, after checking that it computes ``graph``."""
    expect(isinstance(data, dict), "'schedule' must be an object")
    buffers = decode_buffers(data.get("buffers"))
    steps = [_with_node_body(step, graph, i) for i, step in enumerate(decode_steps(data.get("steps"), decode_attrs))]
    feeds, outputs, leaves = data.get("feeds"), data.get("outputs"), data.get("leaves")
    for what, mapping, kind in (("feeds", feeds, str), ("outputs", outputs, str), ("leaves", leaves, int)):
        expect(isinstance(mapping, dict) and all(isinstance(v, kind) and not isinstance(v, bool)
                                                 for v in mapping.values()),
               f"schedule: '{what}' must map names to {'buffer names' if kind is str else 'node indices'}")
    release = data.get("release")
    expect(isinstance(release, list) and len(release) == len(steps)
           and all(isinstance(r, list) and all(isinstance(n, str) for n in r) for r in release),
           "schedule: 'release' must hold one list of buffer names per step")
    first_effect = data.get("first_effect")
    expect(isinstance(first_effect, int) and not isinstance(first_effect, bool), "schedule: bad 'first_effect'")
    release_t = [tuple(r) for r in release]
    check_schedule(graph, buffers, steps, feeds, outputs, leaves, first_effect, release_t, same_attrs)
    plan_variables: dict[str, Variable] = {}
    constants: dict[str, np.ndarray] = {}
    for name, index in leaves.items():
        node = graph.nodes[index]
        if node.op == "variable":
            var = node.attrs["var"]
            expect(name == PREFIXES["variable"] + (var.name or ""), f"variable buffer {name!r} holds {var.name!r}")
            plan_variables[name] = VariableSpec.of(var)
        elif node.op == "constant":
            constants[name] = node.attrs["value"].array
    declared = {var.id for var in variables.values()}
    expect(all(spec.id in declared for spec in plan_variables.values()), "the schedule reads undeclared variables")
    return Plan(buffers, steps, dict(feeds), dict(outputs), constants, plan_variables, release_t, first_effect)


def file_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``graphnet inspect`` prints: version, kind, feeds, outputs, parameters, op counts, size."""
    loaded, header, size = _load(path, "numpy")
    plan, backend, bound = loaded.plan, type(loaded.executor), loaded.executor.variables
    return {
        "path": os.fspath(path), "format_version": header["version"],
        "graphnet_version": header.get("graphnet_version"), "kind": header["kind"], "bytes": size,
        "executor": header["compile"].get("executor"),
        "inputs": {name: _spec(plan.buffers[buf]) for name, buf in plan.feeds.items()},
        "outputs": {name: _spec(plan.buffers[buf]) for name, buf in plan.outputs.items()},
        "parameters": {name[len(PREFIXES["variable"]):]: {"shape": list(var.data.shape), "dtype": var.data.dtype.name,
                              "trainable": var.trainable, "kind": var.kind}
                       for name, var in bound.items() if var.kind in ("parameter", "buffer")},
        "parameter_count": int(sum(var.data.size for var in bound.values() if var.kind in ("parameter", "buffer"))),
        "optimizer": None if loaded.optimizer is None else {"name": loaded.optimizer.name,
                                                              "hyper": loaded.optimizer.hyperparams()},
        "step_count": sum(int(bound[name].data) for name in plan.variables_of_kind("step")),
        "steps": len(plan.steps),
        "op_counts": plan.op_counts(),
        "memory_at_batch_1": backend.peak_bytes(plan, {name: tuple(1 if not isinstance(d, int) else d
                                                           for d in plan.buffers[buf].shape)
                                               for name, buf in plan.feeds.items()}),
        "peak_memory": dict(zip(("bytes", "bytes_per_batch_item"), backend.peak_formula(plan))),
    }


def _spec(buffer: Any) -> dict[str, Any]:
    return {"shape": list(buffer.shape), "dtype": buffer.dtype}

