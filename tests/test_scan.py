"""``gn.scan``: a loop held in the graph as one node with a traced body. Forward values against
NumPy loops, gradients against float64 finite differences and against the unrolled graph,
training through it, and a plan whose size does not grow with the sequence length."""

from __future__ import annotations

import numpy as np
import pytest

import graphnet as gn
from helpers import compile_plan, covers

R = np.random.default_rng(0)


def _rnn_params(dtype="float64", d=3, h=4):
    w = gn.nn.Parameter((R.standard_normal((d, h)) * 0.5).astype(dtype))
    u = gn.nn.Parameter((R.standard_normal((h, h)) * 0.5).astype(dtype))
    return w, u


def _rnn_reference(xv, hv, w, u, reverse=False):
    h, ys = hv, [None] * len(xv)
    for t in (reversed(range(len(xv))) if reverse else range(len(xv))):
        h = np.tanh(xv[t] @ w + h @ u)
        ys[t] = h * 2.0
    return h, np.stack(ys)


@covers("scan")
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_forward_matches_a_numpy_loop(reverse):
    w, u = _rnn_params()
    x = gn.placeholder("x", (None, None, 3), "float64")
    h0 = gn.placeholder("h0", (None, 4), "float64")
    h_t, ys = gn.scan(lambda h, xt: (gn.tanh(xt @ w + h @ u),) * 2, h0, x, reverse=reverse)
    plan = compile_plan({"h": h_t, "ys": ys * 2.0})
    xv, hv = R.standard_normal((6, 2, 3)), R.standard_normal((2, 4))
    out = plan.run(x=xv, h0=hv)
    h_ref, ys_ref = _rnn_reference(xv, hv, w.data, u.data, reverse)
    np.testing.assert_allclose(out["h"], h_ref, rtol=1e-12)
    np.testing.assert_allclose(out["ys"], ys_ref, rtol=1e-12)
    assert plan.run(x=xv[:2], h0=hv)["ys"].shape == (2, 2, 4)  # another length, the same plan


def test_tuple_carries_length_without_xs_and_outer_values():
    a = gn.placeholder("a", (3,), "float64")
    scale = gn.exp(a) * 0.5  # computed outside the loop, read inside

    def step(carry, _):
        total, count = carry
        return (total + scale, count + 1), total * count.astype("float64")

    (total, count), ys = gn.scan(step, (gn.constant(np.zeros(3)), gn.constant(np.array(0))), length=4)
    out = gn.compile({"total": total, "count": count, "ys": ys}).run(a=np.array([0.0, 1.0, 2.0]))
    s = np.exp([0.0, 1.0, 2.0]) * 0.5
    np.testing.assert_allclose(out["total"], 4 * s)
    assert int(out["count"]) == 4
    np.testing.assert_allclose(out["ys"], np.stack([s * t * t for t in range(4)]))


def _central_difference(f, value, eps=1e-6):
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        step = np.zeros_like(value)
        step[index] = eps
        grad[index] = (f(value + step) - f(value - step)) / (2 * eps)
    return grad


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_gradients_match_float64_finite_differences(reverse):
    w, u = _rnn_params()
    x = gn.placeholder("x", (5, 2, 3), "float64")
    h0 = gn.placeholder("h0", (2, 4), "float64")
    h_t, ys = gn.scan(lambda h, xt: (gn.tanh(xt @ w + h @ u),) * 2, h0, x, reverse=reverse)
    loss = gn.sum(ys * ys * 2.0) + gn.sum(h_t * gn.constant(np.arange(8.0).reshape(2, 4)))
    grads = gn.compile(dict(zip("wuxh", gn.grad(loss, [w, u, x, h0])))).run(
        x=(xv := R.standard_normal((5, 2, 3))), h0=(hv := R.standard_normal((2, 4))))

    def value(wv, uv, xv_, hv_):
        h_ref, ys_ref = _rnn_reference(xv_, hv_, wv, uv, reverse)
        hs = ys_ref / 2.0  # the reference gives 2 h per step; the scan's y is h
        return np.sum(hs * hs * 2.0) + np.sum(h_ref * np.arange(8.0).reshape(2, 4))

    wv, uv = w.data.copy(), u.data.copy()
    expected = {"w": _central_difference(lambda v: value(v, uv, xv, hv), wv),
                "u": _central_difference(lambda v: value(wv, v, xv, hv), uv),
                "x": _central_difference(lambda v: value(wv, uv, v, hv), xv),
                "h": _central_difference(lambda v: value(wv, uv, xv, v), hv)}
    for name in "wuxh":
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-6, atol=1e-8, err_msg=name)


