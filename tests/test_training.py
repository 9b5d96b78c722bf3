"""Training through compiled plans: real networks learn, plans share weights, optimizers plug in."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.data import pattern_images


def seed_cnn():
    return gn.nn.Sequential(
        gn.nn.Conv2d(1, 10, kernel_size=5), gn.nn.MaxPool2d(2, 2), gn.nn.ReLU(),
        gn.nn.Conv2d(10, 20, kernel_size=5), gn.nn.MaxPool2d(2, 2), gn.nn.ReLU(),
        gn.nn.Flatten(), gn.nn.Linear(320, 120), gn.nn.ReLU(), gn.nn.Linear(120, 10))


def _placeholders(shape=(None, 1, 28, 28)):
    return gn.placeholder("x", shape), gn.placeholder("labels", (None,), dtype="int64")


def test_seed_cnn_learns_synthetic_task():
    gn.manual_seed(0)
    images, labels = pattern_images(40 * 32 + 500, noise=2.0, seed=1)
    x, y = _placeholders()
    model = seed_cnn()
    logits = model(x)
    assert logits.shape == (None, 10) and logits.dtype == "float32"
    train = gn.compile(gn.losses.cross_entropy(logits, y), optimizer=gn.optim.RMSprop(lr=1e-3))
    infer = gn.compile(logits)
    losses = [float(train.run(x=images[i * 32:(i + 1) * 32], labels=labels[i * 32:(i + 1) * 32])["loss"])
              for i in range(40)]
    assert np.mean(losses[:3]) > 2.0
    assert np.mean(losses[-5:]) < 0.25 * np.mean(losses[:3])
    accuracy = np.mean(infer.run(x=images[-500:])["logits"].argmax(1) == labels[-500:])
    assert accuracy > 0.9


class ResidualNet(gn.nn.Module):
    """A DAG: a residual add, a concatenation and batch norm, in a user's Module subclass."""

    def __init__(self):
        super().__init__()
        self.stem = gn.nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = gn.nn.BatchNorm2d(8)
        self.conv_a = gn.nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = gn.nn.BatchNorm2d(8)
        self.side = gn.nn.Conv2d(8, 4, 1)
        self.pool = gn.nn.AvgPool2d(4)
        self.head = gn.nn.Linear(12 * 7 * 7, 10)

    def forward(self, x):
        h = gn.relu(self.bn1(self.stem(x)))
        h = gn.relu(h + self.bn2(self.conv_a(h)))          # residual add
        h = gn.concat([h, self.side(h)], axis=1)            # concatenation
        return self.head(gn.flatten(self.pool(h)))


