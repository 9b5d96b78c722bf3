"""The losses under PyTorch's functional names: values against NumPy references written from
the torch.nn.functional definitions, gradients against float64 central differences.

While developing, each reference below was checked against torch 2.13 (CPU) on the inputs
these tests use; no test imports torch.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphnet as gn
from graphnet.errors import DTypeError, FeedError, ShapeError

from helpers import assert_close, compile_plan, covers, finite_difference, placeholders, rel_error

R = np.random.default_rng(23)
REDUCTIONS = ("mean", "sum", "none")


# --- references (float64 NumPy) ---------------------------------------------------------------------

def reduce(per, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction](per)


def log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ref_nll(logp, y, weight=None, ignore_index=None, reduction="mean"):
    n, c = logp.shape
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    kept = np.ones(n, bool) if ignore_index is None else y != ignore_index
    safe = np.where(kept, y, 0)
    w_n = np.where(kept, w[safe], 0.0)
    per = np.where(kept, -logp[np.arange(n), safe] * w_n, 0.0)
    if reduction == "mean":
        return per.sum() / w_n.sum()
    return reduce(per, reduction)


def ref_cross_entropy(z, y, weight=None, ignore_index=None, reduction="mean", label_smoothing=0.0):
    """aten's cross_entropy_loss_label_smoothing: (1 - e) nll + e / C * smooth, where smooth is
    -sum_c w_c logp_c (0 for ignored rows) and the mean divides by the kept targets' weights."""
    logp = log_softmax(z)
    n, c = logp.shape
    nll = ref_nll(logp, y, weight, ignore_index, reduction)
    if not label_smoothing:
        return nll
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    kept = np.ones(n, bool) if ignore_index is None else y != ignore_index
    smooth = np.where(kept, -(logp * w).sum(axis=1), 0.0)
    if reduction == "mean":
        smooth = smooth.sum() / w[y[kept]].sum()
    else:
        smooth = reduce(smooth, reduction)
    return (1 - label_smoothing) * nll + smooth * (label_smoothing / c)


def ref_smooth_l1(x, t, beta=1.0, reduction="mean"):
    d = np.abs(x - t)
    per = d if beta == 0 else np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return reduce(per, reduction)


def ref_huber(x, t, delta=1.0, reduction="mean"):
    d = np.abs(x - t)
    return reduce(np.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)), reduction)


def ref_bce(x, t, weight=None, reduction="mean"):
    with np.errstate(divide="ignore"):
        per = -(t * np.maximum(np.log(x), -100) + (1 - t) * np.maximum(np.log(1 - x), -100))
    if weight is not None:
        per = per * weight
    return reduce(per, reduction)


def ref_kl(logq, p, reduction="mean", log_target=False):
    if log_target:
        per = np.exp(p) * (p - logq)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where(p == 0, 0.0, p * np.log(np.where(p == 0, 1.0, p))) - p * logq
    if reduction == "batchmean":
        return per.sum() / per.shape[0]
    return reduce(per, reduction)


# --- running and differentiating ---------------------------------------------------------------------

def evaluate(build, **feeds):
    ph = placeholders(feeds)
    return compile_plan({"out": build(**ph)}).run(**feeds)["out"]


def check_gradients(build, feeds, tol=1e-6, eps=1e-6):
    """gn.grad of ``sum(out * fixed weights)`` against central differences, for every float feed."""
    ph = placeholders(feeds)
    out = build(**ph)
    wrt = [k for k, v in feeds.items() if np.asarray(v).dtype.kind == "f"]
    if out.ndim:
        weights = R.uniform(0.5, 1.5, out.shape)
        y = gn.sum(out * gn.constant(weights))
    else:
        y = out * 1.3
    grads = gn.grad(y, [ph[k] for k in wrt])
    analytic = gn.compile({k: g for k, g in zip(wrt, grads)}).run(**feeds)
    forward = gn.compile({"y": y})
    numeric = {k: finite_difference(forward, "y", dict(feeds), k, eps) for k in wrt}
    scale = max(float(np.abs(v).max()) for v in numeric.values())
    for k in wrt:
        assert np.all(np.isfinite(analytic[k])), k
        err = rel_error(analytic[k], numeric[k], 1e-4 * scale)
        assert err <= tol, f"d/d{k}: relative error {err:.3g}\n{analytic[k]}\n{numeric[k]}"


