"""Hostile plan files and failing runs: typed errors only, no writes outside the plan, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import graphnet as gn
from graphnet.cli import main

from plan_fuzz import fuzz, join, split


def _edit(path, edit):
    table, body = split(path.read_bytes())
    header = json.loads(table["__metadata__"]["graphnet"])
    edit(header)
    table["__metadata__"]["graphnet"] = json.dumps(header)
    path.write_bytes(join(table, body))


def _bn_plan(tmp_path):
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 2, 3, 3))
    bn = gn.nn.BatchNorm2d(2)
    plan = gn.compile({"y": bn(x)}, mode="train")
    path = tmp_path / "bn.gnp"
    plan.save(path)
    return path


def _node(header, op, graph="graph"):
    return next(i for i, n in enumerate(header[graph]["nodes"]) if n["op"] == op)


def test_an_assignment_to_a_feed_is_refused(tmp_path):
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 2, 3, 3))
    shift = gn.placeholder("shift", (2,))
    plan = gn.compile({"y": gn.nn.BatchNorm2d(2)(x) + gn.reshape(shift, (1, 2, 1, 1))}, mode="train")
    path = tmp_path / "bn.gnp"
    plan.save(path)

    def point_at_feed(h):
        feed = next(i for i, n in enumerate(h["graph"]["nodes"]) if n["op"] == "placeholder"
                    and n["attrs"]["name"] == "shift")
        nodes = h["graph"]["nodes"]
        for e in h["graph"]["effects"]:
            target = nodes[nodes[e]["inputs"][0]]
            if (target.get("shape"), target.get("dtype")) == ([2], "float32"):  # the running statistics
                nodes[e]["inputs"][0] = feed
    _edit(path, point_at_feed)
    with pytest.raises(gn.PlanFileError, match="not a variable"):
        gn.load(path)


def test_a_file_that_changes_while_loading_is_a_typed_error(tmp_path, monkeypatch):
    path = _bn_plan(tmp_path)
    import graphnet.export.plan_file as plan_file

    real = os.fstat
    calls = []

    def growing(fd):
        info = real(fd)
        calls.append(1)
        if len(calls) == 2:  # the second look, after reading: the file was rewritten meanwhile
            return os.stat_result((*info[:6], info.st_size + 10, *info[7:]))
        return info
    monkeypatch.setattr(plan_file.os, "fstat", growing)
    with pytest.raises(gn.PlanFileError, match="changed while it was being read"):
        gn.load(path)


def test_a_plan_that_would_need_too_much_memory_is_refused_before_running(tmp_path, capsys):
    x = gn.placeholder("x", (1, 4))
    plan = gn.compile({"y": gn.pad(x, ((0, 0), (0, 2 ** 33)))})
    path = tmp_path / "big.gnp"
    plan.save(path)
    with pytest.raises(gn.MemoryLimitError, match=r"needs 32\.0 GiB of temporaries at batch 1"):
        gn.load(path).run(x=np.ones((1, 4), np.float32))
    assert main(["inspect", str(path)]) == 0
    assert "memory: 34,359,738,384 bytes of temporaries at batch 1" in capsys.readouterr().out
    with gn.config.options(memory_limit=1 << 20):
        small = gn.compile({"y": gn.exp(gn.placeholder("z", (None, 4)))})
        small.run(z=np.ones((8, 4), np.float32))
        with pytest.raises(gn.MemoryLimitError, match="batch 100000"):
            small.run(z=np.ones((100000, 4), np.float32))


@pytest.mark.parametrize("edit, match", [
    (lambda h: h["graph"]["nodes"][_node(h, "conv2d")]["attrs"].update(stride=[0, 0]), "stride"),
    # the compiled graph's mean is a member of a fused group: the declared graph's is a node
    (lambda h: h["source"]["nodes"][_node(h, "mean", "source")]["attrs"].update(unknown=1), "unknown attribute"),
    (lambda h: h["source"]["nodes"][_node(h, "mean", "source")]["attrs"].update(keepdims=1),
     "keepdims=1 is not a valid bool"),
    (lambda h: h["graph"]["nodes"][_node(h, "sqrt")]["attrs"].update(axis=True), "unknown attribute"),
    (lambda h: h["graph"]["nodes"][0].update(name="\ud800"), "surrogate"),
    (lambda h: h.pop("kind"), "kind"),
    (lambda h: h.update(optimizer="sgd"), "optimizer|inference plan"),
])
def test_malformed_attributes_and_fields_are_typed_errors_at_load(tmp_path, edit, match):
    x = gn.placeholder("x", (None, 1, 5, 5))
    conv = gn.nn.Conv2d(1, 2, 3)
    plan = gn.compile({"y": gn.sqrt(gn.mean(conv(x) ** 2, axis=1))})
    path = tmp_path / "p.gnp"
    plan.save(path)
    _edit(path, edit)
    with pytest.raises(gn.PlanFileError, match=match):
        gn.load(path)


def test_a_nul_byte_in_the_path_is_a_plan_file_error():
    with pytest.raises(gn.PlanFileError, match="cannot read"):
        gn.load("bad\x00name.gnp")


def test_the_cli_prints_one_line_for_any_failure(tmp_path, capsys, monkeypatch):
    path = _bn_plan(tmp_path)
    import graphnet.export as export

    def broken(*a, **k):
        raise RuntimeError("something unforeseen\nover two lines")
    monkeypatch.setattr(export, "file_summary", broken)
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: something unforeseen over two lines" in err
    assert "Traceback" not in err


def test_the_cli_refuses_a_fifo_as_input(tmp_path, capsys):
    path = _bn_plan(tmp_path)
    fifo = tmp_path / "input.npy"
    os.mkfifo(fifo)
    assert main(["run", str(path), "--input", f"x={fifo}"]) == 1  # returns at once, reads nothing
    assert "not a regular file" in capsys.readouterr().err


def test_inspect_into_a_closed_pipe_is_quiet(tmp_path):
    path = _bn_plan(tmp_path)
    script = f"import sys; from graphnet.cli import main; sys.exit(main(['inspect', {str(path)!r}]))"
    proc = subprocess.run(f"{sys.executable} -c \"{script}\" | head -c 10 > /dev/null", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr


def test_saving_failures_are_typed_and_leave_the_old_file(tmp_path):
    path = _bn_plan(tmp_path)
    before = path.read_bytes()
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    plan = gn.load(path)
    try:
        if os.geteuid() != 0:  # root writes anywhere
            with pytest.raises(gn.PlanFileError, match="cannot save"):
                plan.save(folder / "p.gnp")
    finally:
        folder.chmod(0o700)
    with pytest.raises(gn.PlanFileError, match="folder"):
        plan.save(tmp_path / "missing" / "p.gnp")
    assert path.read_bytes() == before


def test_saving_through_a_symbolic_link_writes_its_target(tmp_path):
    path = _bn_plan(tmp_path)
    target = tmp_path / "real.gnp"
    target.write_bytes(b"old")
    link = tmp_path / "link.gnp"
    link.symlink_to(target)
    gn.load(path).save(link)
    assert link.is_symlink() and gn.load(target).plan.feeds == {"x": "in:x"}


_SAVER = textwrap.dedent("""
    import sys, numpy as np, graphnet as gn
    plan = gn.load(sys.argv[1])
    print("ready", flush=True)
    while True:
        plan.save(sys.argv[2])
