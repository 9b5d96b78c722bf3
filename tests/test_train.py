"""graphnet.train (fit / evaluate / predict / History) and graphnet.plots, on a tiny synthetic task."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

import graphnet as gn
from graphnet.data import pattern_images
from graphnet.errors import FeedError, GraphnetError, NumericsError, OptimizerError
from graphnet.train import History, TrainingDivergedError, evaluate, fit, predict, softmax

SIZE, CLASSES = 8, 4


def batches(images, labels, batch_size):
    return [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size)]


def make_plans(optimizer=None, with_logits=True, seed=0):
    """A small MLP: a training plan (loss, and logits when ``with_logits``) and an inference plan."""
    gn.manual_seed(seed)
    x = gn.placeholder("x", (None, 1, SIZE, SIZE))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    model = gn.nn.Sequential(gn.nn.Flatten(), gn.nn.Linear(SIZE * SIZE, 16), gn.nn.ReLU(), gn.nn.Linear(16, CLASSES))
    logits = model(x)
    loss = gn.losses.cross_entropy(logits, labels)
    optimizer = optimizer or gn.optim.Adam(lr=3e-3)
    outputs = {"loss": loss, "logits": logits} if with_logits else loss
    train = gn.compile(outputs, optimizer=optimizer)
    infer = gn.compile({"logits": logits})
    return train, infer


@pytest.fixture(scope="module")
def data():
    xt, yt = pattern_images(512, num_classes=CLASSES, size=SIZE, noise=1.5, seed=1)
    xv, yv = pattern_images(203, num_classes=CLASSES, size=SIZE, noise=1.5, seed=2)   # ragged last batch
    return batches(xt, yt, 32), batches(xv, yv, 64), (xv, yv)


def test_fit_learns_and_records_history(data):
    train_data, val_data, _ = data
    train, infer = make_plans()
    lines = []
    history = fit(train, train_data, epochs=3, eval_plan=infer, val_data=val_data, progress=False, log=lines.append)
    assert isinstance(history, History) and len(history) == 3 and history.epochs == [1, 2, 3]
    assert history.train_loss[0] > history.train_loss[1] > history.train_loss[2]
    assert all(0.0 <= a <= 1.0 for a in history.train_accuracy)
    assert history.val_accuracy[-1] > 0.8 and history.val_accuracy[-1] > history.val_accuracy[0]
    assert history.val_loss[-1] < history.val_loss[0]
    assert history.lr == [pytest.approx(3e-3)] * 3
    assert all(s > 0 for s in history.seconds) and all(r > 0 for r in history.images_per_second)
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3") and "val_acc" in lines[2]


def test_train_loss_is_sample_weighted_and_accuracy_needs_logits(data):
    train_data, _, _ = data
    uneven = train_data[:3] + [(train_data[3][0][:5], train_data[3][1][:5])]    # 32, 32, 32, 5 samples
    train, _ = make_plans(optimizer=gn.optim.SGD(lr=0.0), with_logits=False)   # lr 0: the loss stays put
    history = fit(train, uneven, epochs=1, progress=False, log=None)
    per_batch = [float(train.run(x=x, labels=y)["loss"]) for x, y in uneven]
    expected = sum(loss * len(y) for loss, (_, y) in zip(per_batch, uneven)) / sum(len(y) for _, y in uneven)
    assert history.train_loss[0] == pytest.approx(expected, rel=1e-6)
    assert history.train_accuracy == [None] and history.val_loss == [None] and history.val_accuracy == [None]


@pytest.mark.parametrize("make_schedule", [
    lambda opt: gn.optim.StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: gn.optim.ExponentialLR(opt, gamma=0.7),
    lambda opt: gn.optim.CosineAnnealingLR(opt, T_max=4, eta_min=1e-4),
])
def test_schedule_steps_once_per_epoch(data, make_schedule):
    train_data, _, _ = data
    train, _ = make_plans(optimizer=gn.optim.SGD(lr=0.05, momentum=0.9))
    schedule = make_schedule(train.optimizer)
    history = fit(train, train_data[:2], epochs=4, schedule=schedule, progress=False, log=None)
    assert history.lr == pytest.approx([schedule.lr_at(e) for e in range(4)], rel=1e-12)
    assert schedule.last_epoch == 4 and train.lr == pytest.approx(schedule.lr_at(4), rel=1e-12)


def test_schedule_of_another_optimizer_is_refused(data):
    train, _ = make_plans()
    other = gn.optim.Adam(lr=1e-3)
    with pytest.raises(OptimizerError, match="different optimizer"):
        fit(train, data[0], schedule=gn.optim.StepLR(other, step_size=1), progress=False, log=None)


def test_nan_in_data_raises_training_diverged(data):
    train_data, _, _ = data
    train, _ = make_plans()
    poisoned = list(train_data[:4])
    bad = poisoned[2][0].copy()
    bad[0, 0, 0, 0] = np.nan
    poisoned[2] = (bad, poisoned[2][1])
    with pytest.raises(TrainingDivergedError) as info:
        fit(train, poisoned, epochs=2, progress=False, log=None)
    err = info.value
    assert isinstance(err, NumericsError)
    assert (err.epoch, err.step) == (1, 3) and math.isnan(err.loss) and len(err.history) == 0
    assert err.last_finite_loss is not None and math.isfinite(err.last_finite_loss)
    assert err.lr == pytest.approx(3e-3)
    message = str(err)
    assert "epoch 1/2, step 3/4" in message and "lr 0.003" in message
    assert f"{err.last_finite_loss:.6g}" in message and "check_numerics=True" in message


class PoisonOnEpoch:
    """Re-iterable batches that turn NaN from step ``step`` of epoch ``epoch`` (1-based) on."""

    def __init__(self, batches, epoch, step):
        self.batches, self.epoch, self.step, self.seen = batches, epoch, step, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.seen += 1
        for i, (x, y) in enumerate(self.batches, start=1):
            yield (np.full_like(x, np.nan), y) if self.seen == self.epoch and i >= self.step else (x, y)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_in_a_later_epoch_and_from_a_huge_lr(data):
    train_data, _, _ = data
    train, _ = make_plans()
    saved = []
    with pytest.raises(TrainingDivergedError, match=r"epoch 2/3, step 2/4") as info:
        fit(train, PoisonOnEpoch(train_data[:4], epoch=2, step=2), epochs=3, progress=False, log=None,
            checkpoint=lambda epoch, history: saved.append(epoch))
    assert info.value.epoch == 2 and len(info.value.history) == 1 and saved == [1]

    train, _ = make_plans(optimizer=gn.optim.SGD(lr=1e4))
    with pytest.raises(TrainingDivergedError, match="lower learning rate") as info:
        fit(train, train_data, epochs=5, progress=False, log=None)
    assert info.value.lr == 1e4 and info.value.epoch >= 1 and info.value.step >= 1


def test_checkpoint_and_on_epoch_end_called_once_per_epoch(data):
    train_data, val_data, _ = data
    train, infer = make_plans()
    calls = []

    def checkpoint(epoch, history):
        calls.append(("checkpoint", epoch, len(history), history.val_accuracy[-1] is not None))

    def on_epoch_end(epoch, history):
        calls.append(("end", epoch, len(history), train.lr))

    schedule = gn.optim.StepLR(train.optimizer, step_size=1, gamma=0.5)
    fit(train, train_data[:2], epochs=3, eval_plan=infer, val_data=val_data[:1], schedule=schedule,
        checkpoint=checkpoint, on_epoch_end=on_epoch_end, progress=False, log=None)
    assert calls == [
        ("checkpoint", 1, 1, True), ("end", 1, 1, pytest.approx(1.5e-3)),
        ("checkpoint", 2, 2, True), ("end", 2, 2, pytest.approx(7.5e-4)),
        ("checkpoint", 3, 3, True), ("end", 3, 3, pytest.approx(3.75e-4)),
    ]   # the schedule has stepped before the hooks run


def test_on_epoch_end_returning_true_stops_early(data):
    train, _ = make_plans()
    history = fit(train, data[0][:2], epochs=10, on_epoch_end=lambda epoch, history: epoch == 2,
                  progress=False, log=None)
    assert len(history) == 2


def test_evaluate_matches_numpy(data):
    _, val_data, (xv, yv) = data
    train, infer = make_plans()
    fit(train, data[0][:4], progress=False, log=None)
    result = evaluate(infer, val_data)
    logits = infer.run(x=xv)["logits"].astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    nll = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(yv)), yv]
    assert result["samples"] == len(yv) == 203
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == yv), abs=1e-12)
    assert result["loss"] == pytest.approx(nll.mean(), rel=1e-6)
    # the same number as graphnet's own cross_entropy
    labels = gn.placeholder("labels", (None,), dtype="int64")
    ce = gn.compile(gn.losses.cross_entropy(gn.placeholder("s", (None, CLASSES)), labels))
    assert result["loss"] == pytest.approx(float(ce.run(s=logits.astype(np.float32), labels=yv)["output"]), rel=1e-5)
    assert "loss" not in evaluate(infer, val_data, compute_loss=False)
    # huge scores stay finite (log-sum-exp)
    big = gn.compile({"logits": gn.placeholder("x", (None, CLASSES)) * 1e4})
    huge = evaluate(big, [(np.asarray([[1.0, 0, 0, 0], [0, 1.0, 0, 0]], np.float32), np.array([0, 0]))])
    assert huge["accuracy"] == 0.5 and huge["loss"] == pytest.approx(5e3)


def test_predict_stacks_batches_with_a_ragged_end(data):
    _, _, (xv, yv) = data
    _, infer = make_plans()
    whole = infer.run(x=xv)["logits"]
    out = predict(infer, xv, batch_size=25)            # 203 = 8 * 25 + 3
    assert out.shape == (203, CLASSES)
    np.testing.assert_allclose(out, whole, rtol=1e-6, atol=1e-6)
    probs = softmax(out)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    x = gn.placeholder("x", (None, 2))
    both = gn.compile({"logits": x * 2.0, "other": x + 1.0})
    with pytest.raises(GraphnetError, match="returns"):
        predict(both, np.ones((3, 2), np.float32))
    assert predict(both, np.ones((3, 2), np.float32), batch_size=2, output="other").shape == (3, 2)


def test_history_json_round_trip(tmp_path, data):
    train, infer = make_plans()
    history = fit(train, data[0][:2], epochs=2, eval_plan=infer, val_data=data[1][:1], progress=False, log=None)
    history.train_accuracy[0] = None            # None survives
    path = history.to_json(tmp_path / "history.json")
    raw = json.loads((tmp_path / "history.json").read_text())
    assert raw["epoch"] == [1, 2] and set(raw) >= {"train_loss", "val_accuracy", "lr", "images_per_second"}
    loaded = History.from_json(path)
    assert loaded == history and loaded.as_dict() == history.as_dict()
    assert "train_loss" in history.summary() and repr(history).startswith("History(2 epochs)")
    assert len(history.summary().splitlines()) == 3


def test_fit_checks_its_inputs(data):
    train_data, val_data, _ = data
    train, infer = make_plans()
    with pytest.raises(FeedError, match="feeds are"):
        fit(train, train_data, feed_names=("images", "labels"), progress=False, log=None)
    with pytest.raises(GraphnetError, match="both eval_plan"):
        fit(train, train_data, eval_plan=infer, progress=False, log=None)
    with pytest.raises(OptimizerError, match="no optimizer"):
        fit(infer, train_data, progress=False, log=None)
    with pytest.raises(GraphnetError, match="re-iterable"):
        fit(train, iter(train_data[:2]), epochs=2, progress=False, log=None)
    with pytest.raises(GraphnetError, match=r"has 1 parts, but the plan.s feeds are"):
        fit(train, [train_data[0][0]], progress=False, log=None)


def test_progress_bar_shows_loss_and_throughput(data, capsys):
    train, _ = make_plans()
    fit(train, data[0][:3], epochs=1, progress=True, log=None)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "3/3" in err and "loss=" in err and "img_s=" in err


# --- plots -------------------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    image = pytest.importorskip("matplotlib.image")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    return image.imread(path)


def test_plot_history_writes_a_png(tmp_path, data):
    pytest.importorskip("matplotlib")
    from graphnet.plots import plot_history

    train, infer = make_plans()
    history = fit(train, data[0][:4], epochs=3, eval_plan=infer, val_data=data[1][:1], progress=False, log=None)
    path = tmp_path / "sub" / "history.png"
    assert plot_history(history, path) == path
    pixels = read_png(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] > 2 * pixels.shape[0]     # two side-by-side panels
    plot_history(History.from_dict({**history.as_dict(), "train_accuracy": [None] * 3}), tmp_path / "b.png")
    read_png(tmp_path / "b.png")


def test_plot_prediction_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from graphnet.plots import PlotError, plot_prediction

    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    probs = softmax(np.linspace(-2, 3, 10))
    image = np.random.default_rng(0).random((1, 28, 28)).astype(np.float32)
    path = plot_prediction(image, probs, names, str(tmp_path / "pred.png"), true_label=3)
    assert path == str(tmp_path / "pred.png")
    pixels = read_png(tmp_path / "pred.png")
    assert pixels.shape[0] >= 300 and pixels.shape[1] > pixels.shape[0]
    plot_prediction(image[0], probs, names, tmp_path / "p2.png", true_label="Ankle boot")
    read_png(tmp_path / "p2.png")
    with pytest.raises(PlotError, match="softmax"):
        plot_prediction(image, np.linspace(-2, 3, 10), names, tmp_path / "bad.png")
    with pytest.raises(PlotError, match="10 probabilities for 3"):
        plot_prediction(image, probs, names[:3], tmp_path / "bad.png")
    with pytest.raises(PlotError, match="grayscale"):
        plot_prediction(np.zeros((3, 28, 28)), probs, names, tmp_path / "bad.png")


def test_plots_without_matplotlib_raise_plot_error(tmp_path, monkeypatch):
    from graphnet.plots import PlotError, plot_prediction

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(PlotError, match=r"pip install graphnet\[plot\]") as info:
        plot_prediction(np.zeros((8, 8)), [1.0, 0.0], ["a", "b"], tmp_path / "x.png")
    assert isinstance(info.value, GraphnetError)


def test_fit_trains_an_autoencoder_with_tuple_or_dict_batches():
    gn.manual_seed(0)
    encoder = gn.nn.Sequential(gn.nn.Linear(8, 3), gn.nn.Tanh())
    decoder = gn.nn.Linear(3, 8)
    x = gn.placeholder("x", (None, 8))
    loss = gn.losses.mse(decoder(encoder(x)), x)
    train = gn.compile(loss, optimizer=gn.optim.Adam(lr=0.02))
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((3, 8)).astype(np.float32)
    data = [(rng.standard_normal((32, 3)).astype(np.float32) @ basis,) for _ in range(20)]
    history = gn.train.fit(train, data, epochs=5, progress=False, log=None)
    assert history.last()["train_accuracy"] is None
    assert history.train_loss[-1] < 0.3 * history.train_loss[0]
    again = gn.train.fit(train, [{"x": b[0]} for b in data], epochs=1, progress=False, log=None)
    assert again.last()["train_loss"] <= history.last()["train_loss"] * 1.5
    with pytest.raises(gn.GraphnetError, match="feeds are"):
        gn.train.fit(train, [(data[0][0], data[0][0])], progress=False, log=None)
