"""Saving and loading compiled plans: round trips, atomic saves, and hostile files."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import graphnet as gn
from graphnet.export import FORMAT_VERSION

from plan_fuzz import join as _join, split as _split


# --- fixtures -----------------------------------------------------------------------------------------------------

def _batch(seed: int = 0, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, 12, 12)).astype(np.float32), rng.integers(0, 5, n)


def _training_plan(optimizer: gn.optim.Optimizer | None = None, seed: int = 3) -> gn.CompiledPlan:
    """Conv, BatchNorm (running-stat writes), dropout (random), a residual add, Adam by default."""
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 1, 12, 12))
    labels = gn.placeholder("labels", (None,), dtype="int64")

    class Net(gn.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = gn.nn.Conv2d(1, 4, 3, padding=1)
            self.bn = gn.nn.BatchNorm2d(4)
            self.drop = gn.nn.Dropout(0.25)
            self.head = gn.nn.Linear(4 * 12 * 12, 5)

        def forward(self, x: gn.Tensor) -> gn.Tensor:
            h = gn.relu(self.bn(self.conv(x))) + x
            return self.head(gn.flatten(self.drop(h)))

    logits = Net()(x)
    loss = gn.losses.cross_entropy(logits, labels)
    return gn.compile({"loss": loss, "logits": logits}, optimizer=optimizer or gn.optim.Adam(lr=1e-2), seed=seed)


def _small_plan() -> gn.CompiledPlan:
    gn.manual_seed(1)
    x = gn.placeholder("x", ("batch", 6))
    labels = gn.placeholder("labels", ("batch",), dtype="int64")
    model = gn.nn.Sequential(gn.nn.Linear(6, 8), gn.nn.ReLU(), gn.nn.Linear(8, 3))
    return gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=gn.optim.SGD(lr=0.1, momentum=0.9))


def _small_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(4, 6)).astype(np.float32), "labels": rng.integers(0, 3, 4)}


# safetensors layout: 8-byte little-endian header length, JSON header, tensor bytes
def _edit_header(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    table, body = _split(path.read_bytes())
    header = json.loads(table["__metadata__"]["graphnet"])
    edit(header)
    table["__metadata__"]["graphnet"] = json.dumps(header)
    path.write_bytes(_join(table, body))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "small.gnp"
    _small_plan().save(path)
    return path


# --- round trips --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_optimizer", [lambda: gn.optim.Adam(lr=1e-2), lambda: gn.optim.RMSprop(lr=1e-3),
                                            lambda: gn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True)],
                         ids=["adam", "rmsprop", "sgd-nesterov"])
def test_loaded_training_plan_continues_bit_identically(tmp_path, make_optimizer):
    train = _training_plan(make_optimizer())
    for i in range(3):
        train.run(*(), **dict(zip(("x", "labels"), _batch(i))))
    path = tmp_path / "train.gnp"
    train.save(path)
    loaded = gn.load(path)
    assert loaded.step_count == train.step_count == 3
    for i in range(3, 7):
        xb, yb = _batch(i)
        a, b = train.run(x=xb, labels=yb), loaded.run(x=xb, labels=yb)
        for key in ("loss", "logits"):
            assert np.array_equal(a[key], b[key]), key  # bit-identical, dropout included
    for name, var in train.variables.items():
        assert np.array_equal(var.data, loaded.variables[name].data), name
    for param, slots in train.optimizer_state.items():
        for slot, value in slots.items():
            assert np.array_equal(value, loaded.optimizer_state[param][slot])


def test_learning_rate_from_a_schedule_is_saved(tmp_path):
    train = _training_plan(gn.optim.SGD(lr=0.1))
    gn.optim.StepLR(train.optimizer, step_size=1, gamma=0.5).step()
    train.save(tmp_path / "p.gnp")
    assert gn.load(tmp_path / "p.gnp").lr == pytest.approx(0.05)


def test_inference_export_predicts_what_the_saved_plan_did(tmp_path):
    gn.manual_seed(2)
    x = gn.placeholder("x", (None, 1, 12, 12))
    model = gn.nn.Sequential(gn.nn.Conv2d(1, 3, 3), gn.nn.BatchNorm2d(3), gn.nn.ReLU(), gn.nn.Flatten(),
                             gn.nn.Linear(300, 4))
    model.eval()
    infer = gn.compile({"logits": model(x)})
    infer.save(tmp_path / "infer.gnp")
    loaded = gn.load(tmp_path / "infer.gnp")
    xb, _ = _batch(5)
    assert np.array_equal(infer.run(x=xb)["logits"], loaded.run(x=xb)["logits"])
    assert loaded.optimizer is None and not loaded.plan.trainable


def test_inference_only_export_drops_gradients_and_optimizer_state(tmp_path):
    train = _training_plan()
    xb, yb = _batch(0)
    train.run(x=xb, labels=yb)
    full, lean = tmp_path / "full.gnp", tmp_path / "lean.gnp"
    train.save(full)
    train.save(lean, outputs=["logits"])
    loaded = gn.load(lean)
    assert set(loaded.plan.feeds) == {"x"} and list(loaded.plan.outputs) == ["logits"]
    assert not any(s.role in ("grad", "update") or s.op in ("update", "assign") for s in loaded.plan.steps)
    assert loaded.optimizer_state == {} and loaded.optimizer is None and loaded.step_count == 0
    table, _ = _split(lean.read_bytes())
    assert not any("@" in key or key.startswith("var/optimizer.") for key in table)
    assert lean.stat().st_size < full.stat().st_size
    before = {n: v.data.copy() for n, v in loaded.variables.items()}
    loaded.run(x=xb)
    assert all(np.array_equal(before[n], v.data) for n, v in loaded.variables.items())  # nothing written


def test_plan_saved_on_one_executor_loads_on_another(tmp_path):
    from graphnet.executors import register_executor
    from graphnet.backends.numpy.executor import NumpyExecutor

    class CopyingExecutor(NumpyExecutor):
        """A backend with its own device arrays (copies), like CuPy's."""

        name = "copying"

        def from_host(self, array):
            return np.array(array, copy=True)

        def to_host(self, array):
            return np.array(array, copy=True)

    register_executor("copying", lambda: CopyingExecutor)
    train = _small_plan()
    train.run(_small_feeds())
    train.save(tmp_path / "p.gnp")
    other = gn.load(tmp_path / "p.gnp", executor="copying")
    assert other.executor.name == "copying"
    assert np.array_equal(train.run(_small_feeds())["loss"], other.run(_small_feeds())["loss"])
    other.save(tmp_path / "q.gnp")  # and back
    back = gn.load(tmp_path / "q.gnp")
    assert np.array_equal(train.run(_small_feeds())["loss"], back.run(_small_feeds())["loss"])


