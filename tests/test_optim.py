"""Tests for graphnet.optim: optimizers against textbook (PyTorch-doc) formulas, schedules, registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import graphnet as gn
import graphnet.optim as optim
from graphnet.errors import OptimizerError
from graphnet.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiStepLR,
    Optimizer,
    RMSprop,
    StepLR,
    scalar,
)

from helpers import step_in_place

STEPS = 7


# ---------------------------------------------------------------------------
# Reference implementations: plain float64 NumPy, one step at a time, written
# from the torch.optim documentation pseudo-code (no in-place tricks).
# ---------------------------------------------------------------------------


def ref_sgd(p, g, s, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        if t == 1:
            b = g
        else:
            b = momentum * s["b"] + (1 - dampening) * g
        s["b"] = b
        g = g + momentum * b if nesterov else b
    return p - lr * g


def ref_adam(p, g, s, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    if decoupled:
        p = p - lr * weight_decay * p
    elif weight_decay:
        g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g**2
    m_hat = s["m"] / (1 - b1**t)
    if amsgrad:
        s["vmax"] = np.maximum(s.get("vmax", 0.0), s["v"])
        v_hat = s["vmax"] / (1 - b2**t)
    else:
        v_hat = s["v"] / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_rmsprop(p, g, s, t, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    if weight_decay:
        g = g + weight_decay * p
    s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g**2
    vt = s["v"]
    if centered:
        s["ga"] = alpha * s.get("ga", 0.0) + (1 - alpha) * g
        vt = vt - s["ga"] ** 2
    if momentum > 0:
        s["b"] = momentum * s.get("b", 0.0) + g / (np.sqrt(vt) + eps)
        return p - lr * s["b"]
    return p - lr * g / (np.sqrt(vt) + eps)


def ref_adagrad(p, g, s, t, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    clr = lr / (1 + (t - 1) * lr_decay)
    if weight_decay:
        g = g + weight_decay * p
    s["sum"] = s.get("sum", initial_accumulator_value) + g**2
    return p - clr * g / (np.sqrt(s["sum"]) + eps)


def make_problem(seed=0, dtype=np.float64):
    """Two parameters of different shapes and a fixed sequence of gradients for each."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    grads = [[rng.standard_normal(p.shape) * (1 + t) for p in params] for t in range(STEPS)]
    return [p.astype(dtype) for p in params], [[g.astype(dtype) for g in gs] for gs in grads]


def run_both(opt, ref, ref_kw, *, dtype=np.float64, lr_per_step=None, seed=0):
    """Run ``opt`` through the executor's calls and ``ref`` in float64; return both results."""
    params, grads = make_problem(seed, dtype)
    ref_params = [p.astype(np.float64) for p in params]
    ref_states = [{} for _ in params]
    states = [opt.init_state(p) for p in params]
    state_ids = [{k: id(v) for k, v in s.items()} for s in states]
    for t in range(1, STEPS + 1):
        if lr_per_step is not None:
            opt.lr = lr_per_step[t - 1]
        kw = dict(ref_kw, lr=opt.lr)
        for i, p in enumerate(params):
            g = grads[t - 1][i]
            g_before = g.copy()
            step_in_place(opt, p, g, states[i], t)
            np.testing.assert_array_equal(g, g_before)  # the gradient is never written
            ref_params[i] = ref(ref_params[i], g.astype(np.float64), ref_states[i], t, **kw)
    for s, ids in zip(states, state_ids):  # state updated in place, never replaced
        assert {k: id(v) for k, v in s.items()} == ids
        assert all(v.dtype == dtype for v in s.values())
    assert all(p.dtype == dtype for p in params)
    return params, ref_params