def logits_and_labels(n=6, c=4, ignore=None):
    z = R.standard_normal((n, c)) * 2
    y = R.integers(0, c, n).astype(np.int64)
    if ignore is not None:
        y[[1, 4]] = ignore
    return z, y


WEIGHT = np.array([0.5, 2.0, 1.0, 3.0])


# --- cross_entropy and nll_loss -----------------------------------------------------------------------

CE_SETTINGS = [
    dict(),
    dict(weight=WEIGHT),
    dict(ignore_index=-100),
    dict(ignore_index=2),
    dict(weight=WEIGHT, ignore_index=-100),
    dict(label_smoothing=0.2),
    dict(weight=WEIGHT, label_smoothing=0.2),
    dict(ignore_index=-100, label_smoothing=0.3),
    dict(weight=WEIGHT, ignore_index=1, label_smoothing=0.1),
]


def _ignore_of(kw):
    return kw.get("ignore_index")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", CE_SETTINGS, ids=lambda kw: "-".join(f"{k}" for k in kw) or "plain")
def test_cross_entropy_matches_pytorch_definition(kw, reduction):
    z, y = logits_and_labels(ignore=_ignore_of(kw))
    got = evaluate(lambda z, y: gn.losses.cross_entropy(z, y, reduction=reduction, **kw), z=z, y=y)
    assert_close(got, ref_cross_entropy(z, y, reduction=reduction, **kw), "float64")
    check_gradients(lambda z, y: gn.losses.cross_entropy(z, y, reduction=reduction, **kw), {"z": z, "y": y})


@covers("target_weights")  # (test_op_forward imports this module for its meta-test)
def test_cross_entropy_literal_values_from_torch():
    z = np.array([[1.0, 2.0, 0.5], [0.1, -1.0, 3.0], [2.0, 2.0, -2.0], [0.0, 0.3, 0.2]])
    y = np.array([1, -100, 0, 2])
    w = np.array([1.0, 0.5, 2.0])
    got = [float(evaluate(lambda z, y, s=s: gn.losses.cross_entropy(z, y, weight=w, ignore_index=-100,
                                                                     label_smoothing=s), z=z, y=y))
           for s in (0.0, 0.1)]
    # F.cross_entropy(z, y, weight=w) (ignore_index -100), without and with label_smoothing=0.1, torch 2.13
    np.testing.assert_allclose(got, [0.8800815827841099, 0.9824394108424078], rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", [dict(), dict(weight=WEIGHT), dict(ignore_index=-100),
                                dict(weight=WEIGHT, ignore_index=3)], ids=["plain", "weight", "ignore", "both"])
def test_nll_loss_matches_pytorch_definition(kw, reduction):
    z, y = logits_and_labels(ignore=_ignore_of(kw))
    logp = log_softmax(z)
    got = evaluate(lambda lp, y: gn.losses.nll_loss(lp, y, reduction=reduction, **kw), lp=logp, y=y)
    assert_close(got, ref_nll(logp, y, reduction=reduction, **kw), "float64")
    check_gradients(lambda lp, y: gn.losses.nll_loss(lp, y, reduction=reduction, **kw), {"lp": logp, "y": y})
    # the cross-entropy of scores is the nll of their log-softmax
    same = evaluate(lambda z, y: gn.losses.nll_loss(gn.log_softmax(z), y, reduction=reduction, **kw)
                    - gn.losses.cross_entropy(z, y, reduction=reduction, **kw), z=z, y=y)
    np.testing.assert_allclose(same, 0.0, atol=1e-14)


def test_ignored_rows_cost_nothing_even_with_infinite_scores():
    # PyTorch fills ignored rows with 0: a -inf score at class 0 of an ignored row gives no NaN
    z = np.array([[-np.inf, 1.0, 2.0], [0.5, 0.2, 0.1], [1.0, -1.0, 0.0]])
    y = np.array([-100, 1, 0])
    for smoothing in (0.0, 0.1):
        got = evaluate(lambda z, y: gn.losses.cross_entropy(z, y, ignore_index=-100, reduction="none",
                                                            label_smoothing=smoothing), z=z, y=y)
        assert got[0] == 0.0 and np.all(np.isfinite(got))
        want = ref_cross_entropy(z[1:], y[1:], reduction="none", label_smoothing=smoothing)
        np.testing.assert_allclose(got[1:], want, rtol=1e-12)


