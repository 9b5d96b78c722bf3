"""LR schedules over parameter groups, and OneCycleLR, ReduceLROnPlateau, SequentialLR,
CosineAnnealingWarmRestarts and PolynomialLR against the rates PyTorch gives.

The literal sequences below were printed by ``torch.optim.lr_scheduler`` (torch 2.13, CPU)
for an SGD (or Adam) optimizer with two parameter groups at lr 0.05 and 0.2 (default lr
0.1), reading ``get_last_lr()`` after construction and after each ``step()``; momentum
sequences read ``group["momentum"]`` / ``group["betas"][0]``. No test imports torch.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import graphnet as gn
from graphnet.errors import OptimizerError
from graphnet.optim import (
    SGD,
    Adagrad,
    Adam,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

LRS = (0.05, 0.2)


def grouped(cls=SGD, lrs=LRS, **kw):
    """An optimizer with one parameter group per rate in ``lrs`` (default lr 0.1)."""
    params = [gn.Parameter(np.zeros(1), name=f"w{i}") for i in range(len(lrs))]
    return cls([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=0.1, **kw)


def group_lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def run(sched, opt, n, metrics=None):
    """The rates at epochs 0..n-1, checking that each group's lr is what get_last_lr() says."""
    out = [sched.get_last_lr()]
    assert group_lrs(opt) == out[0]
    for e in range(1, n):
        if metrics is not None:
            sched.step(metrics[e - 1])
        else:
            sched.step()
        out.append(sched.get_last_lr())
        assert group_lrs(opt) == out[-1]
    return out


def close(got, want, rtol=1e-12):
    np.testing.assert_allclose(np.array(got, dtype=np.float64), np.array(want, dtype=np.float64), rtol=rtol,
                               atol=1e-15)


# --- every schedule acts on every group ------------------------------------------------------------

# torch: CosineAnnealingLR(T_max=3) with groups at 0.05 and 0.2
TORCH_COSINE = [[0.05, 0.2], [0.037500000000000006, 0.15000000000000002], [0.012500000000000008, 0.05000000000000003],
                [0.0, 0.0], [0.012499999999999997, 0.04999999999999999]]


def test_cosine_scales_each_group_from_its_own_rate():
    opt = grouped()
    sched = CosineAnnealingLR(opt, T_max=3)
    assert sched.base_lrs == list(LRS)
    close(run(sched, opt, 5), TORCH_COSINE)
    assert opt.lr == 0.1  # the default rate no group uses is left alone, as PyTorch does


def test_a_group_without_its_own_rate_starts_from_the_optimizers():
    p, q = gn.Parameter(np.zeros(1)), gn.Parameter(np.zeros(1))
    opt = SGD([{"params": [p], "lr": 0.05}, {"params": [q]}], lr=0.2)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    # torch: StepLR(step_size=2, gamma=0.5), groups at 0.05 and 0.2
    close(run(sched, opt, 6), [[0.05, 0.2], [0.05, 0.2], [0.025, 0.1], [0.025, 0.1], [0.0125, 0.05],
                               [0.0125, 0.05]])


