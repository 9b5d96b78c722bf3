"""Modules, freezing, parameter groups and hyperparameters, as a PyTorch user expects them."""

from __future__ import annotations

import numpy as np
import pytest

import graphnet as gn


class Tower(gn.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = gn.nn.ModuleList([gn.nn.Linear(3, 3) for _ in range(2)])
        self.heads = gn.nn.ModuleDict({"cls": gn.nn.Linear(3, 2), "reg": gn.nn.Linear(3, 1)})

    def forward(self, x):
        for layer in self.layers:
            x = gn.relu(layer(x))
        return self.heads["cls"](x)


def test_module_list_and_dict_register_their_modules():
    gn.manual_seed(0)
    t = Tower()
    keys = list(t.state_dict())
    assert keys[:2] == ["layers.0.weight", "layers.0.bias"] and "heads.cls.weight" in keys and "heads.reg.bias" in keys
    assert len(t.layers) == 2 and isinstance(t.layers[1], gn.nn.Linear) and len(t.layers[:1]) == 1
    t.layers.append(gn.nn.Linear(3, 3))
    assert "layers.2.weight" in t.state_dict() and "cls" in t.heads and list(t.heads) == ["cls", "reg"]
    t.eval()
    assert not t.layers[2].training and not t.heads["reg"].training
    assert [n for n, _ in t.named_modules()][:3] == ["", "layers", "layers.0"]


@pytest.mark.parametrize("value, suggestion", [
    (lambda: [gn.nn.Linear(2, 2)], "ModuleList"), (lambda: (gn.nn.Linear(2, 2),), "ModuleList"),
    (lambda: {"a": gn.nn.Linear(2, 2)}, "ModuleDict"), (lambda: [gn.Parameter(np.ones(2))], "ModuleList"),
])
def test_a_plain_container_of_modules_is_refused(value, suggestion):
    m = gn.nn.Module()
    with pytest.raises(gn.GraphnetError, match=suggestion):
        m.blocks = value()
    m.sizes = [1, 2, 3]  # plain data is fine


def test_frozen_parameters_get_no_gradient_and_no_update():
    gn.manual_seed(0)
    model = gn.nn.Sequential(gn.nn.Linear(3, 4), gn.nn.ReLU(), gn.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    x = gn.placeholder("x", (None, 3))
    before = model[0].weight.data.copy(), model[2].weight.data.copy()
    train = gn.compile(gn.mean(model(x) ** 2), optimizer=gn.optim.SGD(lr=0.1))
    assert {v.name for v in train.plan.variables_of_kind("parameter").values()
            if any(kind == "param_update" and written.endswith(v.name)
                   for written, kind in train.plan.state_writes())} == {"2.weight", "2.bias"}
    train.run(x=np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(model[0].weight.data, before[0])
    assert not np.array_equal(model[2].weight.data, before[1])
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["0.weight", "0.bias"]
    with pytest.raises(gn.GradientError, match="nothing to train"):
        model.requires_grad_(False)
        gn.compile(gn.mean(model(x) ** 2), optimizer=gn.optim.SGD(lr=0.1))


def test_parameter_data_is_assignable_with_checks():
    p = gn.Parameter(np.zeros((2, 2), np.float32))
    p.data = np.ones((2, 2))
    assert p.data.dtype == np.float32 and p.data.sum() == 4
    with pytest.raises(gn.ShapeError, match="shape"):
        p.data = np.ones(3)
    with pytest.raises(gn.ShapeError, match="complex|cannot assign"):
        p.data = np.ones((2, 2), np.complex64)


def test_parameter_groups_train_with_their_own_hyperparameters():
    w1 = gn.Parameter(np.ones(2, np.float32), name="w1")
    w2 = gn.Parameter(np.ones(2, np.float32), name="w2")
    x = gn.placeholder("x", (2,))
    loss = gn.sum(x * w1) + gn.sum(x * w2)
    opt = gn.optim.SGD([{"params": [w1], "lr": 0.5}, {"params": [w2]}], lr=0.1)
    train = gn.compile(loss, optimizer=opt)
    train.run(x=np.ones(2, np.float32))
    np.testing.assert_allclose(w1.data, 0.5)
    np.testing.assert_allclose(w2.data, 0.9)
    opt.param_groups[0]["lr"] = 0.25  # takes effect at the next run
    opt.lr = 0.2
    train.run(x=np.ones(2, np.float32))
    np.testing.assert_allclose(w1.data, 0.25)
    np.testing.assert_allclose(w2.data, 0.7)


def test_only_the_parameters_given_to_the_optimizer_train():
    w1 = gn.Parameter(np.ones(2, np.float32))
    w2 = gn.Parameter(np.ones(2, np.float32))
    x = gn.placeholder("x", (2,))
    train = gn.compile(gn.sum(x * w1 * w2), optimizer=gn.optim.SGD([w2], lr=0.5))
    train.run(x=np.ones(2, np.float32))
    np.testing.assert_array_equal(w1.data, 1.0)
    np.testing.assert_allclose(w2.data, 0.5)


def test_a_parameter_in_two_groups_is_an_error():
    w = gn.Parameter(np.ones(2, np.float32))
    with pytest.raises(gn.OptimizerError, match="groups 0 and 1"):
        gn.optim.Adam([{"params": [w]}, {"params": [w], "lr": 0.1}])
    with pytest.raises(gn.OptimizerError, match="not hyperparameters"):
        gn.optim.Adam([{"params": [w], "momentum": 0.9}])


def test_parameter_groups_survive_saving_and_loading(tmp_path):
    gn.manual_seed(0)
    model = gn.nn.Sequential(gn.nn.Linear(3, 4), gn.nn.Linear(4, 2))
    x = gn.placeholder("x", (None, 3))
    opt = gn.optim.Adam([{"params": model[0].parameters(), "lr": 1e-2}, {"params": model[1].parameters()}],
                        lr=1e-3)
    train = gn.compile(gn.mean(model(x) ** 2), optimizer=opt)
    xb = np.ones((2, 3), np.float32)
    train.run(x=xb)
    train.save(tmp_path / "g.gnp")
    loaded = gn.load(tmp_path / "g.gnp")
    assert loaded.optimizer.param_groups[0]["lr"] == 1e-2
    np.testing.assert_array_equal(train.run(x=xb)["loss"], loaded.run(x=xb)["loss"])
    np.testing.assert_array_equal(train.run(x=xb)["loss"], loaded.run(x=xb)["loss"])


def test_every_hyperparameter_is_live_and_printed():
    w = gn.Parameter(np.ones(2, np.float32), name="w")
    x = gn.placeholder("x", (2,))
    opt = gn.optim.SGD(lr=0.1, momentum=0.5)
    train = gn.compile(gn.sum(x * w), optimizer=opt)
    opt.momentum = 0.25
    train.run(x=np.ones(2, np.float32))
    assert "'momentum': 0.25" in str(train)


def test_module_api_a_pytorch_user_reaches_for():
    gn.manual_seed(0)
    model = gn.nn.Sequential(gn.nn.Linear(2, 3), gn.nn.BatchNorm1d(3) if hasattr(gn.nn, "BatchNorm1d")
                             else gn.nn.Identity())
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Sequential" and seen[0] == "Linear"
    assert [type(c).__name__ for c in model.children()][0] == "Linear"
    assert len(list(model.parameters(recurse=False))) == 0
    result = model.load_state_dict({"0.weight": np.zeros((3, 2)), "extra": np.zeros(1)}, strict=False)
    assert result.unexpected_keys == ["extra"] and "0.bias" in result.missing_keys
    model.double()
    assert model[0].weight.data.dtype == np.float64
    x = gn.placeholder("x", (None, 2), "float64")
    y = model[0](x)
    assert y.dtype == "float64"
    out = gn.compile({"y": y}).run(x=np.ones((1, 2)))["y"]
    assert out.dtype == np.float64


def test_changing_a_parameters_dtype_after_declaring_is_an_error():
    gn.manual_seed(0)
    layer = gn.nn.Linear(2, 2)
    x = gn.placeholder("x", (None, 2))
    y = layer(x)
    plan = gn.compile({"y": y})
    layer.double()
    with pytest.raises(gn.GraphError, match="declare the graph again"):
        gn.compile({"y": y})
    with pytest.raises(gn.ExecutorError, match="compile the plan again"):
        plan.run(x=np.ones((1, 2), np.float32))