def assert_matches(opt, ref, ref_kw, **kw):
    params, ref_params = run_both(opt, ref, ref_kw, **kw)
    start, _ = make_problem(kw.get("seed", 0))
    for p, r, p0 in zip(params, ref_params, start):
        assert not np.allclose(r, p0)  # the test actually moved the parameters
        np.testing.assert_allclose(p, r, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------
# Optimizers against the references
# ---------------------------------------------------------------------------

SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.03, momentum=0.9, weight_decay=0.1, nesterov=True),
    dict(lr=0.03, momentum=0.5, dampening=0.5, weight_decay=0.2),
    dict(lr=0.1, weight_decay=0.3),
]


@pytest.mark.parametrize("kw", SGD_CASES)
def test_sgd_matches_formula(kw):
    assert_matches(SGD(**kw), ref_sgd, {k: v for k, v in kw.items() if k != "lr"})


ADAM_CASES = [
    dict(lr=1e-2),
    dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, amsgrad=True),
    dict(lr=2e-2, betas=(0.5, 0.9), weight_decay=0.05, amsgrad=True),
    dict(lr=1e-2, betas=(0.0, 0.0)),
]


@pytest.mark.parametrize("kw", ADAM_CASES)
def test_adam_matches_formula(kw):
    assert_matches(Adam(**kw), ref_adam, {k: v for k, v in kw.items() if k != "lr"})


@pytest.mark.parametrize("kw", [dict(lr=1e-2), dict(lr=5e-2, weight_decay=0.3, amsgrad=True, betas=(0.7, 0.95))])
def test_adamw_matches_formula(kw):
    opt = AdamW(**kw)
    ref_kw = {k: v for k, v in kw.items() if k != "lr"}
    ref_kw.setdefault("weight_decay", 1e-2)  # AdamW's default
    assert_matches(opt, ref_adam, dict(ref_kw, decoupled=True))


def test_adamw_decay_is_decoupled():
    # With a zero gradient, Adam's L2 decay goes through the normalisation (a step of
    # about lr per element) while AdamW only shrinks p by (1 - lr * wd).
    p_w, p_a = np.full(3, 2.0), np.full(3, 2.0)
    w, a = AdamW(lr=0.1, weight_decay=0.5), Adam(lr=0.1, weight_decay=0.5)
    sw, sa = w.init_state(p_w), a.init_state(p_a)
    step_in_place(w, p_w, np.zeros(3), sw, 1)
    step_in_place(a, p_a, np.zeros(3), sa, 1)
    np.testing.assert_allclose(p_w, 2.0 * (1 - 0.1 * 0.5))
    np.testing.assert_allclose(p_a, 2.0 - 0.1, rtol=1e-6)


RMSPROP_CASES = [
    dict(lr=1e-2),
    dict(lr=1e-2, alpha=0.9, eps=1e-6),
    dict(lr=1e-2, momentum=0.9),
    dict(lr=1e-2, centered=True),
    dict(lr=5e-3, alpha=0.8, momentum=0.7, centered=True, weight_decay=0.1),
]


@pytest.mark.parametrize("kw", RMSPROP_CASES)
def test_rmsprop_matches_formula(kw):
    assert_matches(RMSprop(**kw), ref_rmsprop, {k: v for k, v in kw.items() if k != "lr"})


ADAGRAD_CASES = [
    dict(lr=1e-1),
    dict(lr=1e-1, lr_decay=0.3),
    dict(lr=1e-1, initial_accumulator_value=0.5),
    dict(lr=5e-2, lr_decay=0.1, weight_decay=0.2, initial_accumulator_value=0.1, eps=1e-6),
]


@pytest.mark.parametrize("kw", ADAGRAD_CASES)
def test_adagrad_matches_formula(kw):
    opt = Adagrad(**kw)
    if kw.get("initial_accumulator_value"):
        s = opt.init_state(np.zeros(2))
        np.testing.assert_array_equal(s["sum"], [kw["initial_accumulator_value"]] * 2)
    assert_matches(opt, ref_adagrad, {k: v for k, v in kw.items() if k != "lr"})