def test_a_mean_over_no_targets_is_a_feed_error():
    z = gn.placeholder("z", (None, 3), "float64")
    y = gn.placeholder("y", (None,), "int64")
    plan = gn.compile({"mean": gn.losses.cross_entropy(z, y, ignore_index=-100),
                       "sum": gn.losses.cross_entropy(z, y, ignore_index=-100, reduction="sum")})
    zv = R.standard_normal((3, 3))
    with pytest.raises(FeedError, match="every target is ignored .*PyTorch returns NaN"):
        plan.run(z=zv, y=np.array([-100, -100, -100]))
    sums = gn.compile({"sum": gn.losses.cross_entropy(z, y, ignore_index=-100, reduction="sum")})
    assert float(sums.run(z=zv, y=np.array([-100, -100, -100]))["sum"]) == 0.0
    zero_weight = gn.compile(gn.losses.nll_loss(z, y, weight=np.array([0.0, 1.0, 1.0])))
    with pytest.raises(FeedError, match="weights sum to 0"):
        zero_weight.run(z=zv, y=np.array([0, 0, 0]))
    np.testing.assert_allclose(plan.run(z=zv, y=np.array([-100, 2, -100]))["mean"], -log_softmax(zv)[1, 2],
                               rtol=1e-12)


def test_label_errors_stay_typed():
    z = gn.placeholder("z", (None, 3), "float64")
    with pytest.raises(DTypeError, match="integer class indices"):
        gn.losses.cross_entropy(z, gn.placeholder("y", (None,), "float32"), ignore_index=-100)
    with pytest.raises(ShapeError, match=r"expected \(N,\) labels"):
        gn.losses.nll_loss(z, gn.placeholder("y", (None, 1), "int64"), weight=[1.0, 1.0, 1.0])
    with pytest.raises(ShapeError, match="one entry per class"):
        gn.losses.cross_entropy(z, gn.placeholder("y", (None,), "int64"), weight=[1.0, 2.0])
    with pytest.raises(ShapeError, match="keyword arguments"):
        gn.losses.cross_entropy(z, gn.placeholder("y", (None,), "int64"), 0.1)
    with pytest.raises(DTypeError, match="ignore_index"):
        gn.losses.cross_entropy(z, gn.placeholder("y", (None,), "int64"), ignore_index=1.5)
    with pytest.raises(ShapeError, match="reduction"):
        gn.losses.nll_loss(z, gn.placeholder("y", (None,), "int64"), ignore_index=0, reduction="batchmean")
    y = gn.placeholder("y", (None,), "int64")
    plan = gn.compile(gn.losses.cross_entropy(z, y, weight=[1.0, 2.0, 3.0], ignore_index=-1))
    with pytest.raises(FeedError, match=r"labels must lie in \[0, 3\)"):  # target_weights's or pick's check
        plan.run(z=np.zeros((2, 3)), y=np.array([0, 5]))
    plan.run(z=np.zeros((2, 3)), y=np.array([0, -1]))
    for loss in (gn.losses.cross_entropy(z, y), gn.losses.nll_loss(z, y)):  # without ignore_index -100 is no class
        with pytest.raises(FeedError, match="labels must lie in .*pass ignore_index=-100"):
            gn.compile(loss).run(z=np.zeros((2, 3)), y=np.array([0, -100]))
    with gn.config.options(disabled_passes={"fuse_cross_entropy"}):
        with pytest.raises(FeedError, match="labels must lie in .*pass ignore_index=-100"):
            gn.compile(gn.losses.cross_entropy(z, y)).run(z=np.zeros((2, 3)), y=np.array([0, -100]))


def test_class_weights_get_no_gradient_and_keep_the_scores_dtype():
    z = gn.placeholder("z", (None, 3), "float32")
    y = gn.placeholder("y", (None,), "int64")
    w = gn.Parameter(np.array([1.0, 2.0, 3.0], np.float32), name="w")
    loss = gn.losses.cross_entropy(z, y, weight=w)
    assert loss.dtype == "float32"
    (gw,) = gn.grad(loss, [w])
    out = gn.compile({"loss": loss, "gw": gw}).run(z=np.zeros((2, 3), np.float32), y=np.array([0, 2]))
    np.testing.assert_array_equal(out["gw"], 0.0)
    np.testing.assert_allclose(out["loss"], np.log(3.0), rtol=1e-6)


