"""A backend from outside the package (docs/backends.md): a runtime and a kernel table defined
here, registered through the public registry, runs the reference networks and matches the
NumPy backend."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphnet as gn
from graphnet.executors import ArrayExecutor, KernelEntry, KernelTable, available_executors, register_executor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_memory_plan import _feeds, _network  # noqa: E402 - the reference networks, small


class CountingTable(KernelTable):
    """The reference kernels for every op, a plain NumPy product for ``matmul``, and a count of
    the entries each op was given (what a backend author checks first)."""

    def __init__(self) -> None:
        super().__init__({"matmul": [KernelEntry("np.matmul", lambda executor, step: functools.partial(np.matmul),
                                                 workspace=lambda shapes, attrs, itemsize: (0, 64))]})
        self.made: dict[str, int] = {}

    def make(self, executor: Any, step: Any) -> Any:
        entry = self.entry(executor.plan, step)
        self.made[entry.name] = self.made.get(entry.name, 0) + 1
        return entry.make(executor, step)


class ReferenceBackend(ArrayExecutor):
    """NumPy arrays, the ops' own xp kernels: the smallest complete backend."""

    name = "reference-test"
    xp = np
    table = CountingTable()


register_executor("reference-test", lambda: ReferenceBackend)


def test_the_registry_lists_it():
    assert "reference-test" in available_executors() and "numpy" in available_executors()
    with pytest.raises(gn.ExecutorError, match="reference-test"):
        gn.executors.get_executor("no-such-backend")


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_it_trains_the_reference_networks_like_the_numpy_backend(name):
    loss, optimizer, shape = _network(name)
    numpy_plan = gn.compile(loss, optimizer=optimizer, seed=0)
    loss, optimizer, shape = _network(name)  # the same initial parameters, held apart
    outside = gn.compile(loss, optimizer=optimizer, seed=0, executor="reference-test")
    assert type(outside.executor) is ReferenceBackend
    assert ReferenceBackend.table.made.get("np.matmul", 0) > 0 or name != "mlp"
    assert ReferenceBackend.table.made.get("xp", 0) > 0
    for step in range(3):
        feeds = _feeds(shape, 16, seed=step)
        want, got = numpy_plan.run(feeds)["loss"], outside.run(feeds)["loss"]
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    # its memory is counted by its own table: the product's declared scratch is in the peak
    assert outside.executor.peak_formula(outside.plan) != numpy_plan.executor.peak_formula(numpy_plan.plan)


def test_its_plans_save_and_load_onto_it(tmp_path):
    loss, optimizer, shape = _network("mlp")
    plan = gn.compile(loss, optimizer=optimizer, seed=0, executor="reference-test")
    plan.run(_feeds(shape, 8))
    loaded = gn.load(plan.save(tmp_path / "mlp.gnp"), executor="reference-test")
    assert type(loaded.executor) is ReferenceBackend
    feeds = _feeds(shape, 8, seed=5)
    np.testing.assert_array_equal(loaded.run(feeds)["loss"], plan.run(feeds)["loss"])
