"""Kernels generated from fused groups (numba) against the fused op's NumPy kernel, which runs
each member's own kernel: every elementwise op with a scalar form, every dtype it takes,
broadcasting and size edges."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from graphnet.backends.numpy import fused_kernels
from graphnet.codegen import fused_body
from graphnet.codegen import cache
from graphnet.ops.registry import REGISTRY

pytestmark = pytest.mark.skipif(not fused_kernels.numba_available(), reason="numba is not installed")

NUMPY_KERNEL = REGISTRY["fused"].kernel
RNG = np.random.default_rng(11)

#: op -> (arity, attributes, input maker(dtype, shape)); inputs kept in each op's domain
UNARY_DOMAIN = {"log": (0.1, 4.0), "sqrt": (0.0, 4.0)}
ATTRS = {"leaky_relu": {"alpha": 0.1}, "elu": {"alpha": 1.3}, "gelu": {"approximate": "none"},
         "softplus": {"beta": 1.5, "threshold": 2.0}}
COMPARISONS = ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")
ELEMENTWISE = sorted(name for name, op in REGISTRY.items()
                     if op.category == "elementwise" and op.scalar is not None and name not in ("cast", "where"))


def _values(dtype: str, shape: tuple[int, ...], low: float = -3.0, high: float = 3.0) -> np.ndarray:
    if dtype == "bool":
        return RNG.random(shape) > 0.5
    if np.dtype(dtype).kind in "iu":
        return RNG.integers(max(int(low), 1) if low > 0 else -3, 4, shape).astype(dtype)
    values = RNG.uniform(low, high, shape).astype(dtype)
    values.flat[: min(2, values.size)] = [0.0, 1.0][: min(2, values.size)]  # exact zeros and ones too
    return values


def _both(body: tuple, arrays: list[np.ndarray], out_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        expected = NUMPY_KERNEL(np, *[a.copy() for a in arrays], body=body)
    kernel = fused_kernels.FusedKernel(body, out_dtype, lambda *a, out=None: NUMPY_KERNEL(np, *a, body=body, out=out))
    got = kernel(*arrays)
    return np.asarray(got), np.asarray(expected)


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if got.dtype.kind == "f":
        eps = float(np.finfo(got.dtype).eps)
        np.testing.assert_allclose(got, expected, rtol=8 * eps, atol=8 * eps)
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ELEMENTWISE)
def test_each_op_generated_matches_its_numpy_kernel(op: str, dtype: str) -> None:
    arity = 2 if op in COMPARISONS or op in ("add", "sub", "mul", "div", "pow", "maximum", "minimum") else 1
    attrs = tuple(sorted(ATTRS.get(op, {}).items()))
    low, high = UNARY_DOMAIN.get(op, (0.5, 2.0) if op == "pow" else (-3.0, 3.0))
    arrays = [_values(dtype, (7, 33), low, high) for _ in range(arity)]
    if op == "div":
        arrays[1][arrays[1] == 0] = 0.5
    follow = ("cast", (0,), (("dtype", "float32"),)) if op in COMPARISONS else ("neg", (0,), ())
    body = ((op, tuple(-k - 1 for k in range(arity)), attrs), follow)
    out_dtype = "float32" if op in COMPARISONS else dtype
    got, expected = _both(body, arrays, out_dtype)
    _close(got, expected)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_arithmetic_on_every_dtype_and_mixed_dtypes_promote_as_numpy(dtype: str) -> None:
    a, b = _values(dtype, (4, 9)), _values("float64" if dtype == "int64" else dtype, (9,))
    body = (("mul", (-1, -2), ()), ("add", (0, -1), ()), ("maximum", (1, -2), ()))
    got, expected = _both(body, [a, b], np.result_type(a, b).name)
    _close(got, expected)


def test_where_with_a_mask_cast_and_float32_constants_stay_float32() -> None:
    x = _values("float32", (5, 8))
    body = (("greater", (-1, -2), ()), ("where", (0, -1, -2), ()), ("cast", (1,), (("dtype", "float64"),)),
            ("mul", (2, -3), ()))
    zero, scale = np.zeros((), np.float32), np.full((1, 8), 0.3, np.float64)
    got, expected = _both(body, [x, zero, scale], "float64")
    _close(got, expected)
    # a float32 chain with constants typed float32: no silent float64 promotion anywhere
    body = (("sigmoid", (-1,), ()), ("mul", (0, -2), ()), ("gelu", (1,), (("approximate", "tanh"),)))
    got, expected = _both(body, [x, np.float32(0.7) * np.ones((), np.float32)], "float32")
    _close(got, expected)
    source = fused_kernels.kernel_source(body, ["float32", "float32"], [(True,), (False,)], "float32")
    assert "np.float64" not in source and "np.float32(0.5)" in source


@pytest.mark.parametrize("shapes", [
    [(6, 5), (5,)], [(6, 5), (6, 1)], [(2, 3, 4, 5), (1, 3, 1, 1)], [(2, 3, 4, 5), (3, 1, 1)],
    [(1, 4), (3, 1)], [(), ()], [(1,), (1, 1)], [(0, 3), (3,)], [(4, 1, 5), (1, 6, 1)], [(7,), ()],
])
def test_broadcasting_edges(shapes: list[tuple[int, ...]]) -> None:
    arrays = [_values("float32", s) for s in shapes]
    body = (("sub", (-1, -2), ()), ("mul", (0, -2), ()), ("tanh", (1,), ()))
    got, expected = _both(body, arrays, "float32")
    _close(got, expected)


def test_collapse_merges_dims_broadcast_alike() -> None:
    extents, spans = fused_body.collapse((8, 16, 5, 5), [(8, 16, 5, 5), (1, 16, 1, 1)])
    assert extents == (8, 16, 25) and spans == ((True, True, True), (False, True, False))
    extents, spans = fused_body.collapse((128, 512), [(128, 512), (512,), ()])
    assert extents == (128, 512) and spans == ((True, True), (False, True), (False, False))
    extents, spans = fused_body.collapse((4, 6), [(4, 6), (4, 6)])
    assert extents == (24,)


def test_writing_into_out_an_input_or_a_strided_array() -> None:
    body = (("mul", (-1, -2), ()), ("add", (0, -1), ()))
    a, b = _values("float32", (6, 4)), _values("float32", (6, 4))
    expected = a * b + a
    kernel = fused_kernels.FusedKernel(body, "float32", None)
    assert kernel(a.copy(), b, out=a) is a  # reads each element before writing it
    np.testing.assert_array_equal(a, expected)
    strided = np.zeros((6, 8), np.float32)[:, ::2]
    kernel(a.copy(), b.T.copy().T[:, :], out=strided)
    np.testing.assert_allclose(strided, a * b + a, rtol=1e-6)
    transposed = _values("float32", (4, 6)).T  # a non-contiguous input
    np.testing.assert_allclose(kernel(transposed, b), transposed * b + transposed, rtol=1e-6)


def test_a_dtype_numba_cannot_take_falls_back_to_numpy() -> None:
    body = (("add", (-1, -2), ()), ("neg", (0,), ()))
    a = _values("float32", (3, 3)).astype(np.float16)
    kernel = fused_kernels.FusedKernel(body, "float16",
                                       lambda *x, out=None: NUMPY_KERNEL(np, *x, body=body, out=out))
    np.testing.assert_array_equal(kernel(a, a), -(a + a))


def test_a_second_process_loads_kernels_from_the_disk_cache(tmp_path) -> None:
    import subprocess
    import sys

    script = (
        "import numpy as np, graphnet as gn\n"
        "from graphnet.backends.numpy import fused_kernels as nc\n"
        "x = gn.placeholder('x', (None, 5))\n"
        "with gn.config.options(fuse=True):\n"
        "    p = gn.compile(gn.tanh(x * 2.0 + 1.0) * x)\n"
        "print(nc.stats.kernels, nc.stats.compile_seconds, float(p.run(x=np.ones((2, 5), np.float32))['output'][0, 0]))\n"
    )
    env = {**__import__("os").environ, "GRAPHNET_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
            .stdout.split() for _ in range(2)]
    assert runs[0][0] == runs[1][0] == "1" and runs[0][2] == runs[1][2]
    assert math.isclose(float(runs[0][2]), math.tanh(3.0), rel_tol=1e-6)
    assert float(runs[1][1]) < float(runs[0][1])  # loaded, not compiled again
    assert any(tmp_path.rglob("*.nbi"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (7, 3), (1, 3, 2, 2)])
@pytest.mark.parametrize("affine, relu", [(True, False), (False, False), (True, True)])
def test_the_numba_batch_norm_kernels_compute_what_the_op_kernels_do(dtype, shape, affine, relu):
    from graphnet.kernels.cpu import batch_norm as cpu_batch_norm

    x = (RNG.standard_normal(shape) * 2 + 1).astype(dtype)
    g = RNG.standard_normal(shape).astype(dtype)
    gamma, beta = RNG.standard_normal(3).astype(dtype), RNG.standard_normal(3).astype(dtype)
    attrs = {"eps": 1e-3, "momentum": 0.1, "stats": False, "weight": affine, "bias": affine, "relu": relu}
    params = [gamma, beta] if affine else []
    forward = REGISTRY["batch_norm_train"].kernel
    expected = forward(np, x, *params, **attrs)
    got = cpu_batch_norm.batch_norm_train(x, *params, **attrs)
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-11, "atol": 1e-11}
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, **tol, equal_nan=True)
    backward = REGISTRY["batch_norm_train_grad"].kernel
    grad_attrs = {"eps": 1e-3, "weight": affine, "relu": relu}
    rectified = [expected[0]] if relu else []
    expected = backward(np, g, x, expected[1], expected[2], *params[:1], *rectified, **grad_attrs)
    got = cpu_batch_norm.batch_norm_train_grad(g, x, got[1], got[2], *params[:1], *rectified, **grad_attrs)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, reduction", [
    ((6, 5), ("sum", (("axes", (0,)), ("keepdims", False)))),
    ((6, 5), ("sum", (("axes", (1,)), ("keepdims", True)))),
    ((4, 3, 5), ("mean", (("axes", (0, 2)), ("keepdims", False)))),
    ((4, 3, 5), ("mean", (("axes", (0, 1, 2)), ("keepdims", False)))),
    ((4, 3, 5), ("sum_to", (("shape", (3, 1)),))),
    ((4, 3, 5), ("sum_to", (("shape", (1, 3, 5)),))),
    ((0, 3), ("sum", (("axes", (0,)), ("keepdims", False)))),
    ((0, 3), ("mean", (("axes", (0,)), ("keepdims", False)))),
])
def test_a_group_ending_in_a_reduction_matches_numpy(shape, reduction, dtype):
    op, attrs = reduction
    body = (("sub", (-1, -2), ()), ("mul", (0, 0), ()), (op, (1,), attrs))
    a, b = _values(dtype, shape), _values(dtype, shape[-1:])
    kernel = fused_kernels.FusedKernel(body, dtype, lambda *x, out=None: NUMPY_KERNEL(np, *x, body=body, out=out))
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)  # the mean of nothing is NaN
        expected = NUMPY_KERNEL(np, a, b, body=body)
        got = kernel(a, b)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    eps = float(np.finfo(dtype).eps)
    scale = max(1.0, float(np.abs(a).max()) ** 2) if a.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=16 * eps, atol=16 * eps * scale)
    source = fused_kernels.kernel_source(body, [dtype, dtype], [(True,) * 2, (False, True)], dtype,
                                         accumulate=(False, True))
    assert "acc[0, i1] += np.float64(v1)" in source


def test_an_unwritable_cache_directory_falls_back_to_one_private_directory(tmp_path, monkeypatch):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")  # a file where the cache directory should be: makedirs fails
    monkeypatch.setenv("GRAPHNET_CACHE_DIR", str(blocked))
    body = (("mul", (-1, -1), ()), ("sub", (0, -1), ()), ("mul", (1, -1), ()))  # a source no test compiled
    kernel = fused_kernels.FusedKernel(body, "float32", None)
    x = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(kernel(x), (x * x - x) * x)
    assert cache._fallback and os.path.isdir(cache._fallback[0])


def test_fallback_reasons_are_plain_text():
    from graphnet.backends.numpy.fused_kernels import reason_of

    coloured = TypeError("\x1b[1m\x1b[1mNo implementation of function\x1b[0m\nfor argument\x1b[0m")
    assert reason_of(coloured) == "TypeError: No implementation of function for argument"


def test_a_lone_gelu_or_erf_runs_as_a_generated_loop_of_one_member():
    """The NumPy backend runs a GELU no fusion group took (between a product and a dropout)
    through the numba generator: libm's erf once per element, equal to the reference kernel."""
    import graphnet as gn
    from graphnet.backends.numpy import fused_kernels

    if not fused_kernels.numba_available():
        pytest.skip("numba is not installed")
    x = gn.placeholder("x", (64, 33))
    w = gn.constant(np.linspace(-1, 1, 33 * 33).reshape(33, 33).astype(np.float32))
    outputs = {"gelu": gn.gelu(x @ w) @ w, "erf": gn.erf(x @ w) @ w}
    xv = np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32) * 3
    plan = gn.compile(outputs)
    with gn.config.options(codegen="numpy"):
        reference = gn.compile(outputs)
    assert plan.report.codegen["numba_groups"] == 2
    got, want = plan.run(x=xv), reference.run(x=xv)
    for name in outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-5)
