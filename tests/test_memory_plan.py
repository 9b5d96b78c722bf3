"""The memory plan (graphnet/passes/plan_memory.py): no two live values share storage, in-place
writes only over dying inputs, planned runs bit-identical to unplanned ones, no array
allocations in the steady state, and the peak-bytes formula against tracemalloc."""

from __future__ import annotations

import os
import sys
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

import graphnet as gn
from graphnet.kernels.cpu import threads
from graphnet.errors import GraphError
from graphnet.backends.numpy.executor import NumpyExecutor
from graphnet.passes import check_memory_plan, plan_memory
from graphnet.passes.plan_memory import last_reads
from graphnet.plan import MemoryPlan

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from mnist_cnn import seed_cnn  # noqa: E402
from resnet import ResNet  # noqa: E402


def _network(name: str, reference: bool = False):
    """A small version of a reference network (the benchmarks' own sizes with ``reference``)."""
    gn.manual_seed(0)
    labels = gn.placeholder("labels", (None,), dtype="int64")
    width = 512 if reference else 64
    if name == "mlp":
        x = gn.placeholder("x", (None, 784))
        model = gn.nn.Sequential(gn.nn.Linear(784, width), gn.nn.ReLU(), gn.nn.Linear(width, width), gn.nn.ReLU(),
                                 gn.nn.Linear(width, 10))
        optimizer = gn.optim.Adam(lr=1e-3)
    else:
        x = gn.placeholder("x", (None, 1, 28, 28))
        model = seed_cnn() if name == "cnn" else ResNet() if reference else ResNet(widths=(4, 8, 8))
        optimizer = gn.optim.SGD(lr=0.01, momentum=0.9)
    return gn.losses.cross_entropy(model(x), labels), optimizer, x.shape


def _feeds(shape, batch, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch,) + tuple(shape[1:])).astype(np.float32),
            "labels": rng.integers(0, 10, batch)}


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_reference_plans_pass_the_checker_and_reuse_storage(name):
    loss, optimizer, _ = _network(name)
    plan = gn.compile(loss, optimizer=optimizer).plan
    check_memory_plan(plan)
    memory = plan.memory
    assert memory.storage and len(memory.blocks) - len(memory.flat) <= len(memory.storage)
    assert set(memory.storage).isdisjoint(plan.outputs.values())  # what a run returns is the caller's


def test_reuse_and_in_place_where_the_input_dies():
    x = gn.placeholder("x", (None, 8))
    w = gn.Parameter(np.ones((8, 8), np.float32), name="w")
    with gn.config.options(fuse=False):
        a = gn.matmul(x, w)        # planned
        b = gn.exp(a)               # a dies here: in place
        c = gn.matmul(b, w)         # b is read again below: a new block
        d = c + b                   # c dies here: in place into c's block
        plan = gn.compile({"out": gn.sum(gn.matmul(d, w))}).plan
    memory = plan.memory
    steps = {s.op + str(i): (i, s) for i, s in enumerate(plan.steps)}
    exp_index = next(i for i, s in steps.values() if s.op == "exp")
    add_index = next(i for i, s in steps.values() if s.op == "add")
    assert memory.inplace == {exp_index: 0, add_index: 0}
    exp_step, add_step = plan.steps[exp_index], plan.steps[add_index]
    assert memory.storage[exp_step.outputs[0]] == memory.storage[exp_step.inputs[0]]
    assert memory.storage[add_step.outputs[0]] != memory.storage[add_step.inputs[1]]  # b is not overwritten
    check_memory_plan(plan)


def test_the_checker_refuses_shared_storage_between_live_values():
    loss, optimizer, _ = _network("mlp")
    plan = gn.compile(loss, optimizer=optimizer).plan
    memory = plan.memory
    # give every planned value the first block of its type: live values collide
    first: dict = {}
    storage = {name: first.setdefault(memory.blocks[block], block) for name, block in memory.storage.items()}
    with pytest.raises(GraphError, match="memory plan"):
        check_memory_plan(replace(plan, memory=replace(memory, storage=storage)))
    name, block = next(iter(memory.storage.items()))
    other = next(b for b, key in enumerate(memory.blocks) if key != memory.blocks[block])
    with pytest.raises(GraphError, match="of type"):
        check_memory_plan(replace(plan, memory=MemoryPlan(memory.blocks, {name: other}, {})))


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_planned_runs_are_bit_identical_to_unplanned(name):
    results = {}
    for planned in (True, False):
        loss, optimizer, shape = _network(name)
        with gn.config.options(disabled_passes=set() if planned else {"plan_memory"}):
            plan = gn.compile(loss, optimizer=optimizer, seed=3)
        assert (plan.plan.memory is not None) == planned
        losses = [float(plan.run(_feeds(shape, batch, seed))["loss"]) for seed, batch in
                  enumerate([8, 8, 8, 5, 8])]  # a new batch size in between: its own blocks
        results[planned] = losses, [v.data.copy() for v in plan.variables.values()]
    assert results[True][0] == results[False][0]
    for a, b in zip(results[True][1], results[False][1]):
        np.testing.assert_array_equal(a, b)