""")


def test_killed_saves_never_lose_the_file_and_leave_no_temporaries_behind(tmp_path):
    source = _bn_plan(tmp_path)
    target = tmp_path / "target.gnp"
    gn.load(source).save(target)
    for i in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(source), str(target)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.03 * i)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gn.load(target)  # always the old file or the new one
    gn.load(source).save(target)  # a later save removes what the killed ones left
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_training_and_inference_threads_on_shared_parameters_see_whole_steps():
    gn.manual_seed(0)
    layer = gn.nn.Linear(64, 64)
    x = gn.placeholder("x", (None, 64))
    train = gn.compile(gn.mean(layer(x) ** 2), optimizer=gn.optim.SGD(lr=1e-3))
    infer = gn.compile({"w": layer.weight * 1.0, "b": layer.bias * 1.0})
    xb = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    seen, versions = [], [layer.weight.data.copy()]
    stop = threading.Event()

    def trainer():
        for _ in range(60):
            train.run(x=xb)
            versions.append(layer.weight.data.copy())
        stop.set()

    def reader():
        while not stop.is_set():
            seen.append(infer.run()["w"])
    threads = [threading.Thread(target=trainer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen and all(any(np.array_equal(s, v) for v in versions) for s in seen)


def test_an_interrupt_during_the_effects_leaves_the_whole_update(monkeypatch):
    w1 = gn.Parameter(np.ones(3, np.float32))
    w2 = gn.Parameter(np.ones(3, np.float32))
    x = gn.placeholder("x", (3,))
    with gn.config.options(disabled_passes={"flatten_state"}):  # one effect per parameter
        train = gn.compile(gn.sum(x * w1) + gn.sum(x * w2), optimizer=gn.optim.SGD(lr=0.5))
    program = train.executor._program
    first = train.plan.first_effect
    fn, *rest = program[first + 1]
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return fn(*args)
    program[first + 1] = (interrupted, *rest)
    train.executor._fresh[first + 1] = interrupted  # what the first run (sizing the storage blocks) calls
    with pytest.raises(KeyboardInterrupt):
        train.run(x=np.ones(3, np.float32))
    np.testing.assert_allclose(w1.data, 0.5)  # both parameters updated, and the step counted
    np.testing.assert_allclose(w2.data, 0.5)
    assert train.step_count == 1


def test_a_few_thousand_mutated_plans_load_or_raise_typed_errors(tmp_path):
    counts, failures, seconds = fuzz(str(tmp_path), 2000, seed=1)
    assert not failures, failures[:10]
    assert counts["refused"] > 0 and counts["ran"] > 0


def test_two_threads_training_one_plan_match_the_same_steps_in_sequence():
    def run(threads: int) -> np.ndarray:
        gn.manual_seed(0)
        layer = gn.nn.Linear(16, 16)
        x = gn.placeholder("x", (None, 16))
        train = gn.compile(gn.mean(layer(x) ** 2), optimizer=gn.optim.Adam(lr=1e-2))
        xb = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
        workers = [threading.Thread(target=lambda: [train.run(x=xb) for _ in range(40 // threads)])
                   for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert train.step_count == 40
        return layer.weight.data.copy()
    np.testing.assert_array_equal(run(2), run(1))


@pytest.mark.parametrize("edit, match", [
    (lambda h: h["schedule"]["outputs"].update(y=["%1"]), "buffer names"),
    (lambda h: h["schedule"]["leaves"].update({"in:x": "0"}), "node indices"),
])
def test_schedule_mappings_of_the_wrong_type_are_refused(tmp_path, edit, match):
    path = _bn_plan(tmp_path)
    _edit(path, edit)
    with pytest.raises(gn.PlanFileError, match=match):
        gn.load(path)


def test_a_source_graph_whose_feeds_differ_from_the_plans_does_not_break_runs(tmp_path):
    """Found by the 100,000-mutant fuzz: a renamed placeholder in the declared graph made the
    feed check look up a feed the plan does not have (KeyError)."""
    path = _bn_plan(tmp_path)

    def rename(h):
        node = next(n for n in h["source"]["nodes"] if n["op"] == "placeholder")
        node["attrs"]["name"] = node["name"] = "renamed"
    _edit(path, rename)
    plan = gn.load(path)
    assert plan.run(x=np.ones((2, 2, 3, 3), np.float32))["y"].shape == (2, 2, 3, 3)