@pytest.mark.parametrize("make, formula", [
    (lambda o: StepLR(o, step_size=3, gamma=0.3), lambda b, e: b * 0.3 ** (e // 3)),
    (lambda o: MultiStepLR(o, [2, 5], gamma=0.5), lambda b, e: b * 0.5 ** ((e >= 2) + (e >= 5))),
    (lambda o: ExponentialLR(o, gamma=0.8), lambda b, e: b * 0.8 ** e),
    (lambda o: LinearLR(o, start_factor=0.25, total_iters=4), lambda b, e: b * (0.25 + 0.75 * min(e, 4) / 4)),
    (lambda o: LambdaLR(o, lambda e: 1 / (1 + e)), lambda b, e: b / (1 + e)),
    (lambda o: PolynomialLR(o, total_iters=6, power=0.5), lambda b, e: b * (1 - min(e, 6) / 6) ** 0.5),
])
def test_every_closed_form_schedule_sets_every_group(make, formula):
    opt = grouped()
    got = run(make(opt), opt, 9)
    close(got, [[formula(b, e) for b in LRS] for e in range(9)], rtol=1e-14)


def test_without_groups_there_is_one_rate_on_optimizer_lr():
    opt = SGD(lr=0.05)
    sched = CosineAnnealingLR(opt, T_max=4)
    lrs = [opt.lr]
    for _ in range(4):
        sched.step()
        assert sched.get_last_lr() == [opt.lr]
        lrs.append(opt.lr)
    # the example: PyTorch gives 0.05 -> 0.043 -> 0.025 -> 0.007 -> 0
    close(lrs, [0.05, 0.04267766952966369, 0.025, 0.007322330470336313, 0.0], rtol=1e-12)


def test_lambda_lr_takes_one_function_per_group():
    opt = grouped()
    sched = LambdaLR(opt, [lambda e: 0.5 ** e, lambda e: 1 + e])
    close(run(sched, opt, 3), [[0.05, 0.2], [0.025, 0.4], [0.0125, 0.6]])
    with pytest.raises(OptimizerError, match="one per parameter group"):
        LambdaLR(grouped(), [lambda e: 1.0])


def test_a_subclass_lr_at_reading_base_lr_still_works_per_group():
    class Halving(LRScheduler):
        def lr_at(self, epoch):
            return self.base_lr / 2 ** epoch

    opt = grouped()
    close(run(Halving(opt), opt, 3), [[0.05, 0.2], [0.025, 0.1], [0.0125, 0.05]])


def test_grouped_schedule_drives_a_compiled_plan():
    """Each group's parameter moves by its own scheduled rate (the bug: only optimizer.lr moved)."""
    w1 = gn.Parameter(np.zeros(2), name="w1")
    w2 = gn.Parameter(np.zeros(2), name="w2")
    x = gn.placeholder("x", (2,), "float64")
    opt = SGD([{"params": [w1], "lr": 0.05}, {"params": [w2], "lr": 0.2}], lr=0.1)
    train = gn.compile(gn.sum(x * w1) + gn.sum(x * w2), optimizer=opt)
    sched = CosineAnnealingLR(opt, T_max=3)
    for epoch in range(4):
        before1, before2 = w1.data.copy(), w2.data.copy()
        train.run(x=np.ones(2))  # the gradient of each parameter is 1
        np.testing.assert_allclose(before1 - w1.data, TORCH_COSINE[epoch][0], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(before2 - w2.data, TORCH_COSINE[epoch][1], rtol=1e-12, atol=1e-15)
        sched.step()


def test_state_dict_has_one_base_rate_per_group_and_old_states_load():
    opt = grouped()
    sched = CosineAnnealingLR(opt, T_max=3)
    sched.step()
    sd = json.loads(json.dumps(sched.state_dict()))
    assert sd["base_lrs"] == list(LRS) and sd["last_epoch"] == 1 and len(sd["last_lr"]) == 2
    other = grouped(lrs=(1.0, 1.0))
    sched2 = CosineAnnealingLR(other, T_max=7)
    sched2.load_state_dict(sd)
    assert group_lrs(other) == group_lrs(opt) and sched2.base_lrs == list(LRS) and sched2.T_max == 3
    sched.step()
    sched2.step()
    assert group_lrs(other) == group_lrs(opt)
    # a state saved before schedules knew groups: one base_lr, one last_lr
    old = {"type": "CosineAnnealingLR", "base_lr": 0.1, "last_epoch": 2, "last_lr": 0.025, "T_max": 4,
           "eta_min": 0.0}
    plain = SGD(lr=0.7)
    sched3 = CosineAnnealingLR(plain, T_max=2)
    sched3.load_state_dict(old)
    assert plain.lr == 0.025 and sched3.base_lrs == [0.1] and sched3.get_last_lr() == [0.025]
    sched3.step()
    assert plain.lr == pytest.approx(0.1 * (1 + math.cos(math.pi * 3 / 4)) / 2, rel=1e-14)
    with pytest.raises(OptimizerError, match="parameter group"):
        CosineAnnealingLR(grouped(lrs=(1.0, 1.0, 1.0)), T_max=2).load_state_dict(sd)


# --- PolynomialLR -----------------------------------------------------------------------------------

def test_polynomial_lr_matches_torch():
    opt = grouped()
    # torch: PolynomialLR(total_iters=4, power=2.0)
    close(run(PolynomialLR(opt, total_iters=4, power=2.0), opt, 7),
          [[0.05, 0.2], [0.028125, 0.1125], [0.012499999999999999, 0.049999999999999996],
           [0.0031249999999999997, 0.012499999999999999], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    opt = grouped()
    # torch: PolynomialLR() (total_iters=5, power=1.0)
    close(run(PolynomialLR(opt), opt, 7),
          [[0.05, 0.2], [0.04000000000000001, 0.16000000000000003], [0.030000000000000002, 0.12000000000000001],
           [0.020000000000000004, 0.08000000000000002], [0.01, 0.04], [0.0, 0.0], [0.0, 0.0]])


# --- CosineAnnealingWarmRestarts --------------------------------------------------------------------

# torch: CosineAnnealingWarmRestarts(T_0=3, T_mult=2, eta_min=0.001)
TORCH_WARM = [[0.05, 0.2], [0.037750000000000006, 0.15025], [0.013250000000000005, 0.050750000000000024], [0.05, 0.2],
              [0.046717622392718754, 0.18666952767655168], [0.037750000000000006, 0.15025],
              [0.025500000000000002, 0.1005], [0.013250000000000005, 0.050750000000000024],
              [0.004282377607281252, 0.014330472323448348], [0.05, 0.2], [0.04916518274408217, 0.1966096197157623],
              [0.046717622392718754, 0.18666952767655168], [0.04282411613907042, 0.17085712472806147],
              [0.037750000000000006, 0.15025], [0.03184106660501176, 0.12625249498770083],
              [0.025500000000000002, 0.1005]]


def test_warm_restarts_match_torch():
    opt = grouped()
    sched = CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2, eta_min=0.001)
    close(run(sched, opt, 16), TORCH_WARM)
    assert (sched.T_cur, sched.T_i) == (6, 12)
    opt = grouped()
    # torch: CosineAnnealingWarmRestarts(T_0=4): restarts every 4 epochs
    period = [[0.05, 0.2], [0.04267766952966369, 0.17071067811865476], [0.025, 0.1],
              [0.0073223304703363135, 0.029289321881345254]]
    close(run(CosineAnnealingWarmRestarts(opt, T_0=4), opt, 10), (period * 3)[:10])


# --- OneCycleLR -------------------------------------------------------------------------------------

# torch: OneCycleLR(max_lr=[1.0, 0.5], total_steps=10) on SGD: group 0's rates (group 1's are half)
# and the momentum of both groups, for steps 0..10
TORCH_ONECYCLE_LR = [0.040000000000000036, 0.52, 1.0, 0.9504846320134737, 0.8117456539497631, 0.6112620219362893,
                     0.38874197806371075, 0.18825834605023697, 0.049519367986526286, 4e-06, 0.04951936798652623]
TORCH_ONECYCLE_MOMENTUM = [0.95, 0.8999999999999999, 0.85, 0.854951556604879, 0.8688255099070633, 0.8888739533021842,
                           0.9111260466978157, 0.9311744900929366, 0.945048443395121, 0.95, 0.945048443395121]


def test_one_cycle_matches_torch_with_momentum_per_group():
    opt = grouped()
    sched = OneCycleLR(opt, max_lr=[1.0, 0.5], total_steps=10)
    assert [g["momentum"] for g in opt.param_groups] == [0.95, 0.95]
    momentum = [[g["momentum"] for g in opt.param_groups]]
    lrs = [sched.get_last_lr()]
    for _ in range(10):
        sched.step()
        lrs.append(sched.get_last_lr())
        momentum.append([g["momentum"] for g in opt.param_groups])
    close(lrs, [[v, v / 2] for v in TORCH_ONECYCLE_LR])
    close(momentum, [[m, m] for m in TORCH_ONECYCLE_MOMENTUM])
    assert sched.base_lrs == [0.04, 0.02]
    with pytest.raises(OptimizerError, match="total_steps is 10"):
        sched.step()
    assert sched.last_epoch == 10


def test_one_cycle_three_phase_linear_cycles_adam_beta1():
    opt = Adam(lr=0.1, betas=(0.9, 0.99))
    sched = OneCycleLR(opt, max_lr=0.3, epochs=3, steps_per_epoch=4, pct_start=0.25, anneal_strategy="linear",
                       three_phase=True, div_factor=10.0, final_div_factor=100.0)
    lrs, beta1 = [opt.lr], [opt.betas[0]]
    for _ in range(12):
        sched.step()
        lrs.append(opt.lr)
        beta1.append(opt.betas[0])
        assert opt.betas[1] == 0.99
    # torch: the same settings on torch.optim.Adam; its last step, at total_steps, extrapolates
    # to -0.003942857142857137, which graphnet stops at 0 (a negative rate would ascend)
    close(lrs, [0.03, 0.165, 0.30000000000000004, 0.16499999999999998, 0.02999999999999997, 0.025757142857142857,
                0.021514285714285715, 0.017271428571428573, 0.013028571428571431, 0.008785714285714286,
                0.004542857142857147, 0.00030000000000000165, 0.0])
    close(beta1, [0.95, 0.8999999999999999, 0.85, 0.8999999999999999] + [0.95] * 9)


def test_one_cycle_without_momentum_and_errors():
    opt = SGD(lr=0.1, momentum=0.5)
    sched = OneCycleLR(opt, max_lr=0.1, total_steps=7, cycle_momentum=False, pct_start=0.4)
    lrs = [opt.lr] + [sched.step() for _ in range(7)]
    # torch: OneCycleLR(max_lr=0.1, total_steps=7, cycle_momentum=False, pct_start=0.4)
    close(lrs, [0.0040000000000000036, 0.06033511252801265, 0.09944154354509119, 0.0811745653949763,
                0.046263710266697504, 0.01334775301888305, 4e-07, 0.013347753018883055])
    assert opt.momentum == 0.5
    with pytest.raises(OptimizerError, match="neither betas nor momentum"):
        OneCycleLR(Adagrad(lr=0.1), max_lr=0.1, total_steps=5)
    OneCycleLR(Adagrad(lr=0.1), max_lr=0.1, total_steps=5, cycle_momentum=False)
    with pytest.raises(OptimizerError, match="total_steps or both epochs"):
        OneCycleLR(SGD(lr=0.1), max_lr=0.1, epochs=3)
    with pytest.raises(OptimizerError, match="phase of no steps"):  # PyTorch: ZeroDivisionError
        OneCycleLR(SGD(lr=0.1), max_lr=1.0, total_steps=10, pct_start=0.1)
    with pytest.raises(OptimizerError, match="anneal_strategy"):
        OneCycleLR(SGD(lr=0.1), max_lr=1.0, total_steps=10, anneal_strategy="exp")
    with pytest.raises(OptimizerError, match="one per parameter group"):
        OneCycleLR(grouped(), max_lr=[1.0], total_steps=10)
    with pytest.raises(OptimizerError, match="beta1"):
        OneCycleLR(Adam(lr=0.1), max_lr=1.0, total_steps=10, max_momentum=1.0)


def test_one_cycle_state_round_trip():
    opt = grouped(Adam)
    sched = OneCycleLR(opt, max_lr=[1.0, 0.5], total_steps=10)
    for _ in range(3):
        sched.step()
    sd = json.loads(json.dumps(sched.state_dict()))
    opt2 = grouped(Adam)
    sched2 = OneCycleLR(opt2, max_lr=0.1, total_steps=20)
    sched2.load_state_dict(sd)
    assert group_lrs(opt2) == group_lrs(opt)
    assert [g["betas"] for g in opt2.param_groups] == [g["betas"] for g in opt.param_groups]
    sched.step()
    sched2.step()
    assert group_lrs(opt2) == group_lrs(opt)
    assert [g["betas"] for g in opt2.param_groups] == [g["betas"] for g in opt.param_groups]


# --- SequentialLR -----------------------------------------------------------------------------------

def test_sequential_lr_matches_torch():
    opt = grouped()
    warmup = LinearLR(opt, start_factor=0.1, total_iters=3)
    cosine = CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    decay = ExponentialLR(opt, gamma=0.5)
    sched = SequentialLR(opt, [warmup, cosine, decay], milestones=[3, 7])
    # torch: the same three schedulers in SequentialLR(milestones=[3, 7]); the cosine and the
    # exponential decay start from the groups' initial rates, not from the warm-up's
    close(run(sched, opt, 11),
          [[0.005000000000000001, 0.020000000000000004], [0.02, 0.08], [0.035, 0.14], [0.05, 0.2],
           [0.044142135623730955, 0.172175144212722], [0.03, 0.10499999999999998],
           [0.01585786437626905, 0.03782485578727799], [0.05, 0.2], [0.025, 0.1], [0.0125, 0.05], [0.00625, 0.025]])
    assert decay.last_epoch == 3 and cosine.last_epoch == 3
    sd = json.loads(json.dumps(sched.state_dict()))
    opt2 = grouped()
    a, b, c = (LinearLR(opt2, start_factor=0.1, total_iters=3), CosineAnnealingLR(opt2, T_max=4, eta_min=0.01),
               ExponentialLR(opt2, gamma=0.5))
    sched2 = SequentialLR(opt2, [a, b, c], milestones=[3, 7])
    sched2.load_state_dict(sd)
    sched.step()
    sched2.step()
    assert group_lrs(opt2) == group_lrs(opt) and sched2.last_epoch == 11


def test_sequential_lr_errors():
    opt = SGD(lr=0.1)
    a, b = StepLR(opt, 2), ExponentialLR(opt, 0.9)
    with pytest.raises(OptimizerError, match="milestone"):
        SequentialLR(opt, [a, b], milestones=[])
    with pytest.raises(OptimizerError, match="another optimizer"):
        SequentialLR(opt, [a, StepLR(SGD(lr=0.1), 2)], milestones=[3])
    with pytest.raises(OptimizerError, match="ReduceLROnPlateau"):
        SequentialLR(opt, [a, ReduceLROnPlateau(opt)], milestones=[3])
    with pytest.raises(OptimizerError, match="increasing"):
        SequentialLR(opt, [a, b, StepLR(opt, 1)], milestones=[5, 3])


# --- ReduceLROnPlateau ------------------------------------------------------------------------------

def test_reduce_on_plateau_matches_torch():
    metrics = [1.0, 0.9, 0.95, 0.92, 0.91, 0.9, 0.89999, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    opt = grouped()
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1, min_lr=[0.01, 0.0])
    # torch: ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1, min_lr=[0.01, 0.0]) on these metrics
    close(run(sched, opt, 16, metrics),
          [[0.05, 0.2]] * 4 + [[0.025, 0.1]] * 3 + [[0.0125, 0.05]] * 3 + [[0.01, 0.025]] * 3 + [[0.01, 0.0125]] * 3)
    assert sched.best == 0.5 and sched.last_epoch == 15

    metrics = [1, 2, 2.0001, 2.5, 2.4, 2.3, 2.2, 2.1, 3.0, 2.9, 2.8, 2.7]
    opt = grouped()
    sched = ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=2, threshold=0.05, threshold_mode="abs", eps=0.01)
    # torch: the same settings; the second cut of group 0 (0.005 -> 0.0005) is no more than eps, so it is skipped
    close(run(sched, opt, 13, metrics),
          [[0.05, 0.2]] * 7 + [[0.005000000000000001, 0.020000000000000004]] * 5
          + [[0.005000000000000001, 0.0020000000000000005]])


def test_reduce_on_plateau_state_and_errors():
    opt = SGD(lr=1.0)
    sched = ReduceLROnPlateau(opt, patience=0)
    sched.step(1.0)
    sd = json.loads(json.dumps(ReduceLROnPlateau(SGD(lr=1.0)).state_dict()))  # best is inf before any metric
    assert sd["best"] is None
    sched.step(2.0)
    assert opt.lr == pytest.approx(0.1) and sched.get_last_lr() == [opt.lr]
    sd = json.loads(json.dumps(sched.state_dict()))
    opt2 = SGD(lr=1.0)
    sched2 = ReduceLROnPlateau(opt2)
    sched2.load_state_dict(sd)
    assert opt2.lr == opt.lr and sched2.best == 1.0 and sched2.patience == 0
    sched.step(3.0)
    sched2.step(3.0)
    assert opt2.lr == opt.lr == pytest.approx(0.01)
    with pytest.raises(OptimizerError, match="factor"):
        ReduceLROnPlateau(SGD(lr=0.1), factor=1.0)
    with pytest.raises(OptimizerError, match="mode"):
        ReduceLROnPlateau(SGD(lr=0.1), mode="lowest")
    with pytest.raises(OptimizerError, match="threshold_mode"):
        ReduceLROnPlateau(SGD(lr=0.1), threshold_mode="percent")
    with pytest.raises(OptimizerError, match="metric must be a number"):
        sched.step("low")
    with pytest.raises(OptimizerError, match="needs the monitored metric"):
        sched.step()
    with pytest.raises(OptimizerError, match="one per parameter group"):
        ReduceLROnPlateau(grouped(), min_lr=[0.0])


@pytest.mark.parametrize("make", [
    lambda o: PolynomialLR(o, total_iters=0),
    lambda o: PolynomialLR(o, power=-1.0),
    lambda o: CosineAnnealingWarmRestarts(o, T_0=0),
    lambda o: CosineAnnealingWarmRestarts(o, T_0=2, T_mult=0),
    lambda o: CosineAnnealingWarmRestarts(o, T_0=2.5),
    lambda o: OneCycleLR(o, max_lr=0.1, total_steps=0),
    lambda o: OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5),
    lambda o: ReduceLROnPlateau(o, patience=-1),
    lambda o: ReduceLROnPlateau(o, cooldown=1.5),
])
def test_new_schedule_validation(make):
    with pytest.raises(OptimizerError):
        make(SGD(lr=0.1))


def test_fit_steps_reduce_on_plateau_with_the_epoch_loss():
    import graphnet as gn

    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 2))
    t = gn.placeholder("t", (None, 1))
    optimizer = gn.optim.SGD(lr=0.1)
    train = gn.compile(gn.losses.mse(gn.nn.Linear(2, 1)(x), t), optimizer=optimizer)
    batches = [(np.ones((4, 2), np.float32), np.full((4, 1), 3.0, np.float32))]
    schedule = gn.optim.ReduceLROnPlateau(optimizer, mode="max", patience=0, factor=0.5)  # 'max' of a falling loss
    history = gn.train.fit(train, batches, epochs=3, schedule=schedule, progress=False, log=None)
    assert history.lr == [0.1, 0.1, 0.05] and optimizer.lr == 0.025  # the first epoch sets the best