def _one_steady_run(plan, feeds) -> tuple[int, int]:
    """(bytes of array memory one run leaves allocated, the most bytes it had allocated at once
    above what was allocated before it), by tracemalloc."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        base = tracemalloc.get_traced_memory()[0]
        plan.run(feeds)
        peak = tracemalloc.get_traced_memory()[1] - base
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    only_arrays = [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]
    grown = sum(stat.size_diff for stat in after.filter_traces(only_arrays).compare_to(
        before.filter_traces(only_arrays), "filename") if stat.size_diff > 0)
    return grown, peak


def test_a_training_step_allocates_no_array_memory_in_the_steady_state():
    loss, optimizer, shape = _network("mlp")
    plan = gn.compile(loss, optimizer=optimizer)
    feeds = _feeds(shape, 32)
    for _ in range(3):
        plan.run(feeds)
    grown, peak = _one_steady_run(plan, feeds)
    assert grown == 0
    # what a step allocates at most: the (32, 10) scores softmax cross-entropy works on, and the loss
    assert peak < 6 * 32 * 10 * 4 + 4096


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_conv_nets_allocate_only_numpy_buffers_in_the_steady_state(name):
    """Convolutions, pooling, batch norm and the loss take their temporaries from the
    executor's workspace: a steady-state step of the reference conv nets allocates no array
    memory that outlives it, and at any moment no more than numpy's own iterator buffers
    (8192 elements per operand of a ufunc that casts or strides: 3 x 32 KB for a strided
    float32 ``+=``, 64 KB for a float64 sum of float32 values), once per thread sharing the
    kernels' work."""
    loss, optimizer, shape = _network(name, reference=True)
    with gn.config.options(autotune=False):
        plan = gn.compile(loss, optimizer=optimizer)
    feeds = _feeds(shape, 32)
    for _ in range(3):
        plan.run(feeds)
    grown, peak = _one_steady_run(plan, feeds)
    assert grown == 0
    assert peak < 128 * 1024 * threads.count(), peak


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_peak_formula_matches_tracemalloc(name):
    loss, optimizer, shape = _network(name, reference=True)
    with gn.config.options(autotune=False):  # the algorithms the formula assumes (the cost rule's)
        plan = gn.compile(loss, optimizer=optimizer)
    a, b = NumpyExecutor.peak_formula(plan.plan)
    assert plan.report.memory["peak_bytes"] == a and plan.report.memory["peak_bytes_per_batch_item"] == b
    for batch in (32, 64, 128):
        feeds = _feeds(shape, batch)
        plan.run(feeds)  # conv algorithms chosen, kernels loaded
        with gn.config.options(autotune=False):
            fresh = gn.compile(loss, optimizer=optimizer)
        fresh.run(feeds)
        fresh.run(feeds)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            fresh.run(feeds)
            during = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        # what the executor holds between runs (its own count of its arena and workspace), plus
        # what a steady-state run allocates on top (tracemalloc), against the formula
        measured = fresh.executor.held_bytes() + during
        assert abs(measured / (a + b * batch) - 1) < 0.10, (batch, measured, a + b * batch)


def test_plan_memory_can_be_switched_off_and_runs_again_on_loaded_plans(tmp_path):
    loss, optimizer, shape = _network("mlp")
    plan = gn.compile(loss, optimizer=optimizer)
    path = tmp_path / "mlp.gnplan"
    plan.save(path)
    loaded = gn.load(path)
    assert loaded.plan.memory == plan.plan.memory  # planned again from the loaded steps
    np.testing.assert_array_equal(loaded.run(_feeds(shape, 4))["loss"], plan.run(_feeds(shape, 4))["loss"])
    with gn.config.options(disabled_passes={"plan_memory"}):
        assert plan_memory(loaded.plan).memory is None


