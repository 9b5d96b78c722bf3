"""``graphnet prepare`` compiles the NumPy backend's kernels ahead of the first step, and changes
nothing a run computes."""

from __future__ import annotations

import numpy as np
import pytest

import graphnet as gn
from graphnet import cli
from graphnet.prepare import CONV_CASES, prepare
from graphnet.kernels.cpu.conv import algorithms, chooser


def test_the_convolution_cases_reach_every_algorithm():
    reached = {(op, name) for x, w, attrs in CONV_CASES for op in algorithms.CONV_OPS
               for name in chooser.candidates(op, x, w, attrs)}
    every = {(op, name) for op, table in algorithms.ALGORITHMS.items() for name in table}
    assert reached == every


def test_prepare_runs_and_leaves_results_alone(capsys):
    pytest.importorskip("numba")
    gn.manual_seed(3)
    x = gn.placeholder("x", (None, 6))
    y = gn.placeholder("y", (None,), dtype="int64")
    model = gn.nn.Sequential(gn.nn.Linear(6, 4), gn.nn.ReLU(), gn.nn.Linear(4, 3))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    feeds = {"x": np.linspace(-1, 1, 30, dtype=np.float32).reshape(5, 6), "y": np.array([0, 1, 2, 1, 0])}
    first = gn.compile(gn.losses.cross_entropy(model(x), y), optimizer=gn.optim.SGD(lr=0.1), seed=0).run(feeds)
    assert cli.main(["prepare"]) == 0
    out = capsys.readouterr().out
    assert "convolution_algorithm_runs=" in out and "plan_runs=8" in out
    model.load_state_dict(before)
    again = gn.compile(gn.losses.cross_entropy(model(x), y), optimizer=gn.optim.SGD(lr=0.1), seed=0).run(feeds)
    np.testing.assert_array_equal(first["loss"], again["loss"])


def test_prepare_is_skipped_without_generated_kernels():
    with gn.config.options(codegen="numpy"):
        assert "skipped" in prepare()