def test_scan_gradients_equal_the_unrolled_graphs():
    w, u = _rnn_params("float32")
    x = gn.placeholder("x", (7, 3, 3))
    h0 = gn.placeholder("h0", (3, 4))
    h_t, ys = gn.scan(lambda h, xt: (gn.tanh(xt @ w + h @ u),) * 2, h0, x)
    h, unrolled = h0, []
    for t in range(7):
        h = gn.tanh(x[t] @ w + h @ u)
        unrolled.append(h)
    loss_scan = gn.mean(ys * ys) + gn.mean(h_t)
    loss_unrolled = gn.mean(gn.concat([gn.reshape(y, (1, 3, 4)) for y in unrolled], 0) ** 2) + gn.mean(h)
    feeds = {"x": R.standard_normal((7, 3, 3)).astype(np.float32), "h0": R.standard_normal((3, 4)).astype(np.float32)}
    a = gn.compile(dict(zip("wuxh", gn.grad(loss_scan, [w, u, x, h0])))).run(**feeds)
    b = gn.compile(dict(zip("wuxh", gn.grad(loss_unrolled, [w, u, x, h0])))).run(**feeds)
    for name in "wuxh":
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_training_through_scan_runs_the_forward_loop_once_and_learns():
    gn.manual_seed(0)
    w, u = _rnn_params("float32")
    readout = gn.nn.Linear(4, 1)
    x = gn.placeholder("x", (6, None, 3))
    target = gn.placeholder("target", (None, 1))
    h0 = gn.constant(np.zeros((1, 4), np.float32))
    h_t, _ = gn.scan(lambda h, xt: (gn.tanh(xt @ w + h @ u),) * 2,
                     gn.broadcast_to(h0, (8, 4)), x)
    train = gn.compile(gn.losses.mse(readout(h_t), target), optimizer=gn.optim.Adam(lr=0.05))
    scans = [step for step in train.plan.steps if step.op == "scan"]
    assert len(scans) == 2  # forward (with history) and backward
    # the backward step reads the forward step's products (saved, not computed again), gives no
    # gradient for x (nobody asked for one), and leaves du and dw to one product each after the
    # loop (hoist_loop_sums): d(h @ u) / dh is its only product
    assert sum(n.op == "matmul" for n in scans[1].attrs["body"].graph.nodes) == 1
    xv = R.standard_normal((6, 8, 3)).astype(np.float32)
    tv = xv.sum(axis=(0, 2))[:, None].astype(np.float32) * 0.1
    losses = [float(train.run(x=xv, target=tv)["loss"]) for _ in range(60)]
    assert losses[-1] < 0.1 * losses[0]


def test_the_plan_does_not_grow_with_the_sequence_length():
    sizes = set()
    for steps in (12, 48, 192):
        gn.manual_seed(0)
        w, u = _rnn_params("float32")
        x = gn.placeholder("x", (steps, None, 3))
        h0 = gn.placeholder("h0", (None, 4))
        h_t, ys = gn.scan(lambda h, xt: (gn.tanh(xt @ w + h @ u),) * 2, h0, x)
        train = gn.compile(gn.mean(ys) + gn.mean(h_t), optimizer=gn.optim.SGD(lr=0.1))
        sizes.add(len(train.plan.steps))
    assert len(sizes) == 1


def test_scan_refuses_a_carry_that_changes_type_and_random_ops_in_its_body():
    x = gn.placeholder("x", (4, 3))
    with pytest.raises(gn.ShapeError, match="a carry keeps its type"):
        gn.scan(lambda c, xt: (gn.reshape(c, (3, 1)), xt), gn.constant(np.zeros(3, np.float32)), x)
    with pytest.raises(gn.ShapeError, match="dropout.*cannot run inside a loop body"):
        gn.scan(lambda c, xt: (c + gn.dropout(xt, 0.5), xt), gn.constant(np.zeros(3, np.float32)), x)
    with pytest.raises(gn.ShapeError, match="xs or length"):
        gn.scan(lambda c, xt: (c, c), gn.constant(np.zeros(3, np.float32)))


def test_scan_prints_its_body():
    x = gn.placeholder("x", (4, 3))
    c, _ = gn.scan(lambda c, xt: (c + gn.exp(xt), None), gn.constant(np.zeros(3, np.float32)), x)
    text = str(gn.make_graph({"c": c}))
    assert "scan {reverse=False}" in text and "body:" in text and "exp arg1" in text


def test_a_plan_with_scans_saves_and_resumes_bit_identically(tmp_path):
    gn.manual_seed(0)
    w, u = _rnn_params("float32")
    x = gn.placeholder("x", (5, None, 3))
    target = gn.placeholder("target", (None, 4))
    h_t, ys = gn.scan(lambda h, xt: (gn.tanh(xt @ w + h @ u + 0.25),) * 2,
                      gn.broadcast_to(gn.constant(np.zeros((1, 4), np.float32)), (2, 4)), x)
    train = gn.compile(gn.losses.mse(h_t + gn.mean(ys, 0), target), optimizer=gn.optim.Adam(lr=0.01))
    feeds = {"x": R.standard_normal((5, 2, 3)).astype(np.float32), "target": np.ones((2, 4), np.float32)}
    train.run(**feeds)
    train.save(tmp_path / "rnn.gnp")
    loaded = gn.load(tmp_path / "rnn.gnp")
    for _ in range(2):
        assert train.run(**feeds)["loss"].tobytes() == loaded.run(**feeds)["loss"].tobytes()
    assert sum(s.op == "scan" for s in loaded.plan.steps) == 2


