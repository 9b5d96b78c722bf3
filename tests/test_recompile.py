"""A change to the optimizer's structure (momentum to or from zero, nesterov, weight decay from
zero, amsgrad, clipping switched on) or to which parameters train (``requires_grad``) takes
effect at the next run, as in PyTorch: the update compiles again and continues from the
parameters, the optimizer state, the step counts and the random state. Checked against
PyTorch's update formulas written out in NumPy (float64, per-parameter state and step)."""

from __future__ import annotations

import numpy as np
import pytest

import graphnet as gn

RNG = np.random.default_rng(3)
X = RNG.standard_normal((16, 3)).astype(np.float32)
T = RNG.standard_normal((16, 2)).astype(np.float32)


def _model(optimizer):
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 3))
    t = gn.placeholder("t", (None, 2))
    layer = gn.nn.Linear(3, 2)
    return layer, gn.compile(gn.losses.mse(layer(x), t), optimizer=optimizer, seed=0)


def _grads(params, max_norm=None):
    """d mean((x W^T + b - t)^2) / d(W, b), clipped as torch.nn.utils.clip_grad_norm_."""
    w, b = params["weight"], params["bias"]
    x, t = X.astype(np.float64), T.astype(np.float64)
    d = 2 * (x @ w.T + b - t) / t.size
    grads = {"weight": d.T @ x, "bias": d.sum(0)}
    if max_norm is not None:
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        grads = {k: g * min(1.0, max_norm / (norm + 1e-6)) for k, g in grads.items()}
    return grads


class TorchSGD:
    """torch.optim.SGD's step, per parameter (its momentum buffer starts as the first gradient
    it sees)."""

    def __init__(self, lr):
        self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov = lr, 0.0, 0.0, 0.0, False
        self.buffers = {}

    def step(self, params, grads):
        for k, g in grads.items():
            g = g + self.weight_decay * params[k]
            if self.momentum != 0:
                buf = self.buffers.get(k)
                buf = g.copy() if buf is None else self.momentum * buf + (1 - self.dampening) * g
                self.buffers[k] = buf
                g = g + self.momentum * buf if self.nesterov else buf
            params[k] = params[k] - self.lr * g


class TorchAdam:
    """torch.optim.Adam's step, per parameter (its own step count; amsgrad's running maximum
    starts at zero when switched on later, where PyTorch itself raises KeyError)."""

    def __init__(self, lr):
        self.lr, self.betas, self.eps, self.weight_decay, self.amsgrad = lr, (0.9, 0.999), 1e-8, 0.0, False
        self.state = {}

    def step(self, params, grads):
        b1, b2 = self.betas
        for k, g in grads.items():
            s = self.state.setdefault(k, {"step": 0, "m": 0.0, "v": 0.0, "vmax": 0.0})
            s["step"] += 1
            g = g + self.weight_decay * params[k]
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["v"] = b2 * s["v"] + (1 - b2) * g * g
            second = s["v"]
            if self.amsgrad:
                s["vmax"] = second = np.maximum(s["vmax"], s["v"])
            bc1, bc2 = 1 - b1 ** s["step"], 1 - b2 ** s["step"]
            params[k] = params[k] - self.lr / bc1 * s["m"] / (np.sqrt(second) / np.sqrt(bc2) + self.eps)


def _params(layer):
    return {"weight": layer.weight.data.astype(np.float64), "bias": layer.bias.data.astype(np.float64)}