def test_hand_computed_first_steps():
    # SGD with momentum on a constant gradient: buffers g, then mu*g + (1-d)*g.
    p = np.array([1.0])
    opt = SGD(lr=0.1, momentum=0.9, dampening=0.5)
    s = opt.init_state(p)
    step_in_place(opt, p, np.array([2.0]), s, 1)
    assert p[0] == pytest.approx(1.0 - 0.1 * 2.0)
    step_in_place(opt, p, np.array([2.0]), s, 2)
    assert s["momentum_buffer"][0] == pytest.approx(0.9 * 2.0 + 0.5 * 2.0)
    assert p[0] == pytest.approx(0.8 - 0.1 * 2.8)
    # Adam's first step is lr * g / (|g| + eps) thanks to the bias corrections.
    p = np.array([1.0, -1.0])
    opt = Adam(lr=0.01)
    s = opt.init_state(p)
    step_in_place(opt, p, np.array([3.0, -0.5]), s, 1)
    np.testing.assert_allclose(p, [1.0 - 0.01, -1.0 + 0.01], rtol=1e-7)
    # Adagrad's first step with zero accumulator: lr * g / |g|.
    p = np.array([0.0])
    opt = Adagrad(lr=0.5)
    s = opt.init_state(p)
    step_in_place(opt, p, np.array([4.0]), s, 1)
    assert p[0] == pytest.approx(-0.5)


# ---------------------------------------------------------------------------
# dtype, in-place behaviour, hyperparameters read at call time
# ---------------------------------------------------------------------------

ALL = [
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1), ref_sgd),
    (Adam, dict(lr=1e-2, amsgrad=True, weight_decay=0.1), ref_adam),
    (AdamW, dict(lr=1e-2, weight_decay=0.1), lambda *a, **k: ref_adam(*a, decoupled=True, **k)),
    (RMSprop, dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=0.1), ref_rmsprop),
    (Adagrad, dict(lr=1e-1, lr_decay=0.1, initial_accumulator_value=0.1, weight_decay=0.1), ref_adagrad),
]


@pytest.mark.parametrize("cls,kw,ref", ALL, ids=[c.__name__ for c, _, _ in ALL])
def test_float32_preserved(cls, kw, ref):
    opt = cls(**kw)
    # a NumPy float64 scalar as lr must not upcast the updates either
    opt.lr = np.float64(kw["lr"])
    params, ref_params = run_both(opt, ref, {k: v for k, v in kw.items() if k != "lr"}, dtype=np.float32)
    for p, r in zip(params, ref_params):
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, r, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("cls,kw,ref", ALL, ids=[c.__name__ for c, _, _ in ALL])
def test_lr_change_between_steps(cls, kw, ref):
    lrs = [kw["lr"] * f for f in (1.0, 0.5, 2.0, 0.0, 1.0, 0.1, 3.0)]
    params, ref_params = run_both(cls(**kw), ref, {k: v for k, v in kw.items() if k != "lr"}, lr_per_step=lrs)
    for p, r in zip(params, ref_params):
        np.testing.assert_allclose(p, r, rtol=1e-12, atol=1e-14)


def test_lr_change_has_effect():
    p1, p2 = np.ones(2), np.ones(2)
    opt = SGD(lr=0.1)
    step_in_place(opt, p1, np.ones(2), {}, 1)
    opt.lr = 0.3
    step_in_place(opt, p2, np.ones(2), {}, 2)
    np.testing.assert_allclose(p1, 0.9)
    np.testing.assert_allclose(p2, 0.7)


def test_state_names_and_init_state():
    p = np.zeros((2, 3), np.float32)
    assert SGD().state_names == ()
    assert SGD(momentum=0.9).state_names == ("momentum_buffer",)
    assert Adam().state_names == ("exp_avg", "exp_avg_sq")
    assert Adam(amsgrad=True).state_names == ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    assert RMSprop(momentum=0.1, centered=True).state_names == ("square_avg", "momentum_buffer", "grad_avg")
    assert Adagrad().state_names == ("sum",)
    for opt in (SGD(momentum=0.9), Adam(amsgrad=True), RMSprop(momentum=0.1, centered=True), Adagrad()):
        s = opt.init_state(p)
        assert tuple(s) == opt.state_names
        assert all(v.shape == p.shape and v.dtype == np.float32 and not v.any() for v in s.values())