def test_residual_network_trains_and_eval_uses_running_stats():
    gn.manual_seed(0)
    images, labels = pattern_images(30 * 32 + 300, noise=2.0, seed=2)
    x, y = _placeholders()
    model = ResidualNet()
    names = [n for n, _ in model.named_parameters()]
    assert "stem.weight" in names and "bn2.bias" in names and "head.weight" in names
    train = gn.compile(gn.losses.cross_entropy(model(x), y), optimizer=gn.optim.Adam(lr=3e-3))
    losses = [float(train.run(x=images[i * 32:(i + 1) * 32], labels=labels[i * 32:(i + 1) * 32])["loss"])
              for i in range(30)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    running_var = model.bn1.running_var.data
    assert not np.allclose(running_var, 1.0)  # the training plan updated the running statistics
    model.eval()
    infer = gn.compile(model(x))
    assert "assign" not in infer.plan.op_counts()
    accuracy = np.mean(infer.run(x=images[-300:])["output"].argmax(1) == labels[-300:])
    assert accuracy > 0.8


def test_training_and_inference_plans_share_weights_and_state_dict():
    gn.manual_seed(3)
    x, y = _placeholders((None, 5))
    model = gn.nn.Sequential(gn.nn.Linear(5, 4), gn.nn.Tanh(), gn.nn.Linear(4, 3))
    logits = model(x)
    train = gn.compile(gn.losses.cross_entropy(logits, y), optimizer=gn.optim.SGD(lr=0.5))
    infer = gn.compile(logits)
    xb = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    yb = np.arange(8) % 3
    before = infer.run(x=xb)["logits"]
    saved = model.state_dict()
    train.run(x=xb, labels=yb)
    after = infer.run(x=xb)["logits"]
    assert not np.allclose(before, after)  # inference sees the trained weights
    np.testing.assert_array_equal(model.state_dict()["0.weight"], model[0].weight.data)
    assert not np.array_equal(saved["0.weight"], model.state_dict()["0.weight"])
    model.load_state_dict(saved)
    np.testing.assert_array_equal(infer.run(x=xb)["logits"], before)  # loaded values are used next run
    with pytest.raises(gn.ShapeError, match="0.weight"):
        model.load_state_dict({**saved, "0.weight": np.zeros((2, 2))})
    with pytest.raises(gn.nn.StateDictError, match="missing"):
        model.load_state_dict({"0.weight": saved["0.weight"]})


def _linear_regression(optimizer, steps=4):
    """One Linear layer trained with ``optimizer``; returns the weights after each step."""
    gn.manual_seed(1)
    x = gn.placeholder("x", (None, 3))
    t = gn.placeholder("t", (None, 2))
    layer = gn.nn.Linear(3, 2)
    train = gn.compile(gn.losses.mse(layer(x), t), optimizer=optimizer)
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((6, 3)).astype(np.float32)
    tb = rng.standard_normal((6, 2)).astype(np.float32)
    w0, b0 = layer.weight.data.copy(), layer.bias.data.copy()
    history = []
    for _ in range(steps):
        train.run(x=xb, t=tb)
        history.append((layer.weight.data.copy(), layer.bias.data.copy()))
    return xb, tb, w0, b0, history, train


def _mse_grads(xb, tb, w, b):
    pred = xb @ w.T + b
    d = 2.0 * (pred - tb) / pred.size
    return d.T @ xb, d.sum(0)


def test_sgd_momentum_in_a_plan_matches_the_formula():
    xb, tb, w, b, history, _ = _linear_regression(gn.optim.SGD(lr=0.1, momentum=0.9))
    w, b = w.astype(np.float64), b.astype(np.float64)
    vw = vb = None
    for got_w, got_b in history:
        gw, gb = _mse_grads(xb, tb, w, b)
        vw = gw if vw is None else 0.9 * vw + gw
        vb = gb if vb is None else 0.9 * vb + gb
        w, b = w - 0.1 * vw, b - 0.1 * vb
        np.testing.assert_allclose(got_w, w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_b, b, rtol=1e-5, atol=1e-6)


def test_global_norm_clipping_scales_the_update():
    xb, tb, w, b, history, _ = _linear_regression(gn.optim.SGD(lr=1.0, max_grad_norm=0.01), steps=1)
    gw, gb = _mse_grads(xb, tb, w.astype(np.float64), b.astype(np.float64))
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    assert norm > 0.01
    scale = 0.01 / (norm + 1e-6)
    np.testing.assert_allclose(history[0][0], w - scale * gw, rtol=1e-5, atol=1e-7)


def test_learning_rate_changes_between_steps():
    optimizer = gn.optim.SGD(lr=0.1)
    xb, tb, w, b, history, train = _linear_regression(optimizer, steps=1)
    optimizer.lr = 0.0
    train.run(x=xb, t=tb)
    np.testing.assert_array_equal(train.variables["var:weight"].data, history[0][0])
    optimizer.lr = 0.2
    schedule = gn.optim.StepLR(optimizer, step_size=1, gamma=0.5)
    schedule.step()
    assert train.lr == pytest.approx(0.1)


def test_user_defined_optimizer_trains():
    class SignSGD(gn.optim.Optimizer):
        """Moves each weight by lr in the direction opposite its gradient's sign."""

        name = "test_sign_sgd"
        state_names = ()

        def update(self, param, grad, state, step, h):
            return param - gn.optim.scalar(h.lr, param) * gn.sign(grad), {}

    xb, tb, w, b, history, _ = _linear_regression(SignSGD(lr=0.01), steps=3)
    gw, _ = _mse_grads(xb, tb, w, b)
    np.testing.assert_allclose(history[0][0], w - 0.01 * np.sign(gw), rtol=1e-6)
    losses = [np.mean((xb @ hw.T + hb - tb) ** 2) for hw, hb in history]
    assert losses[-1] < np.mean((xb @ w.T + b - tb) ** 2)


def test_dropout_training_is_seeded_and_eval_is_identity():
    x = gn.placeholder("x", (4, 100))
    drop = gn.nn.Dropout(0.3)
    y = drop(x)
    ones = np.ones((4, 100), np.float32)
    a = gn.compile(y, seed=5, mode="train").run(x=ones)["y"]
    b = gn.compile(y, seed=5, mode="train").run(x=ones)["y"]
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, np.float32(1 / 0.7)}
    assert 0.2 < np.mean(a == 0) < 0.4
    drop.eval()
    identity = gn.compile({"y": y})  # the graph declared in training mode: the mode is read now
    assert "dropout" not in identity.plan.op_counts() and identity.plan.mode == "eval"
    np.testing.assert_array_equal(identity.run(x=ones)["y"], ones)