def test_loaded_plan_keeps_graph_source_and_pass_report(saved):
    original = _small_plan()
    loaded = gn.load(saved)
    assert [n.op for n in loaded.graph.nodes] == [n.op for n in original.graph.nodes]
    assert [n.op for n in loaded.source.nodes] == [n.op for n in original.source.nodes]
    assert [r.name for r in loaded.report] == [r.name for r in original.report]
    assert loaded.plan.feeds == original.plan.feeds
    assert loaded.plan.buffers["in:x"].shape == ("batch", 6)  # symbolic dims survive
    assert "param_update" in str(loaded)


def test_user_defined_optimizer_round_trips(tmp_path):
    @gn.optim.register(replace=True)
    class SignSGD(gn.optim.Optimizer):
        name = "signsgd_export_test"
        state_names = ("last",)

        def __init__(self, lr: float = 0.01) -> None:
            super().__init__(lr)

        def update(self, param, grad, state, step, h):
            last = gn.sign(grad)
            return param - gn.optim.scalar(h.lr, param) * last, {"last": last}

    train = _training_plan(SignSGD(lr=0.01))
    xb, yb = _batch(0)
    train.run(x=xb, labels=yb)
    train.save(tmp_path / "p.gnp")
    loaded = gn.load(tmp_path / "p.gnp")
    assert type(loaded.optimizer) is SignSGD
    assert np.array_equal(train.run(x=xb, labels=yb)["loss"], loaded.run(x=xb, labels=yb)["loss"])


# --- atomic saving ------------------------------------------------------------------------------------------------

def test_save_leaves_no_temporary_files_and_keeps_permissions(tmp_path):
    path = tmp_path / "p.gnp"
    plan = _small_plan()
    plan.save(path)
    os.chmod(path, 0o640)
    plan.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gnp"]
    assert (path.stat().st_mode & 0o777) == 0o640


def test_save_to_a_folder_or_missing_folder_is_refused(tmp_path):
    plan = _small_plan()
    with pytest.raises(gn.PlanFileError, match="folder"):
        plan.save(tmp_path)
    with pytest.raises(gn.PlanFileError, match="does not exist"):
        plan.save(tmp_path / "nowhere" / "p.gnp")


_SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    import graphnet as gn
    x = gn.placeholder("x", (None, 256))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    model = gn.nn.Sequential(gn.nn.Linear(256, 512), gn.nn.ReLU(), gn.nn.Linear(512, 10))
    plan = gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=gn.optim.Adam())
    xb = np.ones((4, 256), np.float32); yb = np.zeros(4, np.int64)
    print("ready", flush=True)
    while True:
        plan.run(x=xb, labels=yb)
        plan.save(sys.argv[1])