def test_state_built_with_other_settings_is_a_clear_error():
    opt = SGD(lr=0.1)
    p = np.ones(2)
    s = opt.init_state(p)
    opt.momentum = 0.9
    with pytest.raises(OptimizerError, match="momentum_buffer"):
        step_in_place(opt, p, np.ones(2), s, 1)


# ---------------------------------------------------------------------------
# User-defined optimizers, registry, config round trip
# ---------------------------------------------------------------------------


class SignSGD(Optimizer):
    name = "test_signsgd"

    def update(self, param, grad, state, step, h):
        return param - scalar(h.lr, param) * gn.sign(grad), {}


class Lion(Optimizer):
    name = "test_lion"
    state_names = ("exp_avg",)
    defaults = {"betas": (0.9, 0.99), "weight_decay": 0.0}

    def update(self, param, grad, state, step, h):
        b1, b2 = h.betas
        m = state["exp_avg"]
        param = param * scalar(1 - h.lr * h.weight_decay, param)
        param = param - scalar(h.lr, param) * gn.sign(m * scalar(b1, m) + grad * scalar(1 - b1, m))
        return param, {"exp_avg": m * scalar(b2, m) + grad * scalar(1 - b2, m)}


def test_user_defined_optimizer():
    opt = SignSGD(lr=0.25)
    assert opt.hyperparams() == {"lr": 0.25, "max_grad_norm": None}
    p = np.array([1.0, 1.0, 1.0], np.float32)
    s = opt.init_state(p)
    assert s == {}
    for t in range(1, 4):
        step_in_place(opt, p, np.array([3.0, -0.1, 0.0], np.float32), s, t)
    np.testing.assert_array_equal(p, [0.25, 1.75, 1.0])
    assert p.dtype == np.float32

    lion = Lion(lr=0.1, weight_decay=0.5)
    assert lion.betas == (0.9, 0.99) and lion.weight_decay == 0.5
    p = np.array([1.0, -2.0])
    s = lion.init_state(p)
    step_in_place(lion, p, np.array([1.0, -1.0]), s, 1)
    np.testing.assert_allclose(p, [1.0 * 0.95 - 0.1, -2.0 * 0.95 + 0.1])
    np.testing.assert_allclose(s["exp_avg"], [0.01, -0.01])
    assert "betas=(0.9, 0.99)" in repr(lion)

    with pytest.raises(TypeError):

        class NoUpdate(Optimizer):
            name = "noupdate"

        NoUpdate(lr=0.1)


def test_register_and_get_user_optimizer():
    optim.register(SignSGD)
    try:
        opt = optim.get("TEST_SIGNSGD", lr=0.5)
        assert isinstance(opt, SignSGD) and opt.lr == 0.5
        assert "test_signsgd" in optim.available()

        class Other(Optimizer):
            name = "test_signsgd"

            def update(self, xp, param, grad, state, step):
                pass

        with pytest.raises(OptimizerError, match="already registered"):
            optim.register(Other)
        optim.register(replace=True)(Other)
        assert isinstance(optim.get("test_signsgd", lr=0.1), Other)
    finally:
        from graphnet.optim import optimizer as _mod

        _mod._REGISTRY.pop("test_signsgd", None)


