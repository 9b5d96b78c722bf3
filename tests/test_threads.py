"""GRAPHNET_NUM_THREADS and gn.set_num_threads: BLAS and numba use the count asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import graphnet as gn
from graphnet.executors import threads


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


def test_split_runs_every_part_and_restores_blas_threads():
    before = threads.current()["blas"]
    seen = []
    assert threads.split(lambda k: seen.append(k) or k * 10, 3) == [0, 10, 20]
    assert sorted(seen) == [0, 1, 2]
    assert threads.current()["blas"] == before
    assert list(threads.spans(10, 3)) == [(0, 3), (3, 6), (6, 10)]


def test_split_waits_for_every_part_before_raising():
    import time

    finished = []

    def task(k):
        if k == 0:
            raise ValueError("part 0 failed")
        time.sleep(0.05)
        finished.append(k)

    with pytest.raises(ValueError, match="part 0 failed"):
        threads.split(task, 2)
    assert finished == [1]  # the other part had finished writing when the error surfaced


def test_batch_norm_split_by_channels_is_bit_identical():
    np = pytest.importorskip("numpy")
    numba_batch_norm = pytest.importorskip("graphnet.executors.numba_batch_norm")
    x = np.random.default_rng(0).standard_normal((16, 6, 9, 9)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    gamma, beta = np.full(6, 1.5, np.float32), np.full(6, 0.1, np.float32)
    results = []
    for limit in (1 << 40, 0):  # one thread, then the channels shared among threads
        numba_batch_norm.SPLIT_MIN_ELEMENTS, saved = limit, numba_batch_norm.SPLIT_MIN_ELEMENTS
        try:
            y, mean, var, _ = numba_batch_norm.batch_norm_train(x, gamma, beta, eps=1e-5, momentum=0.1, stats=False,
                                                                weight=True, bias=True, relu=True)
            grads = numba_batch_norm.batch_norm_train_grad(g, x, mean, var, gamma, y, eps=1e-5, weight=True, relu=True)
        finally:
            numba_batch_norm.SPLIT_MIN_ELEMENTS = saved
        results.append((y, mean, var, *grads))
    for serial, shared in zip(*results):
        np.testing.assert_array_equal(serial, shared)
