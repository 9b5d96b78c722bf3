"""Structural and byte-wise mutations of plan files, and the harness that loads and runs them.

Used by tests/test_hostile.py (a few thousand mutants) and scripts/fuzz_plans.py (any
number). A mutant must load or raise a GraphnetError; one that loads must run on a small
feed or raise a GraphnetError; nothing may hang, write into the feeds, or trigger an audit
event that executes code, starts a process, opens a socket or opens a file for writing.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import struct
import sys
import time
from typing import Any, Callable, Iterator

import numpy as np

import graphnet as gn

_FORBIDDEN = ("exec", "compile", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
              "socket.connect", "socket.bind", "ctypes.dlopen", "import", "pickle.find_class", "marshal.loads")
_watch: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if not _watch:
        return
    if event.startswith(_FORBIDDEN):
        _watch[-1].append(event)
    elif event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        _watch[-1].append(f"open for write: {args[0]!r}")


sys.addaudithook(_audit)


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def join(table: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(table).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


# --- mutations ---------------------------------------------------------------------------------------------------

_ODD_VALUES: list[Any] = [None, True, False, 0, 1, -1, 2, 2 ** 33, 2 ** 63, -2 ** 63, 10 ** 40, 0.5, -0.0, 1e308,
                          "", "x", "\ud800", "../../etc/passwd", [], [0], [[1, 2]], {}, {"$variable": "nope"},
                          {"$tensor": "const/graph/0"}, {"$float": "nan"}, {"$mode": {}}, [None, None], "float64"]


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _get(root: Any, path: tuple) -> Any:
    for key in path:
        root = root[key]
    return root


def mutate_header(header: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One structural edit: a value replaced, a key dropped or duplicated, a list reordered,
    an input rewired, an attribute added, or two values swapped."""
    header = json.loads(json.dumps(header))
    paths = [p for p in _paths(header) if p]
    path = rng.choice(paths)
    parent, key = _get(header, path[:-1]), path[-1]
    kind = rng.randrange(7)
    if kind == 0:
        parent[key] = rng.choice(_ODD_VALUES)
    elif kind == 1 and isinstance(parent, dict):
        del parent[key]
    elif kind == 2 and isinstance(parent, list):
        parent.insert(key, json.loads(json.dumps(parent[key])))  # a duplicated entry
    elif kind == 3 and isinstance(parent[key], list) and len(parent[key]) > 1:
        rng.shuffle(parent[key])
    elif kind == 4 and isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] += rng.choice([-2, -1, 1, 2, 1 << 20])
    elif kind == 5 and isinstance(parent[key], dict):
        parent[key][rng.choice(["attrs", "extra", "__class__", "op", "shape", "kind"])] = rng.choice(_ODD_VALUES)
    else:
        other = rng.choice(paths)
        try:
            a, b = _get(header, other), parent[key]
            _get(header, other[:-1])[other[-1]], parent[key] = b, a
        except (KeyError, IndexError, TypeError):
            parent[key] = rng.choice(_ODD_VALUES)
    return header


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del data[rng.randrange(len(data)):]
    elif kind == 2:
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        at = rng.randrange(8)
        data[at] = rng.randrange(256)
    return bytes(data)