def test_cross_entropy_with_weights_trains():
    gn.manual_seed(0)
    model = gn.nn.Linear(3, 3)
    x = gn.placeholder("x", (None, 3))
    y = gn.placeholder("y", (None,), "int64")
    loss = gn.losses.cross_entropy(model(x), y, weight=np.array([1.0, 2.0, 0.5]), ignore_index=-100,
                                   label_smoothing=0.05)
    train = gn.compile(loss, optimizer=gn.optim.SGD(lr=0.5))
    xb = R.standard_normal((32, 3)).astype(np.float32)
    yb = np.argmax(xb, axis=1)
    yb[::5] = -100
    first = float(train.run(x=xb, y=yb)["loss"])
    for _ in range(40):
        last = float(train.run(x=xb, y=yb)["loss"])
    assert last < 0.5 * first


# --- regression losses -----------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_l1_and_mse_losses(reduction):
    x, t = R.standard_normal((3, 4)), R.standard_normal((3, 4))
    got = evaluate(lambda x, t: gn.losses.l1_loss(x, t, reduction=reduction), x=x, t=t)
    assert_close(got, reduce(np.abs(x - t), reduction), "float64")
    check_gradients(lambda x, t: gn.losses.l1_loss(x, t, reduction=reduction), {"x": x, "t": t})
    got = evaluate(lambda x, t: gn.losses.mse_loss(x, t, reduction=reduction), x=x, t=t)
    assert_close(got, reduce((x - t) ** 2, reduction), "float64")
    check_gradients(lambda x, t: gn.losses.mse_loss(x, t, reduction=reduction), {"x": x, "t": t})
    assert_close(evaluate(lambda x, t: gn.losses.mse(x, t, reduction), x=x, t=t), got, "float64")


def _spread(shape, lo, hi, avoid, gap=0.01):
    """Differences whose size is in [lo, hi] and at least ``gap`` from each kink in ``avoid``."""
    while True:
        d = R.choice([-1.0, 1.0], shape) * R.uniform(lo, hi, shape)
        if all(np.abs(np.abs(d) - k).min() > gap for k in avoid):
            return d


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
def test_smooth_l1_loss(beta, reduction):
    t = R.standard_normal((4, 5))
    x = t + _spread((4, 5), 0.05, 2.0, (0.0, beta))  # both sides of beta, away from the kinks
    got = evaluate(lambda x, t: gn.losses.smooth_l1_loss(x, t, reduction=reduction, beta=beta), x=x, t=t)
    assert_close(got, ref_smooth_l1(x, t, beta, reduction), "float64")
    check_gradients(lambda x, t: gn.losses.smooth_l1_loss(x, t, reduction=reduction, beta=beta), {"x": x, "t": t})


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [1.0, 0.4, 2.5])
def test_huber_loss(delta, reduction):
    t = R.standard_normal((4, 5))
    x = t + _spread((4, 5), 0.05, 3.0, (0.0, delta))
    got = evaluate(lambda x, t: gn.losses.huber_loss(x, t, reduction=reduction, delta=delta), x=x, t=t)
    assert_close(got, ref_huber(x, t, delta, reduction), "float64")
    check_gradients(lambda x, t: gn.losses.huber_loss(x, t, reduction=reduction, delta=delta), {"x": x, "t": t})


def test_regression_literal_values_from_torch():
    x = np.array([0.0, 0.5, -2.0, 3.0, 1.0])
    t = np.array([0.1, -0.5, 1.0, 3.0, -1.5])
    got = evaluate(lambda x, t: gn.concat([gn.reshape(v, (1,)) for v in (
        gn.losses.l1_loss(x, t), gn.losses.mse_loss(x, t), gn.losses.smooth_l1_loss(x, t),
        gn.losses.smooth_l1_loss(x, t, beta=0.5), gn.losses.huber_loss(x, t, delta=2.0))], 0), x=x, t=t)
    # F.l1_loss, F.mse_loss, F.smooth_l1_loss (beta 1 and 0.5), F.huber_loss(delta=2) in torch 2.13
    np.testing.assert_allclose(got, [1.32, 3.252, 1.001, 1.152, 1.501], rtol=1e-12)


def test_regression_shape_and_argument_errors():
    x = gn.placeholder("x", (3, 4), "float64")
    with pytest.raises(ShapeError, match="differ in shape"):
        gn.losses.l1_loss(x, np.zeros((4, 3)))
    with pytest.raises(ShapeError, match="beta"):
        gn.losses.smooth_l1_loss(x, np.zeros((3, 4)), beta=-1.0)
    with pytest.raises(ShapeError, match="delta"):
        gn.losses.huber_loss(x, np.zeros((3, 4)), delta=0.0)
    with pytest.raises(ShapeError, match="reduction"):
        gn.losses.mse_loss(x, np.zeros((3, 4)), reduction="batchmean")


