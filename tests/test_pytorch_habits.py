"""Habits a PyTorch user brings (issue 23): each either does what PyTorch does, with numbers
checked against NumPy, or fails with a typed error that says what to do; never a silently
different result."""

from __future__ import annotations

import numpy as np
import pytest

import graphnet as gn

RNG = np.random.default_rng(0)
A = RNG.standard_normal((2, 3, 4)).astype(np.float32)


def _run(outputs, **feeds):
    return gn.compile(outputs).run(**feeds)


# --- Tensor methods with PyTorch's meaning -------------------------------------------------------

def test_transpose_of_two_dims_swaps_them_as_pytorch():
    """``w.transpose(0, 1)`` on a square matrix used to be NumPy's identity permutation."""
    w = np.arange(9, dtype=np.float32).reshape(3, 3)
    x = gn.placeholder("x", (None, 3))
    out = _run({"y": x @ gn.constant(w).transpose(0, 1), "t": gn.constant(w).transpose(1, 0)},
               x=np.eye(3, dtype=np.float32))
    assert np.array_equal(out["y"], w.T) and np.array_equal(out["t"], w.T)
    t = gn.placeholder("t", (None, 3, 4))
    out = _run({"a": t.transpose(1, 2), "b": t.transpose(-1, 0), "mT": t.mT, "T": t.T}, t=A)
    assert np.array_equal(out["a"], A.swapaxes(1, 2)) and np.array_equal(out["b"], A.swapaxes(-1, 0))
    assert np.array_equal(out["mT"], A.swapaxes(-1, -2)) and np.array_equal(out["T"], A.transpose())
    with pytest.raises(gn.ShapeError, match="permute"):
        t.transpose(2, 0, 1)
    assert np.array_equal(_run({"p": gn.transpose(t, (2, 0, 1))}, t=A)["p"], A.transpose(2, 0, 1))  # NumPy's


def test_shape_methods_against_numpy():
    t = gn.placeholder("t", (None, 3, 4))
    out = _run({"permute": t.permute(2, 0, 1), "permute_tuple": t.permute((1, 2, 0)), "view": t.view(-1, 12),
                "unsqueeze": t.unsqueeze(-1), "unsqueeze0": t.unsqueeze(0), "squeeze": t.unsqueeze(2).squeeze(2),
                "squeeze_all": t.unsqueeze(1).unsqueeze(3).squeeze()}, t=A)
    assert np.array_equal(out["permute"], A.transpose(2, 0, 1))
    assert np.array_equal(out["permute_tuple"], A.transpose(1, 2, 0))
    assert np.array_equal(out["view"], A.reshape(-1, 12))
    assert out["unsqueeze"].shape == (2, 3, 4, 1) and out["unsqueeze0"].shape == (1, 2, 3, 4)
    assert np.array_equal(out["squeeze"], A) and np.array_equal(out["squeeze_all"], A)
    assert t.squeeze(1) is t  # PyTorch leaves a dim whose size is not 1
    assert t.size() == (None, 3, 4) and t.size(-1) == 4 and t.dim() == 3
    with pytest.raises(gn.ShapeError, match="out of range"):
        t.unsqueeze(5)


def test_clamp_detach_and_elementwise_methods_with_gradients():
    x = gn.placeholder("x", (5,))
    values = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], np.float32)
    clamped = x.clamp(-0.5, 0.5)
    loss = gn.sum(clamped * gn.constant(np.arange(1, 6, dtype=np.float32)))
    (g,) = gn.grad(loss, [x])
    out = _run({"c": clamped, "g": g, "lo": x.clamp(min=0), "hi": x.clip(max=0)}, x=values)
    assert np.array_equal(out["c"], np.clip(values, -0.5, 0.5))
    assert np.array_equal(out["g"], [0, 2, 3, 4, 0])  # PyTorch: the bounds themselves pass the gradient
    assert np.array_equal(out["lo"], np.maximum(values, 0)) and np.array_equal(out["hi"], np.minimum(values, 0))
    y = gn.placeholder("y", (5,))
    positive = np.array([0.5, 1.0, 2.0, 3.0, 4.0], np.float32)
    out = _run({k: getattr(y, k)() for k in ("exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu")}, y=positive)
    reference = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "tanh": np.tanh,
                 "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "relu": lambda v: np.maximum(v, 0)}
    for name, fn in reference.items():
        np.testing.assert_allclose(out[name], fn(positive), rtol=1e-6, err_msg=name)
    (gd,) = gn.grad(gn.sum(y * y.detach()), [y])
    np.testing.assert_array_equal(_run({"g": gd}, y=positive)["g"], positive)  # d(y * const)/dy