def _check(layer, expected):
    for k in expected:
        np.testing.assert_allclose(getattr(layer, k).data, expected[k], rtol=2e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("changes", [
    [{}, {"momentum": 0.9}, {}, {"nesterov": True}, {"weight_decay": 0.01}, {"momentum": 0.0, "nesterov": False}],
    [{"momentum": 0.5, "dampening": 0.0}, {}, {"weight_decay": 0.1}, {"weight_decay": 0.0}, {}],
])
def test_sgd_structure_changes_keep_momentum_as_pytorch(changes):
    optimizer = gn.optim.SGD(lr=0.1)
    layer, train = _model(optimizer)
    params, reference = _params(layer), TorchSGD(0.1)
    for change in changes:
        for key, value in change.items():
            setattr(optimizer, key, value)
            setattr(reference, key, value)
        train.run(x=X, t=T)
        reference.step(params, _grads(params))
        _check(layer, params)
    assert train.report.recompiles and all(r["changed"] for r in train.report.recompiles)


def test_adam_weight_decay_amsgrad_and_clipping_switched_on_keep_the_moments():
    optimizer = gn.optim.Adam(lr=0.05)
    layer, train = _model(optimizer)
    params, reference = _params(layer), TorchAdam(0.05)
    max_norm = None
    for step, change in enumerate([{}, {}, {"weight_decay": 0.1}, {"amsgrad": True}, {"max_grad_norm": 0.05}, {}]):
        for key, value in change.items():
            setattr(optimizer, key, value)
            if key == "max_grad_norm":
                max_norm = value
            else:
                setattr(reference, key, value)
        train.run(x=X, t=T)
        reference.step(params, _grads(params, max_norm))
        _check(layer, params)
    exp_avg = train.optimizer_state["var:0.weight" if "var:0.weight" in train.optimizer_state else
                                    next(iter(train.optimizer_state))]["exp_avg"]
    assert np.abs(exp_avg).max() > 0 and train.step_count == 6
    assert "compiled again at step 2 (weight_decay: zero -> nonzero)" in str(train.report)


def test_freezing_and_unfreezing_after_compile_take_effect_with_per_parameter_steps():
    """requires_grad_(False) after compiling stops the weight's updates at the next run;
    unfreezing resumes them from its own moments and its own step count (Adam's bias
    correction as PyTorch's per-parameter step gives it)."""
    optimizer = gn.optim.Adam(lr=0.05)
    layer, train = _model(optimizer)
    params, reference = _params(layer), TorchAdam(0.05)
    for step in range(7):
        if step == 2:
            layer.weight.requires_grad_(False)
        if step == 5:
            layer.weight.requires_grad_(True)
        frozen = 2 <= step < 5
        before = layer.weight.data.copy()
        train.run(x=X, t=T)
        grads = _grads(params)
        reference.step(params, {k: g for k, g in grads.items() if not (frozen and k == "weight")})
        _check(layer, params)
        if frozen:
            assert np.array_equal(layer.weight.data, before)
    assert reference.state["weight"]["step"] == 4 and reference.state["bias"]["step"] == 7
    assert [r["changed"] for r in train.report.recompiles] == [["frozen weight"], ["training weight"]]


def test_a_layer_compiled_frozen_trains_once_unfrozen():
    layer = gn.nn.Linear(3, 2)
    layer.weight.requires_grad_(False)
    x = gn.placeholder("x", (None, 3))
    t = gn.placeholder("t", (None, 2))
    train = gn.compile(gn.losses.mse(layer(x), t), optimizer=gn.optim.SGD(lr=0.1))
    before = layer.weight.data.copy()
    train.run(x=X, t=T)
    assert np.array_equal(layer.weight.data, before)
    layer.weight.requires_grad_(True)
    params = _params(layer)
    expected = params["weight"] - 0.1 * _grads(params)["weight"]
    train.run(x=X, t=T)
    np.testing.assert_allclose(layer.weight.data, expected, rtol=1e-5, atol=1e-7)


def test_freezing_everything_is_a_typed_error_and_changes_nothing():
    optimizer = gn.optim.SGD(lr=0.1)
    layer, train = _model(optimizer)
    train.run(x=X, t=T)
    for p in layer.parameters():
        p.requires_grad_(False)
    before = [p.data.copy() for p in layer.parameters()]
    with pytest.raises(gn.GradientError, match="nothing to train"):
        train.run(x=X, t=T)
    assert all(np.array_equal(p.data, b) for p, b in zip(layer.parameters(), before))
    layer.weight.requires_grad_(True)
    train.run(x=X, t=T)  # and the plan trains again once something may train


def test_each_update_is_compiled_once_and_switching_back_reuses_it():
    optimizer = gn.optim.SGD(lr=0.1, momentum=0.9)
    layer, train = _model(optimizer)
    for nesterov in (False, True, False, True):
        optimizer.nesterov = nesterov
        train.run(x=X, t=T)
    assert [r["reused"] for r in train.report.recompiles] == [False, True, True]
    assert train.report.recompiles[-1]["updates_compiled"] == 2


def test_a_recompiled_plan_saves_and_resumes_bit_identically(tmp_path):
    optimizer = gn.optim.Adam(lr=0.05)
    layer, train = _model(optimizer)
    train.run(x=X, t=T)
    optimizer.weight_decay = 0.01
    layer.bias.requires_grad_(False)
    train.run(x=X, t=T)
    train.save(tmp_path / "plan.gnp")
    loaded = gn.load(tmp_path / "plan.gnp")
    assert loaded.optimizer.weight_decay == 0.01 and not loaded.recompiles
    for _ in range(2):
        assert train.run(x=X, t=T)["loss"].tobytes() == loaded.run(x=X, t=T)["loss"].tobytes()
    assert not loaded.recompiles  # the loaded plan's frozen bias stays frozen, as saved
    for name, var in train.variables.items():
        assert var.data.tobytes() == loaded.variables[name].data.tobytes(), name


def test_the_update_compiles_again_in_the_modes_the_plan_was_compiled_in():
    """model.eval() between compiling and a structure change (to compile an inference plan)
    does not turn the training plan's BatchNorm and Dropout to eval mode."""
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 3))
    t = gn.placeholder("t", (None, 2))
    model = gn.nn.Sequential(gn.nn.Linear(3, 4), gn.nn.BatchNorm1d(4), gn.nn.Linear(4, 2))
    optimizer = gn.optim.SGD(lr=0.1)
    train = gn.compile(gn.losses.mse(model(x), t), optimizer=optimizer)
    model.eval()
    optimizer.momentum = 0.9
    train.run(x=X, t=T)
    assert train.plan.mode == "train" and train.report.recompiles
    assert not np.array_equal(model[1].running_mean.data, np.zeros(4))  # batch statistics were used and kept
