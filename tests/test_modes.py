"""Train and eval mode decided when a plan is compiled (issue: no silent wrong results)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import graphnet as gn


def _net():
    gn.manual_seed(0)
    return gn.nn.Sequential(gn.nn.Linear(4, 4), gn.nn.Dropout(0.5))


def test_eval_after_declaring_turns_dropout_off():
    m = _net()
    x = gn.placeholder("x", (None, 4))
    out = m(x)
    m.eval()
    p = gn.compile(out)
    xb = np.ones((2, 4), np.float32)
    assert np.array_equal(p.run(x=xb)["out"], p.run(x=xb)["out"])
    assert p.plan.mode == "eval" and "mode eval" in str(p)


def test_one_graph_compiles_to_a_training_and_an_inference_plan():
    gn.manual_seed(0)
    model = gn.nn.Sequential(gn.nn.Conv2d(1, 2, 3), gn.nn.BatchNorm2d(2), gn.nn.ReLU(), gn.nn.Dropout(0.5),
                             gn.nn.Flatten(), gn.nn.Linear(2 * 4 * 4, 3))
    x = gn.placeholder("x", (None, 1, 6, 6))
    labels = gn.placeholder("labels", (None,), "int64")
    logits = model(x)
    train = gn.compile({"loss": gn.losses.cross_entropy(logits, labels), "logits": logits},
                       optimizer=gn.optim.SGD(lr=0.1))
    assert train.plan.mode == "train" and sum(k == "running_stat" for _, k in train.plan.state_writes()) == 3  # running mean and variance, num_batches_tracked
    rng = np.random.default_rng(0)
    xb, yb = rng.standard_normal((8, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 8)
    train.run(x=xb, labels=yb)
    model.eval()
    infer = gn.compile({"logits": logits})
    assert infer.plan.mode == "eval"
    assert not any(s.op == "assign" for s in infer.plan.steps)  # an eval plan never writes running statistics
    bn = model[1]
    stats = bn.running_mean.data.copy(), bn.running_var.data.copy()
    first = infer.run(x=xb)["logits"]
    np.testing.assert_array_equal(first, infer.run(x=xb)["logits"])  # deterministic
    np.testing.assert_array_equal(stats[0], bn.running_mean.data)
    # the eval plan uses the running statistics: the reference by hand
    h = xb
    conv = model[0]
    ref = gn.compile({"h": conv(x)}).run(x=h)["h"]
    ref = (ref - bn.running_mean.data[None, :, None, None]) / np.sqrt(bn.running_var.data[None, :, None, None] + 1e-5)
    ref = ref * bn.weight.data[None, :, None, None] + bn.bias.data[None, :, None, None]
    ref = np.maximum(ref, 0).reshape(8, -1) @ model[5].weight.data.T + model[5].bias.data
    np.testing.assert_allclose(first, ref, rtol=1e-4, atol=1e-5)
    model.train()  # the training plan is unchanged by modes set after it was compiled
    assert train.plan.mode == "train"


def test_inference_plan_in_training_mode_warns_once_naming_the_modules():
    m = _net()
    x = gn.placeholder("x", (None, 4))
    out = m(x)
    with pytest.warns(gn.ModeWarning, match=r"1 \(Dropout\)") as record:
        gn.compile(out)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gn.compile(out, mode="train")  # Monte-Carlo dropout, on purpose
        gn.compile(gn.losses.mse(out, np.zeros((1, 4), np.float32)), optimizer=gn.optim.SGD(lr=0.1))


def test_compile_mode_overrides_every_module():
    m = _net()
    x = gn.placeholder("x", (None, 4))
    out = m(x)
    assert gn.compile(out, mode="eval").plan.mode == "eval"
    m.eval()
    assert gn.compile(out, mode="train").plan.mode == "train"
    with pytest.raises(gn.GraphnetError, match="mode"):
        gn.compile(out, mode="inference")


def test_saving_for_inference_writes_an_eval_plan_without_loss_labels_or_state(tmp_path):
    gn.manual_seed(0)
    model = gn.nn.Sequential(gn.nn.Linear(3, 4), gn.nn.Dropout(0.5), gn.nn.Linear(4, 2))
    x = gn.placeholder("x", (None, 3))
    labels = gn.placeholder("labels", (None,), "int64")
    logits = model(x)
    train = gn.compile({"loss": gn.losses.cross_entropy(logits, labels), "logits": logits},
                       optimizer=gn.optim.Adam(lr=0.1))
    train.run(x=np.ones((2, 3), np.float32), labels=np.array([0, 1]))
    train.save(tmp_path / "infer.gnp", inference=True)
    loaded = gn.load(tmp_path / "infer.gnp")
    assert list(loaded.plan.outputs) == ["logits"] and list(loaded.plan.feeds) == ["x"]
    assert loaded.plan.mode == "eval" and loaded.optimizer is None
    assert {v.kind for v in loaded.variables.values()} == {"parameter"}
    xb = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(loaded.run(x=xb)["logits"], loaded.run(x=xb)["logits"])


_MASKS = """
import numpy as np, graphnet as gn
gn.manual_seed(7)
x = gn.placeholder("x", (3, 5))
print(gn.compile(gn.dropout(x, 0.5)).run(x=np.ones((3, 5), np.float32))["output"].tobytes().hex())
"""


def test_manual_seed_seeds_the_random_ops_of_plans_compiled_after_it():
    runs = [subprocess.run([sys.executable, "-c", _MASKS], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].strip()
    gn.manual_seed(7)
    x = gn.placeholder("x", (3, 5))
    a = gn.compile(gn.dropout(x, 0.5)).run(x=np.ones((3, 5), np.float32))["output"]
    assert a.tobytes().hex() == runs[0].strip()


def test_gradients_declared_through_a_module_follow_its_compiled_mode():
    gn.manual_seed(0)
    bn = gn.nn.BatchNorm2d(2, dtype="float64")
    bn.weight.data[...] = [0.5, 2.0]
    bn.bias.data[...] = [0.1, -0.3]
    x = gn.placeholder("x", (4, 2, 2, 2), "float64")
    y = bn(x)
    g = gn.grad(gn.sum(y * y), x)
    xv = np.random.default_rng(0).standard_normal((4, 2, 2, 2))
    train_g = gn.compile({"g": g}, mode="train").run(x=xv)["g"]
    eval_g = gn.compile({"g": g}, mode="eval").run(x=xv)["g"]
    # eval: y = (x - mean) / sqrt(var + eps) * w + b with the running statistics (the training
    # run just updated them), so dy/dx is a constant scale
    w, b = bn.weight.data[None, :, None, None], bn.bias.data[None, :, None, None]
    m, s = bn.running_mean.data[None, :, None, None], 1 / np.sqrt(bn.running_var.data[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(eval_g, 2 * ((xv - m) * s * w + b) * s * w, rtol=1e-10)
    assert not np.allclose(train_g, eval_g)