def test_hostile_loop_bodies_are_refused(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    x = gn.placeholder("x", (3, 2))
    c, _ = gn.scan(lambda c, xt: (c + xt * 2.0, None), gn.constant(np.zeros(2, np.float32)), x)
    gn.compile({"c": c}).save(tmp_path / "scan.gnp")
    loaded = gn.load(tmp_path / "scan.gnp")  # one result (the carry alone) loads as it is
    np.testing.assert_array_equal(loaded.run(x=np.ones((3, 2), np.float32))["c"], [6.0, 6.0])

    def edit(fn):
        with safe_open(str(tmp_path / "scan.gnp"), "numpy") as f:
            header = json.loads(f.metadata()["graphnet"])
        node = next(n for n in header["graph"]["nodes"] if n["op"] == "scan")
        fn(node["attrs"]["body"]["$body"])
        save_file(load_file(str(tmp_path / "scan.gnp")), str(tmp_path / "bad.gnp"),
                  metadata={"graphnet": json.dumps(header)})
        return tmp_path / "bad.gnp"

    def rename_arg(body):
        next(n for n in body["graph"]["nodes"] if n["op"] == "placeholder")["attrs"]["name"] = "arg9"

    def wrong_outs(body):
        body["outs"][0][1] = "float64"

    for fn, fault in ((rename_arg, "not one of its"), (wrong_outs, "declared types|stored type|traced for"),
                      (lambda b: b.update(carry=7), "bad carry")):
        with pytest.raises(gn.PlanFileError, match=fault):
            gn.load(edit(fn))


# --- cond and while_loop --------------------------------------------------------------------------------

@covers("cond")
def test_cond_runs_the_branch_the_predicate_picks_and_differentiates_through_it():
    x = gn.placeholder("x", (3,), "float64")
    flag = gn.placeholder("flag", (), "bool")
    w = gn.nn.Parameter(np.array([1.0, 2.0, 3.0]))
    y = gn.cond(flag, lambda v: gn.exp(v) * w, lambda v: v * v - w, x)
    gx, gw = gn.grad(gn.sum(y), [x, w])
    plan = compile_plan({"y": y, "gx": gx, "gw": gw})
    xv = np.array([0.5, -1.0, 2.0])
    on, off = plan.run(x=xv, flag=np.array(True)), plan.run(x=xv, flag=np.array(False))
    np.testing.assert_allclose(on["y"], np.exp(xv) * w.data)
    np.testing.assert_allclose(on["gx"], np.exp(xv) * w.data)
    np.testing.assert_allclose(on["gw"], np.exp(xv))
    np.testing.assert_allclose(off["y"], xv * xv - w.data)
    np.testing.assert_allclose(off["gx"], 2 * xv)
    np.testing.assert_allclose(off["gw"], -np.ones(3))
    with pytest.raises(gn.ShapeError, match="same types"):
        gn.cond(flag, lambda v: v, lambda v: gn.sum(v), x)


def test_cond_inside_scan_stops_a_carry_and_gradients_match_finite_differences():
    """A bounded loop that stops updating once the carry passes a threshold: what while_loop
    cannot differentiate, scan with cond can."""
    x = gn.placeholder("x", (2,), "float64")

    def step(c, _):
        grow = gn.cond(gn.sum(c) < 10.0, lambda v: v * 1.5 + 0.1, lambda v: v, c)
        return grow, None

    final, _ = gn.scan(step, x, length=8)
    (g,) = gn.grad(gn.sum(final * final), [x])
    plan = gn.compile({"final": final, "g": g})
    xv = np.array([0.7, 0.4])

    def reference(v):
        for _ in range(8):
            if v.sum() < 10.0:
                v = v * 1.5 + 0.1
        return v

    out = plan.run(x=xv)
    np.testing.assert_allclose(out["final"], reference(xv))
    numeric = np.array([(np.sum(reference(xv + d) ** 2) - np.sum(reference(xv - d) ** 2)) / 2e-6
                        for d in np.eye(2) * 1e-6])
    np.testing.assert_allclose(out["g"], numeric, rtol=1e-6)


@covers("while_loop")
def test_while_loop_runs_until_its_condition_fails_and_refuses_gradients():
    n = gn.placeholder("n", (), "int64")
    limit = gn.placeholder("limit", (), "float64")
    count, total = gn.while_loop(lambda c: c[1] < limit, lambda c: (c[0] + 1, c[1] + c[0].astype("float64")),
                                 (n, gn.constant(np.array(0.0))))
    out = compile_plan({"count": count, "total": total}).run(n=np.array(1), limit=np.array(20.0))
    t, c = 0.0, 1
    while t < 20.0:
        t, c = t + c, c + 1
    assert int(out["count"]) == c and float(out["total"]) == t
    x = gn.placeholder("x", (), "float64")
    doubled = gn.while_loop(lambda v: v < 100.0, lambda v: v * 2.0, x)
    with pytest.raises(gn.GradientError, match="Use gn.scan with a bound"):
        gn.grad(doubled, [x])


def test_branches_and_loops_save_and_load(tmp_path):
    x = gn.placeholder("x", (3,))
    flag = gn.placeholder("flag", (), "bool")
    y = gn.cond(flag, lambda v: v * 2.0, lambda v: v - 1.0, x)
    z = gn.while_loop(lambda v: gn.sum(v) < 50.0, lambda v: v * 3.0, y)
    plan = gn.compile({"z": z})
    plan.save(tmp_path / "branches.gnp")
    loaded = gn.load(tmp_path / "branches.gnp")
    for flag_value in (True, False):
        feeds = {"x": np.array([1.0, 2.0, 3.0], np.float32), "flag": np.array(flag_value)}
        np.testing.assert_array_equal(loaded.run(**feeds)["z"], plan.run(**feeds)["z"])


def test_the_report_counts_body_kernels_and_rendering_draws_the_body():
    import shutil

    x = gn.placeholder("x", (4, 3))
    c, _ = gn.scan(lambda c, xt: (gn.tanh(c * xt) + 1.0, None), gn.constant(np.zeros(3, np.float32)), x)
    plan = gn.compile({"c": c})
    (loop,) = plan.report.loops
    assert loop["op"] == "scan" and loop["bodies"]["body"] >= 1
    assert "scan at step" in str(plan.report)
    dot = gn.to_dot(plan.graph)
    assert "cluster_loop_" in dot and "tanh" in dot
    if shutil.which("dot"):
        assert plan._repr_svg_().lstrip().startswith(("<?xml", "<svg"))


def test_checkpoint_recomputes_instead_of_saving_and_gives_the_same_gradients():
    plans = {}
    w, u = _rnn_params("float64")
    for checkpoint in (False, True):
        x = gn.placeholder("x", (5, 2, 3), "float64")
        h_t, ys = gn.scan(lambda h, xt: (gn.tanh(xt @ w + h @ u),) * 2, gn.constant(np.zeros((2, 4))), x,
                          checkpoint=checkpoint)
        plans[checkpoint] = gn.compile(dict(zip("wu", gn.grad(gn.sum(ys * ys), [w, u]))))
    xv = R.standard_normal((5, 2, 3))
    saved, recomputed = (plans[c].run(x=xv) for c in (False, True))
    for name in "wu":
        np.testing.assert_allclose(saved[name], recomputed[name], rtol=1e-12)
    forward_outputs = {c: next(len(s.outputs) for s in plans[c].plan.steps if s.op == "scan" and not s.attrs["reverse"])
                       for c in plans}
    assert forward_outputs[True] < forward_outputs[False]  # checkpointing keeps fewer per-step values


def test_second_order_gradients_through_scan_match_finite_differences():
    """d/dx of <d loss/dx, v>: the gradient of the backward scan (itself a scan)."""
    x = gn.placeholder("x", (4, 3), "float64")
    w = gn.constant(np.linspace(-0.8, 0.9, 9).reshape(3, 3))

    def loss_of(xs):
        final, ys = gn.scan(lambda c, xt: (gn.tanh(c @ w + xt),) * 2, gn.constant(np.zeros(3)), xs)
        return gn.sum(ys * ys) + gn.sum(final)

    (g,) = gn.grad(loss_of(x), [x])
    v = gn.constant(np.arange(12.0).reshape(4, 3) / 10)
    (hv,) = gn.grad(gn.sum(g * v), [x])
    plan = gn.compile({"g": g, "hv": hv})
    xv = R.standard_normal((4, 3)) * 0.5
    out = plan.run(x=xv)
    grad_of = gn.compile({"g": g})
    vv = np.arange(12.0).reshape(4, 3) / 10
    numeric = np.zeros_like(xv)
    for index in np.ndindex(xv.shape):
        d = np.zeros_like(xv)
        d[index] = 1e-6
        numeric[index] = np.sum((grad_of.run(x=xv + d)["g"] - grad_of.run(x=xv - d)["g"]) * vv) / 2e-6
    np.testing.assert_allclose(out["hv"], numeric, rtol=1e-5, atol=1e-8)
