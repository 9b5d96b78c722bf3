"""Shape and dtype rules at declaration, symbolic dims included, checked against NumPy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn

dims = st.integers(1, 4)
shapes = st.lists(dims, min_size=0, max_size=4).map(tuple)


@settings(max_examples=150, deadline=None)
@given(shapes, shapes)
def test_broadcast_rule_agrees_with_numpy(a, b):
    try:
        expected = np.broadcast_shapes(a, b)
    except ValueError:
        with pytest.raises(gn.ShapeError):
            gn.placeholder("a", a) + gn.placeholder("b", b)
        return
    assert (gn.placeholder("a", a) + gn.placeholder("b", b)).shape == expected


@settings(max_examples=80, deadline=None)
@given(st.lists(dims, min_size=1, max_size=4).map(tuple), st.data())
def test_reduction_shapes_agree_with_numpy(shape, data):
    axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    keepdims = data.draw(st.booleans())
    x = gn.placeholder("x", shape)
    expected = np.sum(np.zeros(shape), axis=axis, keepdims=keepdims).shape
    assert gn.sum(x, axis, keepdims).shape == expected
    assert gn.max(x, axis, keepdims).shape == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2),
       st.integers(1, 2), st.integers(1, 3))
def test_conv_output_shape_matches_a_run(n, h, w, k, p, s, d):
    x = gn.placeholder("x", (n, 2, h + 6, w + 6), dtype="float64")
    weight = gn.placeholder("w", (4, 2, k, k), dtype="float64")
    if min(h, w) + 6 + 2 * p < d * (k - 1) + 1:  # the kernel does not fit: refused at declaration
        with pytest.raises(gn.ShapeError, match="too small for kernel"):
            gn.conv2d(x, weight, stride=s, padding=p, dilation=d)
        return
    y = gn.conv2d(x, weight, stride=s, padding=p, dilation=d)
    out = gn.compile({"y": y}).run(x=np.zeros((n, 2, h + 6, w + 6)), w=np.zeros((4, 2, k, k)))["y"]
    assert out.shape == y.shape


def test_symbolic_dims_propagate_by_name():
    x = gn.placeholder("x", ("batch", 3))
    y = gn.placeholder("y", ("batch", 1))
    assert (x * y).shape == ("batch", 3)
    assert gn.sum(x, axis=1).shape == ("batch",)
    assert gn.reshape(x, ("batch", 3, 1)).shape == ("batch", 3, 1)
    assert gn.transpose(x).shape == (3, "batch")
    h = gn.nn.Linear(3, 7)(x)
    assert h.shape == ("batch", 7)
    z = gn.placeholder("z", (None, 1, 28, 28))
    assert gn.nn.Conv2d(1, 4, 5)(z).shape == (None, 4, 24, 24)
    assert gn.flatten(gn.max_pool2d(z, 2)).shape == (None, 196)


def test_symbolic_batch_runs_with_any_size():
    x = gn.placeholder("x", ("batch", 3))
    plan = gn.compile({"s": gn.mean(x * 2.0, axis=0)})
    for n in (1, 5):
        np.testing.assert_allclose(plan.run(x=np.ones((n, 3), np.float32))["s"], 2.0)


def test_dtype_rules():
    f = gn.placeholder("f", (3,))
    d = gn.placeholder("d", (3,), dtype="float64")
    i = gn.placeholder("i", (3,), dtype="int64")
    assert (f * 2).dtype == "float32"  # Python scalars adopt the tensor's dtype
    assert (f * 2.5).dtype == "float32"
    assert (f + d).dtype == "float64"
    assert (i + 1).dtype == "int64"
    assert (f > 0).dtype == "bool"
    with pytest.raises(gn.DTypeError):
        gn.exp(i)
    with pytest.raises(gn.DTypeError):
        gn.where(f, f, f)


def test_indexing_shapes_match_numpy():
    x = gn.placeholder("x", (4, 5, 6))
    ref = np.zeros((4, 5, 6))
    for index in [(1,), (slice(1, 3),), (Ellipsis, 2), (slice(None), None, 3), (-1, slice(None, None, 2))]:
        assert x[index].shape == ref[index].shape, index


def test_flatten_and_concat_rules():
    x = gn.placeholder("x", (None, 2, 3, 4))
    assert gn.flatten(x).shape == (None, 24)
    assert gn.flatten(x, 0, 1).shape == (None, 3, 4)
    y = gn.placeholder("y", (None, 5, 3, 4))
    assert gn.concat([x, y], axis=1).shape == (None, 7, 3, 4)
    with pytest.raises(gn.ShapeError, match="only axis 1 may differ"):
        gn.concat([x, gn.placeholder("z", (None, 5, 2, 4))], axis=1)