""")


def test_a_save_killed_at_any_point_leaves_a_loadable_file(tmp_path):
    path = tmp_path / "p.gnp"
    _small_plan().save(path)  # the previous file
    rng = random.Random(0)
    for trial in range(8):
        child = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait()
        loaded = gn.load(path)  # the old plan or a complete new one, never a torn file
        assert loaded.plan.trainable
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "p.gnp"]
    assert all(name.endswith(".tmp") for name in leftovers)  # a killed writer may leave its temp file only


# --- hostile and broken files -------------------------------------------------------------------------------------

def _expect_refused(path: Path, match: str) -> None:
    with pytest.raises(gn.PlanFileError, match=match):
        gn.load(path)


def test_empty_truncated_and_non_files_are_refused(tmp_path, saved):
    empty = tmp_path / "empty.gnp"
    empty.write_bytes(b"")
    _expect_refused(empty, "empty")
    data = saved.read_bytes()
    for cut in (4, 16, len(data) // 2, len(data) - 1):
        short = tmp_path / f"cut{cut}.gnp"
        short.write_bytes(data[:cut])
        _expect_refused(short, "truncated|not a valid plan file")
    _expect_refused(tmp_path, "folder")
    _expect_refused(tmp_path / "missing.gnp", "cannot read")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _expect_refused(fifo, "not a regular file")  # and does not block opening it


def test_pickle_bytes_are_refused_without_being_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.gnp"
    path.write_bytes(pickle.dumps({"plan": Boom()}))
    _expect_refused(path, "not a valid plan file")
    assert not (tmp_path / "pwned").exists()


def test_header_claiming_a_huge_size_is_refused(tmp_path, saved):
    data = saved.read_bytes()
    path = tmp_path / "huge.gnp"
    path.write_bytes(struct.pack("<Q", 2 ** 62) + data[8:])
    _expect_refused(path, "not a valid plan file")


def test_overlapping_or_out_of_range_tensor_offsets_are_refused(tmp_path, saved):
    table, body = _split(saved.read_bytes())
    names = [k for k in table if k != "__metadata__"]
    overlap = json.loads(json.dumps(table))
    overlap[names[1]]["data_offsets"] = overlap[names[0]]["data_offsets"]
    beyond = json.loads(json.dumps(table))
    start, end = beyond[names[0]]["data_offsets"]
    beyond[names[0]]["data_offsets"] = [start, len(body) + 64]
    for i, bad in enumerate((overlap, beyond)):
        path = tmp_path / f"bad{i}.gnp"
        path.write_bytes(_join(bad, body))
        _expect_refused(path, "not a valid plan file")


def test_safetensors_file_without_a_plan_header_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    _expect_refused(path, "not a graphnet plan")


def test_newer_format_version_is_refused_naming_both_versions(tmp_path, saved):
    _edit_header(saved, lambda h: h.update(version=FORMAT_VERSION + 1))
    with pytest.raises(gn.PlanVersionError) as info:
        gn.load(saved)
    message = str(info.value)
    assert f"version {FORMAT_VERSION + 1}" in message and f"up to {FORMAT_VERSION}" in message


def test_older_format_version_is_refused_with_a_reason(saved):
    _edit_header(saved, lambda h: h.update(version=0))
    with pytest.raises(gn.PlanVersionError, match="version 0"):
        gn.load(saved)


def _first(header: dict[str, Any], op: str) -> dict[str, Any]:
    return next(n for n in header["graph"]["nodes"] if n["op"] == op)


@pytest.mark.parametrize("edit, match", [
    (lambda h: _first(h, "matmul").update(op="os.system"), "unknown op 'os.system'"),
    (lambda h: _first(h, "matmul").update(op="__import__"), "unknown op"),
    (lambda h: _first(h, "placeholder")["attrs"].update(dtype="object"), "dtype 'object'"),
    (lambda h: _first(h, "placeholder").update(dtype="complex128"), "dtype 'complex128'"),
    (lambda h: _first(h, "transpose")["attrs"].update(axes="10"), "wrong type|rejected"),
    (lambda h: _first(h, "transpose")["attrs"].update(axes={"$eval": "1"}), "not a number, string"),
    (lambda h: _first(h, "softmax_cross_entropy")["attrs"].update(label_smoothing=[[[]]]),
     "wrong type|rejected|stored type|attributes differ"),
    (lambda h: _first(h, "matmul").update(inputs=[len(h["graph"]["nodes"]) + 5, 0]), "not an earlier node"),
    (lambda h: h["graph"]["nodes"][0].update(inputs=[3]), "not an earlier node"),  # a cycle or forward edge
    (lambda h: h["graph"]["outputs"].update(loss=10 ** 6), "names no node"),
    (lambda h: _first(h, "matmul").update(shape=[None, 99]), "stored type"),
    (lambda h: h["schedule"]["steps"].reverse(), "before any step writes it|effects run last"),
    (lambda h: h["variables"].update(ghost={"trainable": True}), "ghost"),
    (lambda h: h["variables"].pop(next(iter(h["variables"]))), "not declared|belongs to"),
    (lambda h: h.update(optimizer=None), "optimizer|no part of the plan uses"),
    (lambda h: h["optimizer"].update(name="no-such-optimizer"), "cannot be rebuilt"),
    (lambda h: h["optimizer"]["hyper"].update(lr="fast"), "optimizer"),
    (lambda h: h.update(step_count=-1), "unknown header field"),
    (lambda h: h.update(rng={"bit_generator": "MT19937", "state": 5}), "random-generator state"),
    (lambda h: h.update(format="something-else"), "not a graphnet plan"),
], ids=["dotted-op", "dunder-op", "attr-dtype", "node-dtype", "attr-type", "attr-object", "attr-nesting",
        "missing-node", "cycle", "output", "shape", "schedule", "extra-param", "missing-param", "no-optimizer",
        "unknown-optimizer", "bad-hyper", "step-count", "rng", "format"])
def test_malformed_headers_are_refused(saved, edit, match):
    _edit_header(saved, edit)
    _expect_refused(saved, match)


def _edit_tensors(path: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.pop("var/0.weight"), "missing"),
    (lambda t: t.update({"var/extra": np.zeros(2, np.float32)}), "no part of the plan uses"),
    (lambda t: t.update({"var/0.weight": np.zeros((2, 2), np.float32)}), "0.weight"),
    (lambda t: t.update({"var/0.weight": np.zeros((8, 6), np.float64)}), "0.weight"),
    (lambda t: t.update({"var/0.weight": np.zeros((8, 6), np.complex64)}), "complex|not a valid plan file"),
    (lambda t: t.update({"var/0.weight@momentum_buffer": np.zeros(3, np.float32)}), "momentum_buffer"),
], ids=["missing", "extra", "shape", "dtype", "complex", "state-shape"])
def test_missing_extra_or_misshapen_tensors_are_refused(saved, edit, match):
    _edit_tensors(saved, edit)
    _expect_refused(saved, match)


def test_random_mutations_load_or_raise_a_graphnet_error(tmp_path, saved):
    """A seeded fuzz: bytes flipped, inserted, deleted and header values swapped; nothing hangs."""
    data = saved.read_bytes()
    table, body = _split(data)
    header_text = table["__metadata__"]["graphnet"]
    rng = random.Random(1234)
    outcomes = {"loaded": 0, "refused": 0}
    path = tmp_path / "mutant.gnp"
    start = time.perf_counter()
    for i in range(2000):
        kind = i % 4
        if kind == 0:  # flip bytes anywhere
            mutant = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutant[rng.randrange(len(mutant))] = rng.randrange(256)
            mutant = bytes(mutant)
        elif kind == 1:  # cut or splice
            a, b = sorted(rng.randrange(len(data)) for _ in range(2))
            mutant = data[:a] + data[b:] if rng.random() < 0.5 else data[:a] + data[a:b] * 2 + data[b:]
        else:  # mutate the plan JSON, keeping the container valid
            text = list(header_text)
            for _ in range(rng.randint(1, 3)):
                j = rng.randrange(len(text))
                text[j] = rng.choice('0123456789-,:[]{}"aez. ') if kind == 2 else rng.choice("01279")
            mutated = dict(table)
            mutated["__metadata__"] = {"graphnet": "".join(text)}
            mutant = _join(mutated, body)
        path.write_bytes(mutant)
        try:
            gn.load(path)
            outcomes["loaded"] += 1
        except gn.GraphnetError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 1000 and sum(outcomes.values()) == 2000
    assert time.perf_counter() - start < 120


def test_a_plan_with_a_nan_attribute_saves_and_loads(tmp_path):
    x = gn.placeholder("x", (2, 3))
    plan = gn.compile({"y": gn.leaky_relu(x, float("nan")) + 1.0})
    loaded = gn.load(plan.save(tmp_path / "nan.gnp"))
    feeds = {"x": np.array([[-1.0, 0.5, 2.0], [3.0, -0.25, 0.0]], np.float32)}
    np.testing.assert_array_equal(loaded.run(feeds)["y"], plan.run(feeds)["y"])
