"""Save a compiled plan to one file and load it back: format version 1.

The file is a safetensors file (see docs/plan-format.md). Its tensors are the parameters
(``param/<name>``), the optimizer state (``state/<param>/<slot>``) and the graphs'
constants (``const/<graph>/<node>``); its ``__metadata__["graphnet"]`` is a JSON document
holding the compiled graph, the graph as declared, the schedule, the compile options, the
optimizer's configuration and the step counters.

Loading trusts nothing in the file: safetensors checks the tensor table (offsets, sizes,
overlaps); the JSON is checked field by field; graphs are rebuilt through each op's
shape rule; the schedule must equal the one lowered from the rebuilt graph; every
tensor must be declared, of an allowed dtype and the declared shape. Nothing is
unpickled, imported or evaluated.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Mapping, Sequence

import numpy as np

from .. import __version__
from ..dtypes import DTYPES
from ..errors import ExecutorError, GraphnetError, OptimizerError, PlanFileError, PlanVersionError
from ..executors import get_executor
from ..ir import Graph
from ..passes import lower, schedule, strip_training
from ..plan import PassRecord, Plan
from ..tensor import ConstValue, Variable
from .atomic import atomic_write
from .graph_json import check_dtype, check_str, decode_graph, encode_graph, encode_value, expect

FORMAT = "graphnet-plan"
FORMAT_VERSION = 1
METADATA_KEY = "graphnet"


# --- saving -------------------------------------------------------------------------------------------------------

class _Tensors:
    """The tensor table being written, and stable names for Variables and constants."""

    def __init__(self, plan_variables: Mapping[str, Variable]) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self._var_names = {var.id: name for name, var in plan_variables.items()}
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
            self.variables[name] = {"trainable": bool(var.trainable)}
            self.arrays[f"param/{name}"] = np.array(var.data, order="C")
        return {"$variable": name}

    def reference(self, value: Any) -> dict[str, str]:
        if isinstance(value, Variable):
            return self.variable(value)
        key = f"const/{self._graph}/{self._const_index}"
        self._const_index += 1
        self.arrays[key] = np.array(value.array, order="C")
        return {"$tensor": key}


def encode_schedule(plan: Plan) -> dict[str, Any]:
    """The plan's steps and buffers as JSON values (parameters and constants by name only)."""
    def plain(value: Any) -> Any:
        return encode_value(value, _no_tensors)

    return {
        "buffers": [[b.name, plain(b.shape), b.dtype, b.kind] for b in plan.buffers.values()],
        "steps": [[s.op, list(s.inputs), s.output, {k: plain(v) for k, v in s.attrs.items()}] for s in plan.steps],
        "feeds": dict(plan.feeds),
        "outputs": dict(plan.outputs),
        "release": [list(r) for r in plan.release],
    }


def _no_tensors(value: Any) -> dict[str, str]:
    raise PlanFileError(f"a plan step holds a tensor attribute ({value!r}); steps read tensors through buffers")


def _inference_view(compiled: Any, outputs: Sequence[str] | None) -> tuple[Plan, Graph, Graph]:
    graph = schedule(strip_training(compiled.graph, outputs))
    plan = lower(graph)
    plan.passes = list(compiled.plan.passes) + [PassRecord("strip_training", len(compiled.graph.nodes),
                                                           len(graph.nodes), 0.0)]
    source = compiled.source
    keep = [n for n in (outputs or source.output_names) if n in source.output_names] or None
    return plan, graph, strip_training(source, keep) if keep else graph


def plan_bytes(compiled: Any, *, inference: bool = False, outputs: Sequence[str] | None = None) -> bytes:
    """The bytes of the plan file for ``compiled`` (see :func:`save_plan`)."""
    from safetensors.numpy import save

    if inference or outputs is not None:
        plan, graph, source = _inference_view(compiled, outputs)
        optimizer, state = None, {"step_count": compiled.executor.step_count, "rng": None, "optimizer": {}}
    else:
        plan, graph, source = compiled.plan, compiled.graph, compiled.source
        optimizer, state = compiled.optimizer, compiled.executor.get_state()
    tensors = _Tensors(plan.variables)
    tensors.start_graph("graph")
    graph_json = encode_graph(graph, tensors.reference)
    tensors.start_graph("source")
    source_json = encode_graph(source, tensors.reference)
    for param, slots in state["optimizer"].items():
        for slot, value in slots.items():
            tensors.arrays[f"state/{param}/{slot}"] = value
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
        "schedule": encode_schedule(plan),
        "passes": [[r.name, r.nodes_before, r.nodes_after, r.seconds] for r in plan.passes],
        "optimizer": None if optimizer is None else {
            "name": optimizer.name, "hyper": optimizer.hyperparams(),
            "state": {param: sorted(slots) for param, slots in state["optimizer"].items()}},
        "step_count": int(state["step_count"]),
        "rng": state["rng"],
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

