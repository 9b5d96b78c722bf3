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
