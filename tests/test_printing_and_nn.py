"""The text printers, module registration and initialisation."""

import numpy as np
import pytest

import graphnet as gn


def test_graph_printer_is_one_line_per_node_and_deterministic():
    def build():
        x = gn.placeholder("x", (None, 3))
        w = gn.placeholder("w", (3, 2))
        return gn.make_graph({"y": gn.relu(x @ w)})

    text = str(build())
    assert text == str(build())
    lines = text.splitlines()
    assert lines[0] == "{ lambda x:float32[?,3] w:float32[3,2] ."
    assert lines[1].startswith("  %0:float32[?,2] = matmul x w")
    assert lines[2].startswith("  %1:float32[?,2] = relu %0")
    assert lines[-1] == "  in (y=%1) }"


def test_plan_printer_shows_steps_roles_and_frees():
    x = gn.placeholder("x", (None, 3))
    layer = gn.nn.Linear(3, 2)
    with gn.config.options(disabled_passes={"fuse_updates"}):
        plan = gn.compile(gn.mean(layer(x)), optimizer=gn.optim.SGD(lr=0.1))
    text = str(plan)
    assert "variable  var:weight: float32[2,3]" in text
    assert "var:weight <- assign {param_update} var:weight" in text and "[update]" in text
    assert "var:optimizer.step <- assign {step_counter}" in text and "effects:" in text
    assert "[grad]" in text and "free" in text
    assert "optimizer sgd" in text
    fused = str(gn.compile(gn.mean(layer(x)), optimizer=gn.optim.Adam(lr=0.1)))  # each update in one step
    assert "var:weight@exp_avg_sq, var:weight@exp_avg, var:weight <- fused_assign {optimizer_state, " \
           "optimizer_state, param_update:" in fused


def test_user_module_registers_parameters_by_attribute():
    class Block(gn.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = gn.nn.Conv2d(3, 4, 3)
            self.bn = gn.nn.BatchNorm2d(4)
            self.scale = gn.Parameter(np.ones(1, np.float32))

        def forward(self, x):
            return self.bn(self.conv1(x)) * self.scale

    block = Block()
    names = [n for n, _ in block.named_parameters()]
    assert names == ["scale", "conv1.weight", "conv1.bias", "bn.weight", "bn.bias"]
    assert [n for n, _ in block.named_buffers()] == ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert set(block.state_dict()) == set(names) | {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    block.eval()
    assert not block.bn.training
    assert "Conv2d(3, 4, kernel_size=(3, 3)" in repr(block)


def test_sequential_indexing_and_default_names():
    model = gn.nn.Sequential(gn.nn.Linear(2, 3), gn.nn.ReLU(), gn.nn.Linear(3, 1))
    assert len(model) == 3 and isinstance(model[2], gn.nn.Linear)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    model(gn.placeholder("x", (None, 2)))
    assert model[0].weight.name == "0.weight"


def test_default_initialisation_matches_pytorch_bounds_and_seed():
    gn.manual_seed(7)
    a = gn.nn.Linear(400, 50)
    gn.manual_seed(7)
    b = gn.nn.Linear(400, 50)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    bound = 1 / np.sqrt(400)
    assert np.abs(a.weight.data).max() <= bound and np.abs(a.weight.data).max() > 0.95 * bound
    assert a.weight.data.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)
    conv = gn.nn.Conv2d(4, 8, 3, groups=2)
    assert conv.weight.data.shape == (8, 2, 3, 3)
    assert np.abs(conv.weight.data).max() <= 1 / np.sqrt(2 * 9)
    bn = gn.nn.BatchNorm2d(3)
    np.testing.assert_array_equal(bn.weight.data, 1.0)
    np.testing.assert_array_equal(bn.running_var.data, 1.0)


def test_outputs_are_keyed_by_name_and_dict_keys():
    x = gn.placeholder("x", (2,))
    doubled = x * 2.0
    assert set(gn.compile(doubled).run(x=np.ones(2, np.float32))) == {"doubled"}
    assert set(gn.compile([doubled, (x + 1.0).named("plus")]).run(x=np.ones(2, np.float32))) == {"doubled", "plus"}
    assert set(gn.compile({"a": doubled}).run({"x": np.ones(2, np.float32)})) == {"a"}


def test_debug_flag_prints_pass_report(capsys):
    x = gn.placeholder("x", (2,))
    with gn.config.options(debug=3):
        gn.compile(gn.exp(x))
    printed = capsys.readouterr().out
    assert "passes:" in printed and "cse" in printed and "plan {" in printed


def test_module_attribute_first_none_then_a_module_registers_it():
    class Block(gn.nn.Module):
        def __init__(self):
            super().__init__()
            self.shortcut = None
            self.shortcut = gn.nn.Linear(2, 2)

    block = Block()
    assert isinstance(block.shortcut, gn.nn.Linear)
    assert [n for n, _ in block.named_parameters()] == ["shortcut.weight", "shortcut.bias"]