def test_an_input_read_only_for_its_shape_does_not_keep_its_block():
    # sum_like(g, h) in the backward pass reads h's shape only: h's block is free once its
    # last real reader has run, so the bias-and-ReLU steps write over the matmul results
    loss, optimizer, shape = _network("mlp")
    plan = gn.compile(loss, optimizer=optimizer).plan
    check_memory_plan(plan)
    steps = plan.steps
    after_matmul = [i for i, s in enumerate(steps[:plan.first_effect]) if s.op == "fused" and i > 0
                    and steps[i - 1].op == "matmul" and steps[i - 1].outputs[0] in s.inputs]
    assert len(after_matmul) == 2 and all(i in plan.memory.inplace for i in after_matmul)
    shape_only = [(s.inputs[1], i) for i, s in enumerate(steps) if s.op == "sum_like"]
    last, _ = last_reads(plan)
    assert any(last[name] < i for name, i in shape_only)


def test_packed_blocks_never_overlap_while_both_alive():
    from graphnet.executors.arena import ALIGNMENT, pack_blocks

    rng = np.random.default_rng(0)
    for _ in range(200):
        count = int(rng.integers(1, 12))
        sizes = [int(s) for s in rng.integers(1, 5000, count)]
        starts = rng.integers(0, 20, count)
        spans = [(int(a), int(a + rng.integers(0, 8))) for a in starts]
        offsets, total = pack_blocks(sizes, spans)
        assert all(o % ALIGNMENT == 0 for o in offsets)
        for i in range(count):
            assert offsets[i] + sizes[i] <= total
            for j in range(i):
                alive_together = spans[i][0] <= spans[j][1] and spans[j][0] <= spans[i][1]
                apart = offsets[i] + sizes[i] <= offsets[j] or offsets[j] + sizes[j] <= offsets[i]
                assert apart or not alive_together
        # never more than every block side by side, never less than the most alive at one step
        most = max(sum(-(-s // ALIGNMENT) * ALIGNMENT for s, (a, b) in zip(sizes, spans) if a <= t <= b)
                   for t in range(30))
        assert most <= total <= sum(-(-s // ALIGNMENT) * ALIGNMENT for s in sizes)


def test_the_arena_lets_blocks_that_never_meet_share_memory():
    loss, optimizer, shape = _network("cnn")
    plan = gn.compile(loss, optimizer=optimizer)
    plan.run(_feeds(shape, 16))
    memory = plan.plan.memory
    arrays = {}
    for fn in next(iter(plan.executor._planned.values())):
        out = getattr(fn, "keywords", {}).get("out")
        for array in out if isinstance(out, tuple) else (out,):  # a step with several results: a tuple
            if array is not None:
                arrays[id(array)] = array
    assert len(memory.spans) == len(memory.blocks)
    views = list(arrays.values())
    shared = [(a, b) for i, a in enumerate(views) for b in views[:i] if np.shares_memory(a, b)]
    assert shared  # blocks whose spans never meet, in the same bytes
    check_memory_plan(plan.plan)


def test_the_executor_reports_the_bytes_it_holds():
    loss, optimizer, shape = _network("resnet")  # batch norm: steps with several planned results
    plan = gn.compile(loss, optimizer=optimizer)
    assert plan.executor.held_bytes() == 0  # nothing sized before the first run
    plan.run(_feeds(shape, 8))
    held = plan.executor.held_bytes()
    sizes = [int(np.prod([d if isinstance(d, int) else 8 for d in s])) * np.dtype(t).itemsize
             for s, t in plan.plan.memory.blocks]
    assert sum(sizes) * 0.3 < held and max(sizes) <= held


def test_weight_gradients_run_as_soon_as_their_layer_is_reached():
    """The schedule reaches the last layer's weight gradient first and the first layer's last,
    as the backward pass does, so each layer's saved input dies at its weight gradient."""
    gn.manual_seed(0)
    widths = (40, 36, 28, 20, 10)
    x = gn.placeholder("x", (None, widths[0]))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [gn.nn.Linear(a, b), gn.nn.ReLU()]
    model = gn.nn.Sequential(*layers[:-1])
    plan = gn.compile({"loss": gn.losses.cross_entropy(model(x), labels)}, optimizer=gn.optim.SGD(lr=0.1))
    weight_shapes = [tuple(layer.weight.shape) for layer in layers[::2]]
    at = {}
    for index, step in enumerate(plan.plan.steps):
        for name in step.outputs:
            shape = tuple(plan.plan.buffers[name].shape)
            if shape in weight_shapes and step.op != "fused_assign":
                at.setdefault(weight_shapes.index(shape), index)
    assert sorted(at) == list(range(len(weight_shapes)))
    assert [at[k] for k in range(len(weight_shapes))] == sorted(at.values(), reverse=True)