def mutant(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return mutate_bytes(data, rng)
    table, body = split(data)
    header = json.loads(table["__metadata__"]["graphnet"])
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        header = mutate_header(header, rng)
    table["__metadata__"]["graphnet"] = json.dumps(header)
    return join(table, body)


# --- the harness ---------------------------------------------------------------------------------------------------

class _Timeout(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def _judge(load: Callable[[], Any], run: Callable[[Any, dict[str, np.ndarray]], None], feeds: dict[str, np.ndarray],
           timeout: float, codegen: str = "numpy") -> str:
    """Load a mutant with ``load()``, run it with ``run(loaded, feeds)``, and name the outcome:
    'refused' (a typed error at load), 'ran', 'run refused' (a typed error at run), or a
    failure: 'untyped at load: ...', 'untyped at run: ...', 'hang', 'audit: ...', 'wrote feeds'."""
    before = {k: v.copy() for k, v in feeds.items()}
    events: list[str] = []
    _watch.append(events)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    stage = "load"
    # generated kernels are graphnet's own code (written from validated group bodies, imported
    # and compiled by numba, which also unpickles its cache): the audit watches the loader
    # and the NumPy executor, so they run without code generation here
    # (with codegen="numba" the generated kernels run too, and the audit is not consulted: the
    # kernel generator writes, imports and compiles its own code)
    watching = codegen == "numpy"
    try:
        with gn.config.options(codegen=codegen):
            loaded = load()
            stage = "run"
            with gn.config.options(memory_limit=1 << 28):
                run(loaded, feeds)
        outcome = "ran"
    except _Timeout:
        outcome = "hang"
    except gn.GraphnetError:
        outcome = "refused" if stage == "load" else "run refused"
    except Exception as exc:  # noqa: BLE001 - what the fuzz is looking for
        outcome = f"untyped at {stage}: {type(exc).__name__}: {str(exc)[:120]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _watch.pop()
    if events and watching:
        return f"audit: {events[:3]}"
    if any(not np.array_equal(before[k], feeds[k]) for k in feeds):
        return "wrote feeds"
    return outcome


def _run_plan(plan: Any, feeds: dict[str, np.ndarray]) -> None:
    if any(k not in feeds for k in plan.plan.feeds):
        return  # a renamed feed: nothing to run it with
    plan.run({k: v for k, v in feeds.items() if k in plan.plan.feeds})


def try_mutant(path: str, feeds: dict[str, np.ndarray], timeout: float = 5.0, codegen: str = "numpy") -> str:
    """The outcome (``_judge``) of loading a plan file with gn.load and running it."""
    return _judge(lambda: gn.load(path), _run_plan, feeds, timeout, codegen)


def _tally(outcome: str, index: int, counts: collections.Counter, failures: list[str]) -> None:
    key = outcome if outcome in ("refused", "ran", "run refused") else outcome.split(":")[0]
    counts[key] += 1
    if key not in ("refused", "ran", "run refused"):
        failures.append(f"mutant {index}: {outcome}")


def source_plans(folder: str) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Three valid plans (training with BN and dropout, training with Adam and groups, inference)."""
    gn.manual_seed(0)
    made = []
    x = gn.placeholder("x", (None, 1, 6, 6))
    labels = gn.placeholder("labels", (None,), "int64")
    net = gn.nn.Sequential(gn.nn.Conv2d(1, 2, 3), gn.nn.BatchNorm2d(2), gn.nn.ReLU(), gn.nn.Dropout(0.3),
                           gn.nn.Flatten(), gn.nn.Linear(32, 3))
    logits = net(x)
    train = gn.compile({"loss": gn.losses.cross_entropy(logits, labels), "logits": logits},
                       optimizer=gn.optim.SGD(lr=0.1, momentum=0.9, max_grad_norm=1.0))
    feeds = {"x": np.ones((2, 1, 6, 6), np.float32), "labels": np.array([0, 2])}
    train.run(feeds)
    made.append(("conv-train", train, feeds))
    v = gn.placeholder("v", ("batch", 4))
    mlp = gn.nn.Sequential(gn.nn.Linear(4, 5), gn.nn.GELU(), gn.nn.LayerNorm(5), gn.nn.Linear(5, 1))
    opt = gn.optim.Adam([{"params": mlp[0].parameters(), "lr": 1e-2}, {"params": mlp[3].parameters()}])
    reg = gn.compile(gn.mean((mlp(v) - 1.0) ** 2), optimizer=opt)
    made.append(("mlp-adam", reg, {"v": np.ones((3, 4), np.float32)}))
    net.eval()
    made.append(("conv-infer", gn.compile({"logits": logits}), {"x": np.ones((2, 1, 6, 6), np.float32)}))
    result = []
    for name, plan, feed in made:
        path = os.path.join(folder, f"{name}.gnp")
        plan.save(path)
        result.append((path, feed))
    return result


def fuzz(folder: str, count: int, seed: int = 0, report: Callable[[int], None] | None = None,
         codegen: str = "numpy") -> tuple[collections.Counter, list[str], float]:
    """Run ``count`` mutants of the three source plans; returns (outcome counts, failures, seconds)."""
    rng = random.Random(seed)
    sources = [(open(p, "rb").read(), feeds) for p, feeds in source_plans(folder)]
    target = os.path.join(folder, "mutant.gnp")
    counts: collections.Counter = collections.Counter()
    failures: list[str] = []
    start = time.perf_counter()
    for i in range(count):
        data, feeds = sources[i % len(sources)]
        with open(target, "wb") as f:
            f.write(mutant(data, rng))
        outcome = try_mutant(target, {k: v.copy() for k, v in feeds.items()},
                             timeout=5.0 if codegen == "numpy" else 60.0, codegen=codegen)
        _tally(outcome, i, counts, failures)
        if report is not None and (i + 1) % 1000 == 0:
            report(i + 1)
    return counts, failures, time.perf_counter() - start


# --- ONNX files ----------------------------------------------------------------------------------------------------

def onnx_mutant(data: bytes, rng: random.Random) -> bytes:
    """A byte-level mutant, or a structural one: a dim, an attribute, an op type, an input name,
    an initializer's size or its external-data location changed."""
    if rng.random() < 0.3:
        return mutate_bytes(data, rng)
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(data)
    graph = model.graph
    kind = rng.randrange(7)
    if kind == 0 and graph.initializer:
        tensor = rng.choice(graph.initializer)
        if tensor.dims:
            tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice([0, -1, 2 ** 40, 3, 1])
    elif kind == 1 and graph.initializer:
        tensor = rng.choice(graph.initializer)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", rng.choice(["../../etc/passwd", "/etc/passwd", "a/../../x", "w.bin",
                                                    "sub/../w.bin", "\x00"])),
                           ("offset", rng.choice(["0", "-5", "999999999", "x"])), ("length", rng.choice(["4", "-1"]))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    elif kind == 2 and graph.node:
        node = rng.choice(graph.node)
        node.op_type = rng.choice(["Conv", "Relu", "Gemm", "Loop", "If", "Custom", "MaxPool", "Reshape", ""])
    elif kind == 3 and graph.node:
        node = rng.choice(graph.node)
        if node.attribute:
            attribute = rng.choice(node.attribute)
            if len(attribute.ints) > 0:
                attribute.ints[rng.randrange(len(attribute.ints))] = rng.choice([-3, 0, 7, 2 ** 31])
            else:
                attribute.i = rng.choice([-1, 0, 9, 2 ** 40])
    elif kind == 4 and graph.node:
        node = rng.choice(graph.node)
        if node.input:
            node.input[rng.randrange(len(node.input))] = rng.choice(["nowhere", "", graph.node[0].output[0]])
    elif kind == 5 and graph.input:
        dims = graph.input[0].type.tensor_type.shape.dim
        if dims:
            dims[rng.randrange(len(dims))].dim_value = rng.choice([0, 1, 2, 2 ** 40])
    elif graph.initializer:
        tensor = rng.choice(graph.initializer)
        tensor.raw_data = tensor.raw_data[:rng.randrange(len(tensor.raw_data) + 1)] if tensor.raw_data else b"\x01"
    return model.SerializeToString()


def try_onnx_mutant(path: str, feeds: dict[str, np.ndarray], timeout: float = 5.0) -> str:
    """The outcome (``_judge``) of importing an ONNX file with gn.onnx.load, compiling and running it."""
    return _judge(lambda: gn.onnx.load(path), lambda outputs, given: _run_plan(gn.compile(outputs), given),
                  feeds, timeout)


def fuzz_onnx(folder: str, source: bytes, feeds: dict[str, np.ndarray], count: int, seed: int = 0
              ) -> tuple[collections.Counter, list[str]]:
    """Run ``count`` mutants of the ONNX model ``source``; returns (outcome counts, failures)."""
    rng = random.Random(seed)
    target = os.path.join(folder, "mutant.onnx")
    with open(os.path.join(folder, "w.bin"), "wb") as f:  # an external-data file some mutants point at
        f.write(b"\x00" * 64)
    counts: collections.Counter = collections.Counter()
    failures: list[str] = []
    for i in range(count):
        with open(target, "wb") as f:
            f.write(onnx_mutant(source, rng))
        _tally(try_onnx_mutant(target, {k: v.copy() for k, v in feeds.items()}), i, counts, failures)
    return counts, failures