def test_registry_errors():
    with pytest.raises(OptimizerError) as info:
        optim.get("adamax", lr=0.1)
    msg = str(info.value)
    assert "adamax" in msg
    for known in ("adagrad", "adam", "adamw", "rmsprop", "sgd"):
        assert known in msg
    with pytest.raises(OptimizerError, match="betaz"):
        optim.get("adam", betaz=(0.9, 0.9))
    with pytest.raises(OptimizerError):
        optim.get(3)

    class Nameless(Optimizer):
        def update(self, xp, param, grad, state, step):
            pass

    with pytest.raises(OptimizerError, match="name"):
        optim.register(Nameless)
    with pytest.raises(OptimizerError):
        optim.register(int)


def test_get_builtin_and_config_round_trip():
    for name in optim.available():
        opt = optim.get(name)
        assert type(opt).name == name
    for opt in (
        SGD(0.1, momentum=0.9, nesterov=True, max_grad_norm=1.0),
        Adam(3e-4, betas=(0.8, 0.9), amsgrad=True),
        AdamW(weight_decay=0.05),
        RMSprop(momentum=0.2, centered=True),
        Adagrad(lr_decay=0.01, initial_accumulator_value=0.1),
    ):
        hyper = json.loads(json.dumps(opt.hyperparams()))
        again = optim.from_config(opt.name, hyper)
        assert type(again) is type(opt)
        assert repr(again) == repr(opt)
    assert SGD(max_grad_norm=2.0).max_grad_norm == 2.0
    assert AdamW().weight_decay == 1e-2
    assert optim.get(SGD()) is not None


@pytest.mark.parametrize(
    "make",
    [
        lambda: SGD(lr=-0.1),
        lambda: SGD(lr=float("nan")),
        lambda: SGD(lr="0.1"),
        lambda: SGD(momentum=-0.5),
        lambda: SGD(weight_decay=-1e-4),
        lambda: SGD(nesterov=True),  # needs momentum
        lambda: SGD(momentum=0.9, dampening=0.1, nesterov=True),  # needs dampening 0
        lambda: SGD(max_grad_norm=0.0),
        lambda: SGD(max_grad_norm=-1.0),
        lambda: Adam(betas=(1.0, 0.999)),
        lambda: Adam(betas=(0.9, -0.1)),
        lambda: Adam(betas=(0.9,)),
        lambda: Adam(eps=-1e-8),
        lambda: Adam(weight_decay=-0.1),
        lambda: AdamW(betas=(0.9, 1.5)),
        lambda: RMSprop(alpha=-0.1),
        lambda: RMSprop(alpha=1.5),
        lambda: RMSprop(momentum=-0.1),
        lambda: RMSprop(eps=-1.0),
        lambda: Adagrad(lr_decay=-0.1),
        lambda: Adagrad(initial_accumulator_value=-1.0),
        lambda: Adagrad(eps=-1.0),
        lambda: SignSGD(lr=0.1, _private=1),
        lambda: SignSGD(lr=0.1, update=1),
    ],
)
def test_hyperparameter_validation(make):
    with pytest.raises(OptimizerError):
        make()


def test_validate_after_manual_change():
    opt = Adam()
    opt.betas = (0.9, 1.0)
    with pytest.raises(OptimizerError, match="betas"):
        opt.validate()


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------


def lrs_over(sched, opt, n):
    """lr in effect at epochs 0..n-1 (epoch 0 is set by the constructor)."""
    out = [opt.lr]
    assert sched.get_last_lr() == [opt.lr] and sched.last_epoch == 0
    for e in range(1, n):
        sched.step()
        assert sched.last_epoch == e
        out.append(opt.lr)
        assert sched.get_last_lr() == [opt.lr]
    return out


