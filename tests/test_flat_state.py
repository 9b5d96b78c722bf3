"""Flat optimizer state (graphnet/passes/flatten_state.py, graphnet/executors/flat_state.py): the
parameters, each optimizer slot and the gradients each in one contiguous buffer, one update
kernel over all of them, with results bit-identical to one update per parameter."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import graphnet as gn
from graphnet.errors import GraphError
from graphnet.passes import check_memory_plan

OPTIMIZERS = {
    "sgd": lambda: gn.optim.SGD(lr=0.05),
    "momentum": lambda: gn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: gn.optim.Adam(lr=1e-2),
    "adamw": lambda: gn.optim.AdamW(lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda: gn.optim.RMSprop(lr=1e-2, momentum=0.5),
    "adagrad": lambda: gn.optim.Adagrad(lr=1e-1),
}


def _mlp(seed: int = 0) -> gn.nn.Module:
    gn.manual_seed(seed)
    return gn.nn.Sequential(gn.nn.Linear(6, 8), gn.nn.Tanh(), gn.nn.Linear(8, 8), gn.nn.ReLU(), gn.nn.Linear(8, 3))


def _train(model: gn.nn.Module, optimizer, flat: bool = True, **compile_options):
    x = gn.placeholder("x", (None, 6))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    disabled = set() if flat else {"flatten_state"}
    with gn.config.options(disabled_passes=disabled):
        return gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=optimizer, **compile_options)


def _batch(k: int, batch: int = 5):
    rng = np.random.default_rng(k)
    return {"x": rng.standard_normal((batch, 6)).astype(np.float32), "labels": rng.integers(0, 3, batch)}


def _steps(plan, count: int = 4) -> list[float]:
    return [float(plan.run(_batch(k, 5 if k % 3 else 7))["loss"]) for k in range(count)]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_flat_updates_are_bit_identical_to_one_update_per_parameter(name):
    flat_model, plain_model = _mlp(), _mlp()
    flat = _train(flat_model, OPTIMIZERS[name]())
    plain = _train(plain_model, OPTIMIZERS[name](), flat=False)
    assert len(flat.plan.flat) == 1 and len(flat.plan.flat[0].steps) == 6  # every parameter in one group
    assert plain.plan.flat == ()
    assert _steps(flat) == _steps(plain)
    for a, b in zip(flat_model.parameters(), plain_model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    for owner, slots in plain.optimizer_state.items():
        for slot, value in slots.items():
            np.testing.assert_array_equal(flat.optimizer_state[owner][slot], value)


def test_parameters_slots_and_gradients_each_live_in_one_contiguous_buffer():
    model = _mlp()
    plan = _train(model, gn.optim.Adam(lr=1e-3))
    group, = plan.plan.flat
    params = list(model.parameters())
    flat = params[0].data.base
    assert flat is not None and flat.ndim == 1 and flat.size == sum(p.data.size for p in params)
    assert all(p.data.base is flat for p in params)
    offsets = [p.data.__array_interface__["data"][0] - flat.__array_interface__["data"][0] for p in params]
    assert offsets == [o * 4 for o in group.offsets]  # back to back, in the group's order
    for slot in ("exp_avg", "exp_avg_sq"):
        bases = {id(plan.optimizer_state[name][slot].base) for name in plan.optimizer_state}
        assert len(bases) == 1
    # every gradient is written straight into its slice of the flat gradient block
    gradients = group.flat[group.written:]
    assert {member[p] for member in group.inputs for p in gradients} == set(plan.plan.memory.placed)
    check_memory_plan(plan.plan)


def test_the_update_is_one_kernel_and_runs_once_per_step():
    model = _mlp()
    plan = _train(model, gn.optim.SGD(lr=0.1, momentum=0.9))
    calls = []
    executor = plan.executor
    update = executor._flat_updates[0]
    kernel = update.kernel
    update.kernel = lambda *args: (calls.append([a.shape for a in args]), kernel(*args))
    for k in range(3):
        plan.run(_batch(k))
    total = sum(p.data.size for p in model.parameters())
    assert len(calls) == 3 and all((total,) in shapes for shapes in calls)


def test_parameter_groups_form_groups_of_their_own_and_follow_hyperparameter_changes():
    def build(flat):
        model = _mlp()
        opt = gn.optim.Adam([{"params": model[0].parameters(), "lr": 1e-2}, {"params": model[2].parameters()},
                             {"params": model[4].parameters(), "lr": 3e-3}], lr=1e-3)
        return model, opt, _train(model, opt, flat=flat)

    (flat_model, flat_opt, flat), (plain_model, plain_opt, plain) = build(True), build(False)
    assert len(flat.plan.flat) == 3  # each group reads its own learning rate
    losses = [_steps(flat, 2), _steps(plain, 2)]
    for opt in (flat_opt, plain_opt):
        opt.param_groups[0]["lr"] = 0.5
        opt.lr = 2e-3
    losses += [_steps(flat, 2), _steps(plain, 2)]
    assert losses[0] == losses[1] and losses[2] == losses[3]
    for a, b in zip(flat_model.parameters(), plain_model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_load_state_dict_and_a_replaced_array_reach_the_flat_buffer():
    model = _mlp()
    plan = _train(model, gn.optim.SGD(lr=0.1))
    plan.run(_batch(0))
    saved = model.state_dict()
    first = _steps(plan, 2)
    model.load_state_dict(saved)  # copied into the views
    assert _steps(plan, 2) == first
    model.load_state_dict(saved)
    weight = model[0].weight
    weight.var.data = np.array(saved["0.weight"])  # a new array: adopted at the next run
    assert _steps(plan, 2) == first
    assert weight.data.base is model[2].weight.data.base


def test_two_training_plans_over_one_model_see_each_others_updates():
    model, reference = _mlp(), _mlp()
    first = _train(model, gn.optim.SGD(lr=0.1))
    second = _train(model, gn.optim.SGD(lr=0.1))
    one = _train(reference, gn.optim.SGD(lr=0.1))
    for k in range(4):
        plan = first if k % 2 else second
        assert float(plan.run(_batch(k))["loss"]) == float(one.run(_batch(k))["loss"])
    for a, b in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_a_saved_plan_flattens_again_when_it_loads_and_continues_alike(tmp_path):
    model = _mlp()
    plan = _train(model, gn.optim.Adam(lr=1e-2))
    _steps(plan, 2)
    path = plan.save(tmp_path / "plan.gnp")
    loaded = gn.load(path)
    assert [g.steps for g in loaded.plan.flat] == [g.steps for g in plan.plan.flat]
    assert loaded.plan.memory.placed == plan.plan.memory.placed
    batch = _batch(9)
    assert float(loaded.run(batch)["loss"]) == float(plan.run(batch)["loss"])


def test_the_checker_refuses_a_gradient_placed_outside_its_slice():
    plan = _train(_mlp(), gn.optim.SGD(lr=0.1)).plan
    memory = plan.memory
    name, (block, offset) = next(iter(memory.placed.items()))
    moved = dict(memory.placed, **{name: (block, offset + 1)})
    with pytest.raises(GraphError, match="not its slice"):
        check_memory_plan(replace(plan, memory=replace(memory, placed=moved)))
    with pytest.raises(GraphError, match="flat block"):
        check_memory_plan(replace(plan, memory=replace(memory, storage=dict(memory.storage, **{name: block}))))


def test_updates_numbered_differently_by_fusion_still_form_one_group():
    # fusion meets Adam's shared bias corrections while fusing the first parameter's update,
    # so its body numbers members and inputs otherwise than the others'
    plan = _train(_mlp(), gn.optim.Adam(lr=1e-3)).plan
    group, = plan.flat
    bodies = {plan.steps[i].attrs["body"] for i in group.steps}
    assert len(bodies) > 1 and len(group.steps) == 6


def test_clipped_gradients_and_frozen_parameters_stay_bit_identical():
    def build(flat):
        model = _mlp()
        model[2].weight.var.trainable = False  # frozen: no update, not in the flat group
        return model, _train(model, gn.optim.Adam(lr=1e-2, max_grad_norm=0.5), flat=flat)

    (flat_model, flat), (plain_model, plain) = build(True), build(False)
    group, = flat.plan.flat
    assert len(group.steps) == 5
    assert _steps(flat) == _steps(plain)
    for a, b in zip(flat_model.parameters(), plain_model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
