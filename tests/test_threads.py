"""GRAPHNET_NUM_THREADS and gn.set_num_threads: BLAS and numba use the count asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import graphnet as gn
from graphnet.kernels.cpu import threads


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_environment_variable_sets_blas_and_numba_threads():
    code = ("import json, graphnet as gn\n"
            "x = gn.placeholder('x', (2, 2))\n"
            "plan = gn.compile(gn.matmul(x, x))\n"
            "print(json.dumps(plan.report.codegen['threads']))\n")
    done = _run(code, {"GRAPHNET_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip())
    assert counts["blas"] == 1 and counts.get("numba", 1) == 1


def test_bad_thread_counts_are_typed_errors():
    done = _run("import graphnet as gn\nx = gn.placeholder('x', (2,))\ngn.compile(x * 2.0)\n",
                {"GRAPHNET_NUM_THREADS": "lots"})
    assert done.returncode != 0 and "GRAPHNET_NUM_THREADS must be a positive integer" in done.stderr
    with pytest.raises(gn.ExecutorError, match="positive"):
        gn.set_num_threads(0)


def test_set_num_threads_changes_the_counts():
    before = threads.current()
    try:
        gn.set_num_threads(1)
        assert threads.current()["blas"] in (0, 1)  # 0: no BLAS library found loaded
    finally:
        gn.set_num_threads(max(before.get("blas", 1), 1))


def test_run_parts_runs_every_task_and_returns_results_in_order():
    seen = []
    assert threads.run_parts([lambda k=k: seen.append(k) or k * 10 for k in range(3)]) == [0, 10, 20]
    assert sorted(seen) == [0, 1, 2]
    assert threads.run_parts([]) == [] and threads.run_parts([lambda: 5]) == [5]
    assert threads.spans(10, 3) == [(0, 3), (3, 6), (6, 10)]


def test_run_parts_waits_for_every_task_before_raising():
    import time

    finished = []

    def failing():
        raise ValueError("part 0 failed")

    def slow():
        time.sleep(0.05)
        finished.append(1)

    with pytest.raises(ValueError, match="part 0 failed"):
        threads.run_parts([failing, slow])
    assert finished == [1]  # the other part had finished writing when the error surfaced
    with pytest.raises(KeyError):  # a helper's error reaches the caller too
        threads.run_parts([lambda: None, lambda: {}["missing"]])
    assert threads.run_parts([lambda: 1, lambda: 2]) == [1, 2]  # and the helpers still serve


def test_counter_wait_returns_when_changed_or_after_its_time():
    """The helpers' short poll (executors/spin.py): it sees another thread's change without
    holding the GIL, and gives up after about the time asked for."""
    import threading
    import time

    spin = pytest.importorskip("graphnet.kernels.cpu.spin")
    counter = spin.Counter()
    start = time.perf_counter()
    assert counter.wait_while(0, 0.02) is False  # nobody changes it
    assert time.perf_counter() - start < 2.0  # (only an upper bound: under load a timed lower bound flaked)
    assert counter.wait_while(1, 10.0) is True  # already not 1: returns at once
    changer = threading.Timer(0.01, lambda: counter.set(3))
    changer.start()
    start = time.perf_counter()
    assert counter.wait_while(0, 10.0) is True and counter.value == 3
    assert time.perf_counter() - start < 5.0  # (the Timer thread could run: the poll left the GIL)
    changer.join()


def test_helpers_serve_after_idling_past_their_poll(monkeypatch):
    """A helper that stopped polling blocks on its lock and still takes the next task."""
    import time

    monkeypatch.setattr(threads, "SPIN_SECONDS", 1e-4)
    assert threads.run_parts([lambda: 1, lambda: 2]) == [1, 2]
    time.sleep(0.05)  # past the poll: the helper now waits on its lock
    assert threads.run_parts([lambda: 3, lambda: time.sleep(0.01) or 4]) == [3, 4]


def test_nested_splits_run_serially_on_the_caller():
    inner = []
    outer = threads.run_parts([lambda: threads.run_parts([lambda: inner.append("a"), lambda: inner.append("b")]),
                               lambda: 7])
    assert outer[1] == 7 and sorted(inner) == ["a", "b"]


def test_splitting_makes_blas_single_threaded_and_restores_it(monkeypatch):
    monkeypatch.setattr(threads, "count", lambda: 2)
    assert threads.parts_for(10**9, 1, 100) == 1  # outside a splitting run nothing splits
    assert threads.parts_for(10**9, 1, 100, inside=True) == 2
    gn.set_num_threads(2)
    try:
        before = threads.current()["blas"]
        with threads.splitting():
            from threadpoolctl import threadpool_info

            inside = max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=0)
            assert inside in (0, 1)  # 0: no BLAS library found loaded
            assert threads.parts_for(10**9, 1, 100) == 2 and threads.parts_for(10, 100, 100) == 1
            assert threads.parts_for(10**9, 1, 1) == 1
        assert threads.current()["blas"] == before
    finally:
        gn.set_num_threads(threads.requested())


def test_split_matmul_and_elementwise_kernels_match_one_thread(monkeypatch):
    np = pytest.importorskip("numpy")
    from graphnet.backends.numpy import fused_kernels
    from graphnet.kernels.cpu import matmul as cpu_matmul

    monkeypatch.setattr(threads, "count", lambda: 3)
    monkeypatch.setattr(cpu_matmul, "MATMUL_SPLIT_MIN", 0)
    monkeypatch.setattr(cpu_matmul, "MATMUL_MIN_SLICE", 1)
    rng = np.random.default_rng(0)
    for a_shape, b_shape in (((50, 7), (7, 4)), ((4, 7), (7, 50)), ((9, 3), (3, 9))):
        a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
        with threads.splitting():
            fresh = cpu_matmul.matmul(a, b)
            into = cpu_matmul.matmul(a, b, out=np.empty((a_shape[0], b_shape[1])))
        for result in (fresh, into):
            np.testing.assert_allclose(result, a @ b, rtol=1e-14, atol=1e-14)
    if not fused_kernels.numba_available():
        return
    monkeypatch.setattr(fused_kernels, "SPLIT_MIN_ELEMENTS", 0)
    x = gn.placeholder("x", (None, 5))
    bias = gn.placeholder("bias", (5,))
    plan = gn.compile(gn.relu(x * 2.0 + bias) - 1.0)
    feeds = {"x": rng.standard_normal((11, 5)).astype(np.float32), "bias": rng.standard_normal(5).astype(np.float32)}
    serial = plan.run(feeds)
    with threads.splitting():
        shared = plan.run(feeds)
    for key in serial:
        np.testing.assert_array_equal(serial[key], shared[key])


def test_batch_norm_split_by_channels_is_bit_identical(monkeypatch):
    np = pytest.importorskip("numpy")
    cpu_batch_norm = pytest.importorskip("graphnet.kernels.cpu.batch_norm")
    monkeypatch.setattr(threads, "count", lambda: 4)
    x = np.random.default_rng(0).standard_normal((16, 6, 9, 9)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    gamma, beta = np.full(6, 1.5, np.float32), np.full(6, 0.1, np.float32)
    results = []
    for limit in (1 << 40, 0):  # one thread, then the channels shared among threads
        monkeypatch.setattr(cpu_batch_norm, "SPLIT_MIN_ELEMENTS", limit)
        with threads.splitting():
            y, mean, var, _ = cpu_batch_norm.batch_norm_train(x, gamma, beta, eps=1e-5, momentum=0.1, stats=False,
                                                                weight=True, bias=True, relu=True)
            grads = cpu_batch_norm.batch_norm_train_grad(g, x, mean, var, gamma, y, eps=1e-5, weight=True, relu=True)
        results.append((y, mean, var, *grads))
    for serial, shared in zip(*results):
        np.testing.assert_array_equal(serial, shared)


def test_conv_plans_train_alike_on_one_thread_and_on_several(monkeypatch):
    """A plan with convolutions splits its kernels' work (every kernel, however small, here)
    and trains as it does on one thread."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("numba")
    from test_memory_plan import _feeds, _network

    from graphnet.backends.numpy import fused_kernels
    from graphnet.kernels.cpu import batch_norm as cpu_batch_norm, matmul as cpu_matmul, pooling
    from graphnet.kernels.cpu.conv import chooser

    for module, name in ((chooser, "SPLIT_MIN_MACS"), (cpu_batch_norm, "SPLIT_MIN_ELEMENTS"), (pooling, "SPLIT_MIN_ELEMENTS"),
                         (fused_kernels, "SPLIT_MIN_ELEMENTS"), (cpu_matmul, "MATMUL_SPLIT_MIN")):
        monkeypatch.setattr(module, name, 0)
    split = []
    real = threads.run_parts
    monkeypatch.setattr(threads, "run_parts", lambda tasks: split.append(len(tasks)) or real(tasks))
    losses = {}
    for count in (1, 2):
        gn.set_num_threads(count)
        try:
            for name in ("resnet", "cnn"):  # (batch norm; max pools)
                loss, optimizer, shape = _network(name)
                plan = gn.compile(loss, optimizer=optimizer, seed=0)
                losses[count, name] = [float(plan.run(_feeds(shape, 16, seed))["loss"]) for seed in range(3)]
        finally:
            gn.set_num_threads(threads.requested())
        assert max(split, default=1) == count
        split.clear()
    for name in ("resnet", "cnn"):
        np.testing.assert_allclose(losses[2, name], losses[1, name], rtol=1e-5)