def test_step_lr():
    opt = SGD(lr=0.5)
    got = lrs_over(StepLR(opt, step_size=3, gamma=0.2), opt, 10)
    np.testing.assert_allclose(got, [0.5 * 0.2 ** (e // 3) for e in range(10)], rtol=1e-15)
    assert got[2] == 0.5 and got[3] == pytest.approx(0.1) and got[6] == pytest.approx(0.02)


def test_multistep_lr():
    opt = SGD(lr=1.0)
    got = lrs_over(MultiStepLR(opt, milestones=[6, 2, 6], gamma=0.5), opt, 9)
    np.testing.assert_allclose(got, [1, 1, 0.5, 0.5, 0.5, 0.5, 0.125, 0.125, 0.125], rtol=1e-15)


def test_exponential_lr():
    opt = Adam(lr=0.1)
    got = lrs_over(ExponentialLR(opt, gamma=0.9), opt, 8)
    np.testing.assert_allclose(got, [0.1 * 0.9**e for e in range(8)], rtol=1e-14)


def test_cosine_annealing_lr():
    opt = SGD(lr=0.1)
    got = lrs_over(CosineAnnealingLR(opt, T_max=10, eta_min=0.001), opt, 21)
    want = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(21)]
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert got[0] == pytest.approx(0.1)
    assert got[5] == pytest.approx(0.0505)
    assert got[10] == pytest.approx(0.001)
    assert got[20] == pytest.approx(0.1)


def test_lambda_and_linear_lr():
    opt = SGD(lr=0.2)
    got = lrs_over(LambdaLR(opt, lambda e: 1.0 / (1 + e)), opt, 5)
    np.testing.assert_allclose(got, [0.2 / (1 + e) for e in range(5)], rtol=1e-15)
    opt = SGD(lr=0.3)
    got = lrs_over(LinearLR(opt, start_factor=0.0, end_factor=1.0, total_iters=4), opt, 7)
    np.testing.assert_allclose(got, [0.0, 0.075, 0.15, 0.225, 0.3, 0.3, 0.3], rtol=1e-15)


def test_schedule_drives_optimizer_updates():
    opt = SGD(lr=1.0)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    p = np.zeros(1)
    for t in range(1, 5):
        step_in_place(opt, p, np.ones(1), {}, t)
        sched.step()
    assert p[0] == pytest.approx(-(1 + 0.5 + 0.25 + 0.125))


def test_schedule_state_dict_round_trip():
    opt = SGD(lr=0.1)
    sched = CosineAnnealingLR(opt, T_max=8, eta_min=0.01)
    for _ in range(3):
        sched.step()
    sd = json.loads(json.dumps(sched.state_dict()))
    assert sd["last_epoch"] == 3 and sd["base_lr"] == 0.1 and sd["T_max"] == 8

    opt2 = SGD(lr=0.7)
    sched2 = CosineAnnealingLR(opt2, T_max=2)
    sched2.load_state_dict(sd)
    assert opt2.lr == opt.lr and sched2.get_last_lr() == sched.get_last_lr()
    sched.step()
    sched2.step()
    assert opt2.lr == opt.lr and sched2.last_epoch == 4

    ms = MultiStepLR(SGD(lr=1.0), [3, 1])
    sd = json.loads(json.dumps(ms.state_dict()))
    ms2 = MultiStepLR(SGD(lr=1.0), [10])
    ms2.load_state_dict(sd)
    assert ms2.milestones == (1, 3)
    with pytest.raises(OptimizerError, match="StepLR"):
        StepLR(SGD(), 2).load_state_dict(sched.state_dict())


@pytest.mark.parametrize(
    "make",
    [
        lambda o: StepLR(o, step_size=0),
        lambda o: StepLR(o, step_size=1.5),
        lambda o: MultiStepLR(o, milestones=[1, -2]),
        lambda o: MultiStepLR(o, milestones=3),
        lambda o: ExponentialLR(o, gamma=-0.5),
        lambda o: CosineAnnealingLR(o, T_max=0),
        lambda o: CosineAnnealingLR(o, T_max=5, eta_min=-1.0),
        lambda o: LambdaLR(o, 0.5),
        lambda o: LinearLR(o, total_iters=0),
        lambda o: StepLR(object(), step_size=1),
    ],
)
def test_schedule_validation(make):
    with pytest.raises(OptimizerError):
        make(SGD(lr=0.1))