@pytest.mark.parametrize("ask", [lambda t: t.item(), lambda t: t.numpy(), lambda t: t.backward(),
                                 lambda t: t.tolist(), lambda t: np.asarray(t), lambda t: float(t)])
def test_asking_a_symbolic_tensor_for_a_value_says_how_to_get_one(ask):
    t = gn.placeholder("x", (3,)) * 2.0
    with pytest.raises(gn.SymbolicTensorError, match="symbolic.*gn.compile"):
        ask(t)


# --- BatchNorm with one value per channel ---------------------------------------------------------

def _bn_model():
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 3))
    t = gn.placeholder("t", (None, 2))
    model = gn.nn.Sequential(gn.nn.Linear(3, 4), gn.nn.BatchNorm1d(4), gn.nn.Linear(4, 2))
    return model, x, t


def test_a_training_batch_of_one_through_batch_norm_is_refused_before_any_state_changes():
    """PyTorch raises too; graphnet used to write NaN into running_var (65 samples at batch 64)."""
    model, x, t = _bn_model()
    train = gn.compile(gn.losses.mse(model(x), t), optimizer=gn.optim.SGD(lr=0.1))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    for batch in (1, 0):
        with pytest.raises(gn.FeedError, match=r"more than one value per channel.*gives %d" % batch) as caught:
            train.run(x=np.ones((batch, 3), np.float32), t=np.ones((batch, 2), np.float32))
        assert "test_pytorch_habits.py" in str(caught.value)  # where the BatchNorm was declared
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    train.run(x=np.ones((2, 3), np.float32), t=np.ones((2, 2), np.float32))
    assert np.isfinite(model[1].running_var.data).all()
    model.eval()  # evaluation takes a batch of one
    assert gn.compile(model(x)).run(x=np.ones((1, 3), np.float32))["output"].shape == (1, 2)


def test_batch_norm_2d_takes_one_image_with_several_pixels():
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 2, 3, 3))
    bn = gn.nn.BatchNorm2d(2)
    plan = gn.compile(bn(x), mode="train")
    plan.run(x=RNG.standard_normal((1, 2, 3, 3)).astype(np.float32))
    with pytest.raises(gn.FeedError, match="one value per channel"):
        gn.compile(bn(gn.placeholder("y", (None, 2, 1, 1))), mode="train").run(y=np.ones((1, 2, 1, 1), np.float32))


# --- BatchNorm's step counter and PyTorch state dicts ---------------------------------------------

def test_batch_norm_counts_training_batches_and_loads_pytorch_state_dicts():
    model, x, t = _bn_model()
    # a PyTorch state dict of the same model, converted to NumPy (keys and dtypes as torch gives them)
    torch_state = {"0.weight": RNG.standard_normal((4, 3)).astype(np.float32), "0.bias": np.zeros(4, np.float32),
                   "1.weight": np.full(4, 2.0, np.float32), "1.bias": np.full(4, 0.5, np.float32),
                   "1.running_mean": np.full(4, 0.25, np.float32), "1.running_var": np.full(4, 4.0, np.float32),
                   "1.num_batches_tracked": np.array(7, np.int64),
                   "2.weight": RNG.standard_normal((2, 4)).astype(np.float32), "2.bias": np.zeros(2, np.float32)}
    assert not any(model.load_state_dict(torch_state))  # strict: no missing or unexpected keys
    train = gn.compile(gn.losses.mse(model(x), t), optimizer=gn.optim.SGD(lr=0.1))
    for _ in range(3):
        train.run(x=RNG.standard_normal((4, 3)).astype(np.float32), t=np.ones((4, 2), np.float32))
    assert int(model[1].num_batches_tracked.data) == 10 and set(model.state_dict()) == set(torch_state)
    model.eval()
    gn.compile(model(x)).run(x=np.ones((2, 3), np.float32))
    assert int(model[1].num_batches_tracked.data) == 10  # evaluation counts nothing
    older = {k: v for k, v in torch_state.items() if not k.endswith("num_batches_tracked")}
    assert not any(model.load_state_dict(older))  # a state dict from before the counter still loads
    with pytest.raises(gn.GraphnetError, match="momentum=None"):
        gn.nn.BatchNorm1d(4, momentum=None)