# --- binary_cross_entropy and kl_div ---------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy(reduction):
    x = R.uniform(0.05, 0.95, (3, 4))
    t = R.uniform(0, 1, (3, 4))
    w = R.uniform(0.5, 2.0, (4,))
    got = evaluate(lambda x, t: gn.losses.binary_cross_entropy(x, t, reduction=reduction), x=x, t=t)
    assert_close(got, ref_bce(x, t, reduction=reduction), "float64")
    check_gradients(lambda x, t: gn.losses.binary_cross_entropy(x, t, reduction=reduction), {"x": x, "t": t})
    got = evaluate(lambda x, t: gn.losses.binary_cross_entropy(x, t, w, reduction=reduction), x=x, t=t)
    assert_close(got, ref_bce(x, t, w, reduction), "float64")
    check_gradients(lambda x, t: gn.losses.binary_cross_entropy(x, t, w, reduction=reduction), {"x": x, "t": t})


def test_binary_cross_entropy_clamps_its_logs_at_minus_100():
    x = np.array([0.0, 1.0, 1e-50, 0.5, 1.0, 0.0], np.float64)
    t = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    got = evaluate(lambda x, t: gn.losses.binary_cross_entropy(x, t, reduction="none"), x=x, t=t)
    # torch: F.binary_cross_entropy(..., reduction="none") gives [100, 100, 100, log 2, 0, 0]
    np.testing.assert_allclose(got, [100.0, 100.0, 100.0, np.log(2.0), 0.0, 0.0], rtol=1e-15)
    ph = placeholders({"x": x, "t": t})
    (g,) = gn.grad(gn.losses.binary_cross_entropy(ph["x"], ph["t"], reduction="sum"), [ph["x"]])
    grad = gn.compile({"g": g}).run(x=x, t=t)["g"]
    # the derivative of the loss computed: 0 where a log is clamped (no NaN from log 0), -t/x and
    # (1 - t)/(1 - x) where not (torch's backward gives (x - t) / max(x (1 - x), 1e-12) instead:
    # -1e12, 1e12, -1e12, -2, 0, 0)
    np.testing.assert_allclose(grad, [0.0, 0.0, 0.0, -2.0, -1.0, 1.0], rtol=1e-15)
    f32 = evaluate(lambda x, t: gn.losses.binary_cross_entropy(x, t), x=x[:2].astype(np.float32),
                   t=t[:2].astype(np.float32))
    assert f32.dtype == np.float32 and f32 == 100.0


@pytest.mark.parametrize("reduction", REDUCTIONS + ("batchmean",))
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    logq = log_softmax(R.standard_normal((3, 5)))
    p = np.exp(log_softmax(R.standard_normal((3, 5))))
    if not log_target:
        p[0, 1] = 0.0  # 0 log 0 is 0
    target = np.log(p) if log_target else p
    got = evaluate(lambda q, p: gn.losses.kl_div(q, p, reduction=reduction, log_target=log_target), q=logq, p=target)
    assert_close(got, ref_kl(logq, target, reduction, log_target), "float64")
    feeds = {"q": logq, "p": target} if log_target else {"q": logq}
    if log_target:
        check_gradients(lambda q, p: gn.losses.kl_div(q, p, reduction=reduction, log_target=True), feeds)
    else:
        check_gradients(lambda q: gn.losses.kl_div(q, gn.constant(target), reduction=reduction), feeds)


def test_kl_div_literal_values_from_torch():
    logq = np.log(np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]))
    p = np.array([[0.1, 0.0, 0.9], [0.3, 0.3, 0.4]])
    got = [float(evaluate(lambda q, p, r=r: gn.losses.kl_div(q, p, reduction=r), q=logq, p=p))
           for r in ("mean", "batchmean", "sum")]
    # F.kl_div(logq, p, reduction=...) in torch 2.13
    np.testing.assert_allclose(got, [0.14026696355546667, 0.4208008906664, 0.8416017813328], rtol=1e-12)
    with pytest.raises(ShapeError, match="reduction"):
        gn.losses.kl_div(gn.placeholder("q", (2, 3), "float64"), p, reduction="max")


def test_the_new_names_are_exposed():
    for name in ("cross_entropy", "nll_loss", "nll", "mse_loss", "mse", "l1_loss", "smooth_l1_loss", "huber_loss",
                 "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div"):
        assert callable(getattr(gn.losses, name)) and name in gn.losses.__all__
