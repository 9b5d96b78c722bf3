"""Every typed error of the core, with the message a user needs to act on it."""

import inspect

import numpy as np
import pytest

import graphnet as gn
from graphnet.records import graph_from_records


def test_shape_error_names_op_module_shapes_and_user_line():
    x = gn.placeholder("x", (None, 3, 28, 28))
    model = gn.nn.Sequential(gn.nn.Conv2d(3, 8, 3), gn.nn.ReLU(), gn.nn.Conv2d(4, 8, 3))
    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(gn.ShapeError) as info:
        model(x)  # the line the message must name
    message = str(info.value)
    assert "conv2d" in message
    assert " in 2 " in message  # module path inside the Sequential
    assert "(None, 8, 26, 26) float32" in message and "(8, 4, 3, 3) float32" in message
    assert "expected input with 4 channels" in message
    assert f"test_errors.py:{line}" in message


def test_shape_error_raised_at_declaration_with_nested_path():
    class Net(gn.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = gn.nn.Sequential(gn.nn.Linear(4, 5), gn.nn.ReLU(), gn.nn.Linear(6, 2))

        def forward(self, x):
            return self.features(x)

    with pytest.raises(gn.ShapeError, match=r"features\.2"):
        Net()(gn.placeholder("x", (None, 4)))


def test_broadcast_mismatch_is_a_shape_error():
    a = gn.placeholder("a", (3, 4))
    b = gn.placeholder("b", (5,))
    with pytest.raises(gn.ShapeError, match=r"add .*\(3, 4\) float32, \(5,\) float32.*do not broadcast"):
        a + b


def test_matmul_inner_dims():
    with pytest.raises(gn.ShapeError, match="inner dims differ: 4 .* 5"):
        gn.placeholder("a", (3, 4)) @ gn.placeholder("b", (5, 2))


def test_reshape_element_count():
    with pytest.raises(gn.ShapeError, match="cannot reshape"):
        gn.reshape(gn.placeholder("a", (3, 4)), (5, 2))


def _plan():
    x = gn.placeholder("x", ("batch", 4))
    y = gn.placeholder("y", ("batch",), dtype="int64")
    return gn.compile(gn.sum(x, axis=1) + gn.cast(y, "float32"))


def test_missing_and_unexpected_feeds():
    plan = _plan()
    with pytest.raises(gn.FeedError, match=r"missing feed\(s\) \['y'\]"):
        plan.run(x=np.zeros((2, 4), np.float32))
    with pytest.raises(gn.FeedError, match=r"unexpected feed\(s\) \['z'\]"):
        plan.run(x=np.zeros((2, 4), np.float32), y=np.zeros(2, np.int64), z=1)


def test_wrong_shape_feed_names_expected_and_got():
    plan = _plan()
    with pytest.raises(gn.FeedError, match=r"feed 'x': expected shape \('batch', 4\), got \(2, 5\)"):
        plan.run(x=np.zeros((2, 5), np.float32), y=np.zeros(2, np.int64))


def test_symbolic_dims_must_agree_across_feeds():
    plan = _plan()
    with pytest.raises(gn.FeedError, match="feed 'y'.*bound so far: {'batch': 2}"):
        plan.run(x=np.zeros((2, 4), np.float32), y=np.zeros(3, np.int64))


def test_wrong_dtype_kind_feed():
    plan = _plan()
    with pytest.raises(gn.FeedError, match="feed 'y': expected dtype int64, got float32"):
        plan.run(x=np.zeros((2, 4), np.float32), y=np.zeros(2, np.float32))


def test_gradient_of_non_scalar():
    x = gn.placeholder("x", (3,))
    with pytest.raises(gn.GradientError, match="scalar"):
        gn.grad(x * 2.0, x)


def test_gradient_through_integer_tensor():
    n = gn.placeholder("n", (3,), dtype="int64")
    with pytest.raises(gn.GradientError, match="integer"):
        gn.grad(gn.sum(gn.cast(n, "float32")), n)


def test_unknown_executor_and_optimizer():
    x = gn.placeholder("x", (3,))
    with pytest.raises(gn.ExecutorError, match="unknown executor 'tpu'.*numpy"):
        gn.compile(gn.sum(x), executor="tpu")
    with pytest.raises(gn.OptimizerError):
        gn.optim.get("adamax2")
    with pytest.raises(gn.OptimizerError, match="gn.optim.Optimizer"):
        gn.compile(gn.sum(x), optimizer="adam")


def test_check_numerics_names_the_first_bad_step():
    x = gn.placeholder("x", (3,))
    y = gn.sum(gn.log(x))
    plan = gn.compile(y, check_numerics=True)
    with np.errstate(invalid="ignore"), pytest.raises(gn.NumericsError, match=r"NaN produced by log .*test_errors.py:\d+"):
        plan.run(x=np.array([1.0, -1.0, 2.0], np.float32))
    quiet = gn.compile(y)
    with np.errstate(invalid="ignore"):
        assert np.isnan(quiet.run(x=np.array([1.0, -1.0, 2.0], np.float32))["y"])


def _records(extra_input=None):
    x = {"id": "x", "op": "placeholder", "inputs": [], "attrs": {"name": "x", "shape": (3,), "dtype": "float32"}}
    y = {"id": "y", "op": "exp", "inputs": ["x"]}
    z = {"id": "z", "op": "log", "inputs": ["y"]}
    if extra_input:
        y["op"], y["inputs"] = "add", ["x", extra_input]
    return [x, y, z]


def test_hand_built_graph_runs_when_valid():
    graph = graph_from_records(_records(), {"z": "z"})
    assert [n.op for n in graph.nodes] == ["placeholder", "exp", "log"]


def test_hand_built_graph_with_dangling_input():
    with pytest.raises(gn.GraphError, match="reads 'w', which no record defines"):
        graph_from_records(_records(extra_input="w"), {"z": "z"})


def test_hand_built_graph_with_cycle():
    with pytest.raises(gn.GraphError, match="cycle"):
        graph_from_records(_records(extra_input="z"), {"z": "z"})


def test_hand_built_graph_with_unknown_op_and_bad_types():
    records = _records()
    records[1]["op"] = "os.system"
    with pytest.raises(gn.GraphError, match="unknown op 'os.system'"):
        graph_from_records(records, {"z": "z"})
    records = _records()
    records[1] = {"id": "y", "op": "matmul", "inputs": ["x", "x"]}
    with pytest.raises(gn.GraphError, match="rejects its inputs"):
        graph_from_records(records, {"z": "z"})


def test_verify_rejects_node_list_missing_an_input():
    from graphnet.ir import Graph

    x = gn.placeholder("x", (3,))
    z = gn.log(gn.exp(x))
    broken = Graph(outputs=(z.node,), output_names=("z",), nodes=(x.node, z.node))
    with pytest.raises(gn.GraphError, match="not earlier in the graph"):
        gn.passes.verify(broken)


def test_every_error_is_a_graphnet_error():
    for cls in (gn.ShapeError, gn.FeedError, gn.GraphError, gn.GradientError, gn.ExecutorError,
                gn.OptimizerError, gn.NumericsError, gn.DTypeError):
        assert issubclass(cls, gn.GraphnetError)