def test_the_gradient_of_an_unreached_parameter_is_zeros_and_feeding_it_says_why():
    x = gn.placeholder("x", (None, 3))
    used, unused = gn.nn.Parameter(np.ones((3, 2), np.float32)), gn.nn.Parameter(np.ones(4, np.float32))
    g_used, g_unused = gn.grad(gn.sum(x @ used), [used, unused])
    assert np.array_equal(gn.compile({"g": g_unused}).run()["g"], np.zeros(4, np.float32))  # JAX's rule
    with pytest.raises(gn.FeedError, match=r"unexpected feed\(s\) \['x'\]: no output of this plan depends on it"):
        gn.compile({"g": g_unused}).run(x=np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(gn.compile({"g": g_used}).run(x=np.ones((2, 3), np.float32))["g"],
                                  np.full((3, 2), 2.0, np.float32))


def test_gradient_errors_name_the_users_lines():
    x = gn.placeholder("x", (None, 3))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    layer = gn.nn.Linear(3, 2)
    with pytest.raises(gn.GradientError, match=r"labels \(declared at test_pytorch_habits.py:\d+; differentiated at "
                                               r"test_pytorch_habits.py:\d+\).*not floating"):
        gn.grad(gn.sum(layer(x)), [labels])
    layer.requires_grad_(False)
    with pytest.raises(gn.GradientError, match=r"nothing to train: .*declared at test_pytorch_habits.py:\d+; "
                                               r"compiled at test_pytorch_habits.py:\d+"):
        gn.compile(gn.sum(layer(x)), optimizer=gn.optim.SGD(lr=0.1))


# --- the casting rule for feeds ---------------------------------------------------------------------

def test_feeds_rounded_to_a_narrower_float_warn_once_per_plan_and_feed():
    import warnings

    x = gn.placeholder("x", (None, 2))
    labels = gn.placeholder("labels", (None,), dtype="int32")
    plan = gn.compile({"y": x * 2.0, "l": labels + 1})
    data = np.array([[0.1, 1 / 3]])
    with pytest.warns(gn.FeedCastWarning, match="'x': float64 values are rounded to the placeholder's float32"):
        out = plan.run(x=data, labels=np.array([1], np.int64))
    assert np.array_equal(out["y"], data.astype(np.float32) * np.float32(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan.run(x=data, labels=np.array([1], np.int64))  # said once per plan and feed
        plan.run(x=data.astype(np.float16), labels=np.array([1], np.int64))  # float16 -> float32 is exact
    with pytest.warns(gn.FeedCastWarning):
        gn.compile({"y": x * 2.0}).run(x=data)  # another plan says it again
    with pytest.raises(gn.FeedError, match="do not fit the placeholder's int32"):
        plan.run(x=data.astype(np.float32), labels=np.array([2 ** 40], np.int64))  # never a wrapped label


# --- a stateful layer called twice in one step ------------------------------------------------------

def test_batch_norm_called_twice_updates_its_statistics_once_per_call_in_call_order():
    """A GAN's discriminator on real and on fake batches: PyTorch's running statistics after
    one step, computed here in NumPy (used to raise 'running_mean is written twice')."""
    gn.manual_seed(0)
    real, fake = gn.placeholder("real", (None, 3)), gn.placeholder("fake", (None, 3))
    disc = gn.nn.Sequential(gn.nn.Linear(3, 4), gn.nn.BatchNorm1d(4), gn.nn.Linear(4, 1))
    train = gn.compile(gn.mean(disc(real)) - gn.mean(disc(fake)), optimizer=gn.optim.SGD(lr=0.0))
    stats = [disc[1].running_mean.data.astype(np.float64), disc[1].running_var.data.astype(np.float64)]
    w, b = disc[0].weight.data.astype(np.float64), disc[0].bias.data.astype(np.float64)
    batches = RNG.standard_normal((8, 3)).astype(np.float32), RNG.standard_normal((6, 3)).astype(np.float32)
    train.run(real=batches[0], fake=batches[1])
    for batch in batches:  # in call order, momentum 0.1, unbiased variance
        h = batch.astype(np.float64) @ w.T + b
        stats = [stats[0] * 0.9 + h.mean(0) * 0.1, stats[1] * 0.9 + h.var(0, ddof=1) * 0.1]
    np.testing.assert_allclose(disc[1].running_mean.data, stats[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(disc[1].running_var.data, stats[1], rtol=1e-5, atol=1e-6)
    assert int(disc[1].num_batches_tracked.data) == 2


def test_two_writes_of_one_variable_name_both_writers_and_their_lines():
    counter = gn.nn.Parameter(np.zeros(2, np.float32), trainable=False)
    first = gn.ops.assign(counter, counter + 1.0, kind="running_stat")
    second = gn.ops.assign(counter, counter * 2.0, kind="running_stat")
    with pytest.raises(gn.GraphError, match=r"written twice.*declared at test_pytorch_habits.py:\d+.*"
                                            r"declared at test_pytorch_habits.py:\d+"):
        gn.compile({"c": counter * 1.0}, effects=[first, second])


def test_embedding_padding_row_is_read_as_loaded_and_gets_no_gradient():
    """PyTorch reads a loaded (pretrained) padding row as it is and keeps it out of the gradient;
    graphnet used to read it as zeros."""
    gn.manual_seed(0)
    emb = gn.nn.Embedding(5, 3, padding_idx=1)
    assert np.array_equal(emb.weight.data[1], np.zeros(3))  # starts at zero, as PyTorch's
    table = RNG.standard_normal((5, 3)).astype(np.float32)
    emb.load_state_dict({"weight": table})
    idx = gn.placeholder("idx", (None,), dtype="int64")
    target = gn.placeholder("target", (None, 3))
    out = emb(idx)
    train = gn.compile({"loss": gn.losses.mse(out, target), "out": out}, optimizer=gn.optim.SGD(lr=0.5))
    indices = np.array([1, 2, 1, 4])
    goal = np.ones((4, 3), np.float32)
    result = train.run(idx=indices, target=goal)
    np.testing.assert_array_equal(result["out"], table[indices])
    grad = np.zeros_like(table)
    np.add.at(grad, indices, 2 * (table[indices] - goal) / goal.size)
    grad[1] = 0  # the padding row: no gradient
    np.testing.assert_allclose(emb.weight.data, table - 0.5 * grad, rtol=1e-6)


# --- a model summary ---------------------------------------------------------------------------------

def test_summary_lists_layers_shapes_parameters_kernels_and_peak_memory():
    gn.manual_seed(0)
    model = gn.nn.Sequential(gn.nn.Conv2d(1, 4, 3), gn.nn.BatchNorm2d(4), gn.nn.ReLU(), gn.nn.Flatten(),
                             gn.nn.Linear(4 * 6 * 6, 10))
    model[0].requires_grad_(False)
    model.train()
    s = gn.summary(model, (None, 1, 8, 8), batch_size=32)
    assert [(r.path, r.kind, r.output, r.parameters) for r in s.rows] == [
        ("model", "Sequential", [(None, 10)], 0), ("0", "Conv2d", [(None, 4, 6, 6)], 40),
        ("1", "BatchNorm2d", [(None, 4, 6, 6)], 8), ("2", "ReLU", [(None, 4, 6, 6)], 0),
        ("3", "Flatten", [(None, 144)], 0), ("4", "Linear", [(None, 10)], 1450)]
    assert (s.parameters, s.trainable, s.buffers) == (1498, 1458, 4 + 4 + 1)
    x = gn.placeholder("x", (None, 1, 8, 8))
    plan = gn.compile(model(x), mode="eval")
    assert s.kernels == len(plan.plan.steps)
    assert s.peak_bytes == plan.executor.peak_bytes(plan.plan, {"x": (32, 1, 8, 8)}) > 0
    text = str(s)
    assert "4 (Linear)" in text and "1,450" in text and "frozen 40" in text and f"{s.kernels} kernels" in text
    assert model.training  # the model's mode is left alone


# --- an empty batch ------------------------------------------------------------------------------------

def test_an_empty_batch_runs_as_pytorch_and_a_nan_loss_is_never_applied():
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 1, 6, 6))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    model = gn.nn.Sequential(gn.nn.Conv2d(1, 2, 3), gn.nn.ReLU(), gn.nn.Flatten(), gn.nn.Linear(32, 3))
    logits = model(x)
    empty = np.zeros((0, 1, 6, 6), np.float32)
    assert gn.compile({"logits": logits}).run(x=empty)["logits"].shape == (0, 3)  # used to fail in flatten
    train = gn.compile({"loss": gn.losses.cross_entropy(logits, labels), "logits": logits},
                       optimizer=gn.optim.Adam(lr=0.1))
    before = {k: v.data.copy() for k, v in train.variables.items()}
    with np.errstate(all="ignore"), pytest.raises(gn.NumericsError, match="loss is nan.*not applied"):
        train.run(x=empty, labels=np.zeros(0, np.int64))  # the mean over no samples is NaN, as in PyTorch
    assert all(np.array_equal(before[k], v.data) for k, v in train.variables.items()) and train.step_count == 0
    summed = gn.compile(gn.losses.cross_entropy(logits, labels, reduction="sum"), optimizer=gn.optim.SGD(lr=0.1))
    assert summed.run(x=empty, labels=np.zeros(0, np.int64))["loss"] == 0.0  # a sum over nothing trains nothing


def test_label_errors_name_the_users_line():
    scores = gn.placeholder("scores", (None, 3))
    with pytest.raises(gn.DTypeError, match=r"cross_entropy at test_pytorch_habits.py:\d+: labels must be integer"):
        gn.losses.cross_entropy(scores, gn.placeholder("y", (None,)))
    with pytest.raises(gn.ShapeError, match=r"cross_entropy at test_pytorch_habits.py:\d+: expected \(N,\) labels"):
        gn.losses.cross_entropy(scores, gn.placeholder("y2", (None, 2), dtype="int64"))