def _open(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """The header and tensors of a plan file, after safetensors' own checks."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise PlanFileError(f"cannot read plan file {path!r}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise PlanFileError(f"{path!r} is a folder, not a plan file")
    if not stat.S_ISREG(info.st_mode):
        raise PlanFileError(f"{path!r} is not a regular file (a device, pipe or socket)")
    if info.st_size < 8:
        raise PlanFileError(f"plan file {path!r} is {'empty' if info.st_size == 0 else 'truncated'} "
                            f"({info.st_size} bytes)")
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise PlanFileError(f"{path!r} is not a valid plan file (its tensor table is malformed: {exc})") from None
    text = metadata.get(METADATA_KEY)
    expect(isinstance(text, str), f"{path!r} is a safetensors file but not a graphnet plan (no plan header)")

    def no_constants(token: str) -> Any:
        raise PlanFileError(f"{path!r}: the plan header holds the non-JSON value {token}")

    try:
        header = json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise PlanFileError(f"{path!r}: the plan header is not valid JSON: {exc}") from None
    expect(isinstance(header, dict), f"{path!r}: the plan header must be a JSON object")
    return header, tensors, info.st_size


def _check_version(header: Mapping[str, Any], path: str) -> None:
    expect(header.get("format") == FORMAT, f"{path!r}: not a graphnet plan (format {header.get('format')!r})")
    version = header.get("version")
    expect(isinstance(version, int) and not isinstance(version, bool), f"{path!r}: the format version is missing")
    if version > FORMAT_VERSION:
        raise PlanVersionError(
            f"{path!r} was written in plan format version {version} (by graphnet "
            f"{header.get('graphnet_version', '?')}); this graphnet ({__version__}) reads format versions up to "
            f"{FORMAT_VERSION}: upgrade graphnet to load it")
    if version < 1:
        raise PlanVersionError(f"{path!r} has format version {version}, which no graphnet release wrote; "
                               f"version 1 is the first")


def _variables(header: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> dict[str, Variable]:
    declared = header.get("variables")
    expect(isinstance(declared, dict), "'variables' must be an object")
    variables = {}
    for name, spec in declared.items():
        check_str(name, "parameter name", limit=512)
        expect(isinstance(spec, dict) and isinstance(spec.get("trainable"), bool),
               f"parameter {name!r}: expected {{'trainable': true|false}}")
        array = tensors.get(f"param/{name}")
        expect(array is not None, f"parameter {name!r} is declared but its values are missing")
        check_dtype(array.dtype.name, f"parameter {name!r}")
        variables[name] = Variable(np.array(array, copy=True), name, spec["trainable"])
    return variables


def _check_tensor_keys(header: Mapping[str, Any], tensors: Mapping[str, np.ndarray], used: set[str]) -> None:
    expected = set(used) | {f"param/{n}" for n in header["variables"]}
    opt = header.get("optimizer") or {}
    for param, slots in (opt.get("state") or {}).items():
        expected |= {f"state/{param}/{slot}" for slot in slots}
    extra = sorted(set(tensors) - expected)
    missing = sorted(expected - set(tensors))
    expect(not missing, f"tensors missing from the file: {missing[:5]}")
    expect(not extra, f"the file holds tensors no part of the plan uses: {extra[:5]}")
    for key, array in tensors.items():
        expect(array.dtype.name in DTYPES, f"tensor {key!r} has dtype {array.dtype.name}, not one graphnet allows")


def _optimizer(header: Mapping[str, Any], plan: Plan) -> Any:
    from ..optim import from_config

    spec = header.get("optimizer")
    if not plan.trainable:
        expect(spec is None, "an inference plan must not carry an optimizer")
        return None
    expect(isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("hyper"), dict),
           "a training plan needs its optimizer's name and hyperparameters")
    try:
        return from_config(spec["name"], spec["hyper"])
    except OptimizerError as exc:
        raise PlanFileError(f"the plan's optimizer cannot be rebuilt: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise PlanFileError(f"the plan's optimizer has bad hyperparameters: {exc}") from None


def _passes(value: Any) -> list[PassRecord]:
    expect(isinstance(value, list), "'passes' must be a list")
    records = []
    for item in value:
        expect(isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)
               and all(isinstance(v, int) and not isinstance(v, bool) for v in item[1:3])
               and isinstance(item[3], (int, float)) and not isinstance(item[3], bool),
               f"bad pass record {item!r}")
        records.append(PassRecord(item[0], item[1], item[2], float(item[3])))
    return records


def load_plan(path: str | os.PathLike[str], executor: str = "numpy") -> Any:
    """Load a plan saved by ``CompiledPlan.save`` and bind it to ``executor``.

    Returns a ``CompiledPlan`` that continues exactly where the saved one stopped (its
    parameters, optimizer state, step counter and random state). Raises PlanFileError
    (PlanVersionError for a newer format) for anything wrong with the file; nothing from
    the file is run.
    """
    return _load(path, executor)[0]


def _load(path: str | os.PathLike[str], executor: str) -> tuple[Any, dict[str, Any], int]:
    """The loaded plan, with the file's header and size (what ``file_summary`` reports)."""
    from ..compile import CompiledPlan

    executor_cls = get_executor(executor)
    path = os.fspath(path)
    header, tensors, size = _open(path)
    _check_version(header, path)
    try:
        return _build(header, tensors, executor_cls, CompiledPlan), header, size
    except PlanFileError as exc:
        raise type(exc)(f"{path!r}: {exc}") from None
    except RecursionError:
        raise PlanFileError(f"{path!r}: the plan nests too deeply") from None
    except GraphnetError as exc:
        raise PlanFileError(f"{path!r}: the plan is inconsistent: {exc}") from None


def _build(header: Mapping[str, Any], tensors: Mapping[str, np.ndarray], executor_cls: Any, compiled_cls: Any) -> Any:
    variables = _variables(header, tensors)
    used: set[str] = set()

    def resolve(ref: Mapping[str, str], where: str) -> Any:
        (tag, key), = ref.items()
        if tag == "$variable":
            expect(key in variables, f"{where}: parameter {key!r} is not declared")
            return variables[key]
        expect(key.startswith("const/") and key in tensors, f"{where}: constant tensor {key!r} is missing")
        used.add(key)
        return ConstValue(tensors[key])

    graph = decode_graph(header.get("graph"), resolve, "graph")
    source = decode_graph(header.get("source"), resolve, "source graph")
    _check_tensor_keys(header, tensors, used)
    plan = lower(graph)
    expect(encode_schedule(plan) == header.get("schedule"),
           "the stored schedule differs from the one its graph lowers to (the file was altered)")
    expect(set(plan.variables) <= set(variables), "the schedule reads parameters the file does not declare")
    plan.variables = {name: variables[name] for name in plan.variables}
    plan.passes = _passes(header.get("passes", []))
    optimizer = _optimizer(header, plan)
    if optimizer is not None:
        plan.optimizer = {"name": optimizer.name, "hyper": optimizer.hyperparams()}
    options = header.get("compile")
    expect(isinstance(options, dict), "'compile' must be an object")
    seed, check_numerics = options.get("seed"), options.get("check_numerics", False)
    expect(seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2 ** 64),
           f"bad seed {seed!r}")
    expect(isinstance(check_numerics, bool), "check_numerics must be true or false")
    step_count = header.get("step_count", 0)
    expect(isinstance(step_count, int) and not isinstance(step_count, bool) and 0 <= step_count < 2 ** 62,
           f"bad step count {step_count!r}")
    spec = header.get("optimizer") or {}
    state_names = spec.get("state", {}) if optimizer is not None else {}
    expect(isinstance(state_names, dict), "the optimizer's 'state' must be an object")
    state = {param: {slot: tensors[f"state/{param}/{slot}"] for slot in slots}
             for param, slots in state_names.items() if isinstance(slots, list)}
    expect(len(state) == len(state_names), "the optimizer's state lists must be lists of slot names")
    try:
        executor = executor_cls(plan, optimizer, seed, check_numerics)
        executor.set_state(step_count, header.get("rng"), state)
    except ExecutorError as exc:
        raise PlanFileError(f"the saved state does not fit the plan: {exc}") from None
    return compiled_cls(plan, graph, executor, optimizer, source)


def file_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``graphnet inspect`` prints: version, kind, feeds, outputs, parameters, op counts, size."""
    compiled, header, size = _load(path, "numpy")
    plan = compiled.plan
    return {
        "path": os.fspath(path), "format_version": header["version"],
        "graphnet_version": header.get("graphnet_version"), "kind": header["kind"], "bytes": size,
        "executor": header["compile"].get("executor"),
        "inputs": {name: _spec(plan.buffers[buf]) for name, buf in plan.feeds.items()},
        "outputs": {name: _spec(plan.buffers[buf]) for name, buf in plan.outputs.items()},
        "parameters": {name: {"shape": list(var.data.shape), "dtype": var.data.dtype.name,
                              "trainable": var.trainable} for name, var in plan.variables.items()},
        "parameter_count": int(sum(var.data.size for var in plan.variables.values())),
        "optimizer": None if compiled.optimizer is None else {"name": compiled.optimizer.name,
                                                                "hyper": compiled.optimizer.hyperparams()},
        "step_count": compiled.step_count,
        "steps": len(plan.steps),
        "op_counts": plan.op_counts(),
    }


def _spec(buffer: Any) -> dict[str, Any]:
    return {"shape": list(buffer.shape), "dtype": buffer.dtype}
