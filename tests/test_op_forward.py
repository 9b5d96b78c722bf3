"""Every forward kernel, through gn ops compiled and run, against a plain NumPy reference.

Elementwise, reduction, shape and matmul ops are a table run in float32 and float64
(references in float64 on the same values). Convolution and pooling are checked against
direct loops; softmax, losses, batch norm (running statistics included) and dropout
against their textbook / PyTorch definitions. A meta-test checks that every registered op
with a kernel is run by some test (each test declares its ops with ``covers`` and fails
if no plan it compiled ran them).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

import graphnet as gn
from graphnet.ops import REGISTRY
from graphnet.ops.common import declare
from graphnet.ops.shape import slice_grad

from helpers import COVERED, assert_close, compile_plan, covers, placeholders, run, step_ops
import test_layers  # noqa: F401,E402  (its @covers entries count for the meta-test below)
import test_layers_more  # noqa: F401,E402  (likewise)
import test_scan  # noqa: F401,E402  (likewise)
import test_losses_more  # noqa: F401,E402  (likewise: target_weights)

R = np.random.default_rng(7)
FLOATS = ("float32", "float64")


def normal(*shape: int) -> np.ndarray:
    return R.standard_normal(shape)


def positive(*shape: int) -> np.ndarray:
    return R.uniform(0.2, 3.0, shape)


def ties(*shape: int) -> np.ndarray:
    """Small integers as floats: comparisons see plenty of equal pairs."""
    return R.integers(-2, 3, shape).astype(np.float64)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    # exp(x) / sum(exp(x)) written with the max shift only to stay finite in the reference
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True)))


# --- the elementwise / reduction / shape / matmul table ------------------------------------------


@dataclass
class FCase:
    id: str
    op: str  # the op whose kernel the compiled plan must run
    build: Callable[..., gn.Tensor]
    ref: Callable[..., np.ndarray]  # NumPy, on float64 copies of the feeds
    feeds: dict[str, np.ndarray]  # float arrays are cast to the dtype under test
    out_dtype: str | None = None  # None: the dtype under test
    rtol32: float | None = None
    atol32: float | None = None


TABLE: list[FCase] = []


def fcase(id: str, op: str, build: Callable, ref: Callable, out_dtype: str | None = None, rtol32: float | None = None,
          atol32: float | None = None, **feeds: np.ndarray) -> None:
    assert all(c.id != id for c in TABLE), id
    TABLE.append(FCase(id, op, build, ref, feeds, out_dtype, rtol32, atol32))


BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
          "maximum": np.maximum, "minimum": np.minimum}
for name, ufunc in BINARY.items():
    for sa, sb in [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((), (2, 3)), ((2, 1, 4), (3, 1))]:
        a = positive(*sa) if name == "pow" else ties(*sa) if name in ("maximum", "minimum") else normal(*sa)
        b = normal(*sb) if name != "div" else positive(*sb)
        if name in ("maximum", "minimum"):
            b = ties(*sb)
        fcase(f"{name}-{sa}x{sb}".replace(" ", ""), name, getattr(gn, name), ufunc, a=a, b=b,
              rtol32=1e-5 if name == "pow" else None)
fcase("operators", "add", lambda a, b: (a + b) * 2.0 - b / 4.0 + 1.0 - a ** 2,
      lambda a, b: (a + b) * 2.0 - b / 4.0 + 1.0 - a ** 2, a=normal(3, 4), b=normal(4))
fcase("reflected-operators", "sub", lambda a: 1.0 - 2.0 / a + 3.0 * a + 2.0 ** a,
      lambda a: 1.0 - 2.0 / a + 3.0 * a + 2.0 ** a, a=positive(3, 4), rtol32=1e-5)

COMPARE = {"equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
           "greater": np.greater, "greater_equal": np.greater_equal}
for name, ufunc in COMPARE.items():
    fcase(f"{name}", name, getattr(gn, name), ufunc, out_dtype="bool", a=ties(3, 4), b=ties(3, 4))
    fcase(f"{name}-broadcast", name, getattr(gn, name), ufunc, out_dtype="bool", a=ties(3, 1), b=ties(4))
    fcase(f"{name}-scalar", name, lambda a, fn=getattr(gn, name): fn(a, 1.0), lambda a, u=ufunc: u(a, 1.0),
          out_dtype="bool", a=ties(5))
fcase("operator-comparisons", "less", lambda a, b: gn.where(a < b, a, 0.5) + gn.where(a >= b, b, 10.0),
      lambda a, b: np.where(a < b, a, 0.5) + np.where(a >= b, b, 10.0), a=ties(3, 4), b=ties(4))

fcase("where", "where", lambda a, b: gn.where(a > b, a, b), lambda a, b: np.where(a > b, a, b),
      a=normal(3, 4), b=normal(3, 4))
fcase("where-broadcast", "where", lambda a, b, c: gn.where(gn.greater(c, 0.0), a, b),
      lambda a, b, c: np.where(c > 0, a, b), a=normal(3, 1), b=normal(4), c=normal(2, 3, 4))
fcase("where-scalars", "where", lambda a: gn.where(a > 0.0, a, -1.0), lambda a: np.where(a > 0, a, -1.0),
      a=normal(3, 4))

UNARY = {
    "neg": (gn.neg, np.negative, normal), "exp": (gn.exp, np.exp, normal), "log": (gn.log, np.log, positive),
    "sqrt": (gn.sqrt, np.sqrt, positive), "sign": (gn.sign, np.sign, ties), "abs": (gn.abs, np.abs, normal),
    "relu": (gn.relu, lambda x: np.maximum(x, 0.0), ties), "sigmoid": (gn.sigmoid, lambda x: 1 / (1 + np.exp(-x)), normal),
    "tanh": (gn.tanh, np.tanh, normal), "softplus": (gn.softplus, lambda x: np.log1p(np.exp(x)), normal),
    "sin": (gn.sin, np.sin, normal), "cos": (gn.cos, np.cos, normal),
}
for name, (fn, ref, gen) in UNARY.items():
    fcase(name, name, fn, ref, a=gen(3, 5) * (3.0 if name in ("sigmoid", "tanh") else 1.0))
fcase("sigmoid-extreme", "sigmoid", gn.sigmoid, lambda x: np.exp(-np.logaddexp(0.0, -x)),
      a=np.array([-800.0, -80.0, -20.0, 0.0, 20.0, 80.0, 800.0]))
fcase("exp-large", "exp", gn.exp, np.exp, a=np.array([-50.0, -1.0, 0.0, 1.0, 30.0, 80.0]), rtol32=5e-6)
fcase("abs-operator", "abs", lambda a: abs(a), np.abs, a=normal(4))
for alpha in (0.01, 0.2):
    fcase(f"leaky_relu-{alpha}", "leaky_relu", lambda a, al=alpha: gn.leaky_relu(a, al),
          lambda a, al=alpha: np.where(a > 0, a, al * a), a=normal(3, 5))
for alpha in (1.0, 0.4):
    fcase(f"elu-{alpha}", "elu", lambda a, al=alpha: gn.elu(a, al),
          lambda a, al=alpha: np.where(a > 0, a, al * (np.exp(a) - 1)), a=normal(3, 5) * 2)
fcase("erf", "erf", gn.erf, _erf, atol32=1e-6,
      a=np.concatenate([np.linspace(-7, 7, 57), [-2.0, 2.0, -1e-3, 1e-3, 0.0, 1.999, 2.001, 30.0, -30.0]]))
fcase("gelu-none", "gelu", gn.gelu, lambda a: 0.5 * a * (1 + _erf(a / math.sqrt(2))), atol32=1e-6,
      a=np.concatenate([np.linspace(-6, 6, 25), normal(10)]))
fcase("gelu-tanh", "gelu", lambda a: gn.gelu(a, approximate="tanh"),
      lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3))), atol32=1e-6,
      a=np.concatenate([np.linspace(-6, 6, 25), normal(10)]))
fcase("softplus-beta-threshold", "softplus", lambda a: gn.softplus(a, 2.0, 3.0),
      lambda a: np.where(2 * a > 3, a, np.log1p(np.exp(np.minimum(2 * a, 3.0))) / 2), a=normal(3, 5) * 3)
fcase("softplus-extreme", "softplus", gn.softplus, lambda a: np.where(a > 20, a, np.log1p(np.exp(np.minimum(a, 20.0)))),
      a=np.array([-800.0, -80.0, -20.0, -1e-3, 0.0, 19.9, 20.1, 80.0, 800.0]))
fcase("cast-to-other-float", "cast", lambda a: gn.cast(a, "float16"), lambda a: a.astype(np.float16),
      out_dtype="float16", a=normal(3, 4))
fcase("cast-to-int", "cast", lambda a: gn.cast(a, "int32"), lambda a: a.astype(np.int32), out_dtype="int32",
      a=normal(3, 4) * 5)
fcase("cast-bool-to-float", "cast", lambda a: gn.cast(a > 0.0, "float64") * a,
      lambda a: (a > 0).astype(np.float64) * a, out_dtype="float64", a=normal(3, 4))

for red, ref in (("sum", np.sum), ("mean", np.mean), ("max", np.max)):
    for axis in (None, 0, -1, (0, 2)):
        for keepdims in (False, True):
            fcase(f"{red}-axis{axis}-keepdims{keepdims}".replace(" ", ""), red,
                  lambda a, f=getattr(gn, red), ax=axis, k=keepdims: f(a, ax, k),
                  lambda a, f=ref, ax=axis, k=keepdims: f(a, axis=ax, keepdims=k), a=normal(2, 3, 4))
fcase("method-reductions", "sum", lambda a: a.sum(1) + a.mean(1) + a.max(1),
      lambda a: a.sum(1) + a.mean(1) + a.max(1), a=normal(3, 4))
fcase("max-negative", "max", lambda a: gn.max(a, 1), lambda a: a.max(1), a=-positive(3, 4))

fcase("expand_dims", "expand_dims", lambda a: gn.expand_dims(a, (0, -1)), lambda a: a[None, ..., None], a=normal(3, 4))
fcase("squeeze", "squeeze", lambda a: gn.squeeze(a), lambda a: np.squeeze(a), a=normal(1, 3, 1, 4))
fcase("squeeze-axis", "squeeze", lambda a: gn.squeeze(a, 2), lambda a: np.squeeze(a, 2), a=normal(1, 3, 1, 4))
fcase("broadcast_to", "broadcast_to", lambda a: gn.broadcast_to(a, (2, 3, 4)),
      lambda a: np.broadcast_to(a, (2, 3, 4)), a=normal(3, 1))
fcase("broadcast_like", "broadcast_like", lambda a, b: gn.broadcast_like(a, b), lambda a, b: np.broadcast_to(a, b.shape),
      a=normal(4), b=normal(2, 3, 4))
fcase("sum_to", "sum_to", lambda a: gn.ops.sum_to(a, (3, 1)), lambda a: a.sum(0).sum(-1, keepdims=True),
      a=normal(2, 3, 4))
fcase("sum_to-lead-only", "sum_to", lambda a: gn.ops.sum_to(a, (4,)), lambda a: a.sum((0, 1)), a=normal(2, 3, 4))
fcase("reshape", "reshape", lambda a: gn.reshape(a, (4, -1)), lambda a: a.reshape(4, -1), a=normal(2, 3, 4))
fcase("reshape-method", "reshape", lambda a: a.reshape(3, 2, 4), lambda a: a.reshape(3, 2, 4), a=normal(6, 4))
fcase("reshape_like", "reshape_like", lambda a, b: gn.ops.reshape_like(a, b), lambda a, b: a.reshape(b.shape),
      a=normal(12), b=normal(3, 4))
fcase("flatten", "flatten", gn.flatten, lambda a: a.reshape(a.shape[0], -1), a=normal(2, 3, 2, 2))
fcase("flatten-range", "flatten", lambda a: gn.flatten(a, 1, 2), lambda a: a.reshape(2, 6, 2), a=normal(2, 3, 2, 2))
fcase("flatten-all", "flatten", lambda a: gn.flatten(a, 0), lambda a: a.reshape(-1), a=normal(2, 3, 2))
fcase("transpose", "transpose", gn.transpose, np.transpose, a=normal(2, 3, 4))
fcase("transpose-axes", "transpose", lambda a: gn.transpose(a, (1, 2, 0)), lambda a: a.transpose(1, 2, 0),
      a=normal(2, 3, 4))
fcase("swapaxes", "transpose", lambda a: gn.swapaxes(a, 0, 2), lambda a: np.swapaxes(a, 0, 2), a=normal(2, 3, 4))
fcase("T", "transpose", lambda a: a.T, lambda a: a.T, a=normal(3, 4))
fcase("concat-0", "concat", lambda a, b, c: gn.concat([a, b, c]), lambda a, b, c: np.concatenate([a, b, c]),
      a=normal(1, 3), b=normal(2, 3), c=normal(3, 3))
fcase("concat-last", "concat", lambda a, b: gn.concat([a, b], -1), lambda a, b: np.concatenate([a, b], -1),
      a=normal(2, 2, 1), b=normal(2, 2, 3))
for key in [(slice(1, 3), slice(None, None, 2)), (slice(None, None, -1),), (1,), (-1, slice(1, None)),
            (Ellipsis, 0), (None, slice(0, 2)), (slice(3, 0, -2), -2), (slice(-3, None), None, Ellipsis)]:
    fcase(f"slice-{key}".replace(" ", ""), "slice", lambda a, k=key: a[k], lambda a, k=key: a[k], a=normal(4, 5))
fcase("gn.slice", "slice", lambda a: gn.slice(a, ((0, 3, 2), (None, None, None))), lambda a: a[0:3:2], a=normal(4, 2))


def _slice_grad_ref(g: np.ndarray, like: np.ndarray) -> np.ndarray:
    out = np.zeros_like(like)
    out[1:4:2, ::-1] = g
    return out


fcase("slice_grad", "slice_grad", lambda g, like: slice_grad(g, like, ((1, 4, 2), (None, None, -1))),
      _slice_grad_ref, g=normal(2, 3), like=normal(5, 3))
fcase("pad", "pad", lambda a: gn.pad(a, ((1, 0), (2, 3))), lambda a: np.pad(a, ((1, 0), (2, 3))), a=normal(2, 3))
fcase("pad-value", "pad", lambda a: gn.pad(a, ((0, 0), (1, 1), (0, 2)), value=-1.5),
      lambda a: np.pad(a, ((0, 0), (1, 1), (0, 2)), constant_values=-1.5), a=normal(2, 2, 2))

for sa, sb in [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
               ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,))]:
    fcase(f"matmul-{sa}@{sb}".replace(" ", ""), "matmul", lambda a, b: a @ b, np.matmul, rtol32=1e-5, atol32=1e-5,
          a=normal(*sa), b=normal(*sb))

for fn_name, ref in (("softmax", _softmax), ("log_softmax", _log_softmax)):
    fcase(f"{fn_name}", fn_name, getattr(gn, fn_name), ref, a=normal(3, 5))
    fcase(f"{fn_name}-axis0", fn_name, lambda a, f=getattr(gn, fn_name): f(a, 0), lambda a, r=ref: r(a, 0),
          a=normal(3, 5))
    fcase(f"{fn_name}-3d-axis1", fn_name, lambda a, f=getattr(gn, fn_name): f(a, axis=1), lambda a, r=ref: r(a, 1),
          a=normal(2, 3, 4))
    # large magnitudes: a naive exp overflows (+1000) or underflows to 0/0 (-1000)
    big = np.array([[1000.0, 1001.0, 999.0, 990.0], [-1000.0, -1001.0, -999.0, -1030.0],
                    [3e4, -3e4, 0.0, 3e4], [0.0, 0.0, 0.0, 0.0]])
    fcase(f"{fn_name}-large", fn_name, getattr(gn, fn_name), ref, rtol32=1e-6, atol32=1e-6, a=big)

fcase("one_hot", "one_hot", lambda y: gn.one_hot(y, 5), lambda y: np.eye(5)[y], out_dtype="float32",
      y=np.array([0, 4, 2, 2, 1]))
fcase("one_hot-2d-float64", "one_hot", lambda y: gn.one_hot(y, 3, "float64"), lambda y: np.eye(3)[y],
      out_dtype="float64", y=np.array([[0, 2], [1, 1]]))

# --- issue 24's sequence ops (graphnet/ops/sequence.py; more in tests/test_sequence_ops.py) -------------
for spec, shapes in [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
                     ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]), ("ij,ij->ij", [(3, 4), (3, 4)]),
                     ("i,j", [(3,), (4,)]), ("ijk,jl", [(2, 3, 4), (3, 5)]), ("ij->ji", [(3, 4)]), ("ii", [(4, 4)]),
                     ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]), ("...ij,jk", [(2, 3, 4), (4, 5)]),
                     ("ij,kj->ik", [(3, 1), (2, 4)]), ("iij,j->ij", [(3, 3, 2), (2,)])]:
    fcase(f"einsum-{spec}", "einsum", lambda *xs, s=spec: gn.einsum(s, *xs), lambda *xs, s=spec: np.einsum(s, *xs),
          rtol32=1e-5, atol32=1e-5, **{name: normal(*shape) for name, shape in zip("abc", shapes)})
fcase("masked_fill", "where", lambda a, m: gn.masked_fill(a, m, -1.5), lambda a, m: np.where(m, -1.5, a),
      a=normal(3, 4), m=R.random(4) > 0.5)
fcase("masked_fill-causal", "where", lambda a: gn.masked_fill(a, gn.causal_mask(4), -np.inf),
      lambda a: np.where(np.arange(4)[None, :] > np.arange(4)[:, None], -np.inf, a), a=normal(2, 4, 4))
for diagonal in (0, 1, -1):
    fcase(f"triu-{diagonal}", "triu", lambda a, d=diagonal: gn.triu(a, d), lambda a, d=diagonal: np.triu(a, d),
          a=normal(2, 3, 4))
    fcase(f"tril-{diagonal}", "tril", lambda a, d=diagonal: gn.tril(a, d), lambda a, d=diagonal: np.tril(a, d),
          a=normal(4, 3))
for axis in (0, 1, -1, None):
    fcase(f"cumsum-{axis}", "cumsum", lambda a, ax=axis: gn.cumsum(a, ax), lambda a, ax=axis: np.cumsum(a, ax),
          a=normal(2, 3, 4))
fcase("cumsum-int", "cumsum", lambda y: gn.cumsum(y, 0), lambda y: np.cumsum(y, 0, dtype=np.int64), out_dtype="int64",
      y=np.array([[1, 2], [3, 4], [-5, 6]], np.int32))
for axis, keepdims in ((1, False), (-1, True), (None, False), (None, True)):
    fcase(f"argmax-{axis}-{keepdims}", "argmax", lambda a, ax=axis, k=keepdims: gn.argmax(a, ax, k),
          lambda a, ax=axis, k=keepdims: np.argmax(a, ax, keepdims=k), out_dtype="int64", a=ties(3, 5, 4))
for k, axis, largest in ((3, -1, True), (2, 0, False), (6, 1, True)):
    fcase(f"topk-values-{k}-{axis}-{largest}", "topk", lambda a, k=k, ax=axis, big=largest: gn.topk(a, k, ax, big)[0],
          lambda a, k=k, ax=axis, big=largest: np.take(np.sort(-a if big else a, ax), range(k), ax) * (1 - 2 * big),
          a=normal(4, 6))
    fcase(f"topk-indices-{k}-{axis}-{largest}", "topk", lambda a, k=k, ax=axis, big=largest: gn.topk(a, k, ax, big)[1],
          lambda a, k=k, ax=axis, big=largest: np.take(np.argsort(-a if big else a, ax, kind="stable"), range(k), ax),
          out_dtype="int64", a=ties(4, 6))
fcase("take_along_axis", "take_along_axis", lambda a, i: declare("take_along_axis", [a, i], {"axis": 1}),
      lambda a, i: np.take_along_axis(a, i, 1), a=normal(3, 5), i=np.array([[0, 4], [2, 2], [1, 3]]))


def _scatter_ref(g: np.ndarray, i: np.ndarray, like: np.ndarray) -> np.ndarray:
    out = np.zeros(like.shape)
    for (row, col), index in np.ndenumerate(i):
        out[row, index] += g[row, col]  # repeated indices add up
    return out


fcase("scatter_along_axis", "scatter_along_axis",
      lambda g, i, like: declare("scatter_along_axis", [g, i, like], {"axis": 1}), _scatter_ref,
      g=normal(3, 2), i=np.array([[0, 4], [2, 2], [1, 3]]), like=normal(3, 5))


def _cast_feeds(feeds: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in feeds.items()}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", TABLE, ids=[c.id for c in TABLE])
def test_kernel_matches_numpy(case: FCase, dtype: str) -> None:
    feeds = _cast_feeds(case.feeds, dtype)
    ph = placeholders(feeds)
    out = case.build(*ph.values())  # positionally, in feed order
    plan = compile_plan({"out": out})
    ran = step_ops(plan)
    assert case.op in ran, f"{case.op} not in the compiled steps {sorted(ran)}"
    got = plan.run(feeds)["out"]
    want = case.ref(*[v.astype(np.float64) if v.dtype.kind == "f" else v for v in feeds.values()])
    out_dtype = case.out_dtype or dtype
    assert out.dtype == out_dtype, f"declared dtype {out.dtype}, expected {out_dtype}"
    assert tuple(out.shape) == np.shape(want), f"declared shape {out.shape}, expected {np.shape(want)}"
    if out_dtype == "float32":
        assert_close(got, want, out_dtype, rtol=case.rtol32, atol=case.atol32)
    elif out_dtype == "float16":
        assert_close(got, want, out_dtype, rtol=1e-3, atol=1e-3)
    elif out_dtype == "bool" or out_dtype.startswith("int"):
        assert got.dtype == np.dtype(out_dtype)
        np.testing.assert_array_equal(got, want)
    else:
        assert_close(got, want, out_dtype)


def test_comparisons_and_where_produce_bools() -> None:
    a = gn.placeholder("a", (5,), dtype="float64")
    b = gn.placeholder("b", (5,), dtype="float64")
    outs = {name: getattr(gn, name)(a, b) for name in COMPARE}
    av, bv = np.array([1.0, 2.0, 3.0, np.nan, -0.0]), np.array([1.0, 3.0, 2.0, np.nan, 0.0])
    got = run(outs, {"a": av, "b": bv})
    for name, ufunc in COMPARE.items():
        assert outs[name].dtype == "bool" and got[name].dtype == np.bool_
        np.testing.assert_array_equal(got[name], ufunc(av, bv), err_msg=name)
    mask = gn.placeholder("m", (5,), dtype="bool")
    w = gn.where(mask, a, b)
    got = run({"w": w, "wm": gn.where(gn.less(a, b), mask, False)},
              {"a": av, "b": bv, "m": np.array([True, False, True, False, True])})
    np.testing.assert_array_equal(got["w"], [1.0, 3.0, 3.0, np.nan, -0.0])
    assert got["wm"].dtype == np.bool_
    np.testing.assert_array_equal(got["wm"], [False, False, False, False, False])
    with pytest.raises(gn.DTypeError):
        gn.where(a, a, b)  # a float condition


def test_integer_division_declared_dtype_matches_run_time_values() -> None:
    x = gn.placeholder("x", (4,), dtype="int64")
    y = x / 4
    got = gn.compile({"y": y}).run(x=np.arange(4))["y"]
    folded = gn.compile({"c": gn.constant(np.arange(4)) / 4 + 0}).run()["c"]
    assert got.dtype == np.dtype(y.dtype)
    np.testing.assert_array_equal(folded, got)


# --- meta: the table's ops and every other kernel ---------------------------------------------------

#: ops with a kernel that no forward test runs, and why (none at present)
FORWARD_EXCEPTIONS: dict[str, str] = {}


def test_every_kernel_has_a_forward_case() -> None:
    covered = set(COVERED) | {c.op for c in TABLE}
    with_kernel = {n for n, op in REGISTRY.items() if op.kernel is not None}
    missing = sorted(with_kernel - covered - set(FORWARD_EXCEPTIONS))
    assert not missing, f"kernels without a forward case: {missing}"
    assert not (set(FORWARD_EXCEPTIONS) & covered), "stale FORWARD_EXCEPTIONS entries"
    assert {n for n, op in REGISTRY.items() if op.kernel is None} == {
        "placeholder", "constant", "variable", "tuple_get", "make_tuple", "batch_norm", "sync_batch_norm", "cross_entropy",
        "composite_vjp", "layer_norm"}


# --- convolution and pooling: direct loops -----------------------------------------------------------


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def ref_conv2d(x: np.ndarray, w: np.ndarray, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
               groups: int = 1) -> np.ndarray:
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((N, O, Ho, Wo))
    Og = O // groups
    for n, o, p, q in itertools.product(range(N), range(O), range(Ho), range(Wo)):
        g = o // Og
        acc = 0.0
        for c, i, j in itertools.product(range(Cg), range(kh), range(kw)):
            r, s = p * sh - ph + i * dh, q * sw - pw + j * dw
            if 0 <= r < H and 0 <= s < W:
                acc += x[n, g * Cg + c, r, s] * w[o, c, i, j]
        out[n, o, p, q] = acc
    return out


def ref_conv2d_adjoints(x: np.ndarray, w: np.ndarray, g: np.ndarray, stride: Any = 1, padding: Any = 0,
                        dilation: Any = 1, groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    dx, dw_ = np.zeros(x.shape), np.zeros(w.shape)
    Og = O // groups
    for n, o, p, q in itertools.product(range(N), range(O), range(g.shape[2]), range(g.shape[3])):
        grp = o // Og
        for c, i, j in itertools.product(range(Cg), range(kh), range(kw)):
            r, s = p * sh - ph + i * dh, q * sw - pw + j * dw
            if 0 <= r < H and 0 <= s < W:
                dx[n, grp * Cg + c, r, s] += g[n, o, p, q] * w[o, c, i, j]
                dw_[o, c, i, j] += g[n, o, p, q] * x[n, grp * Cg + c, r, s]
    return dx, dw_


def _windows(shape: tuple, k: Any, s: Any, p: Any):
    """(n, c, out_row, out_col, [(r, c) in-bounds window positions], window size incl. padding)."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(k if s is None else s), _pair(p)
    N, C, H, W = shape
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    for n, c, a, b in itertools.product(range(N), range(C), range(Ho), range(Wo)):
        cells = [(a * sh - ph + i, b * sw - pw + j) for i in range(kh) for j in range(kw)]
        yield n, c, a, b, [(r, q) for r, q in cells if 0 <= r < H and 0 <= q < W], kh * kw, (Ho, Wo)


def ref_max_pool(x: np.ndarray, k: Any, s: Any = None, p: Any = 0) -> tuple[np.ndarray, list]:
    out, argmax = None, []
    for n, c, a, b, cells, _, oshape in _windows(x.shape, k, s, p):
        if out is None:
            out = np.zeros(x.shape[:2] + oshape)
        vals = [x[n, c, r, q] for r, q in cells]
        best = int(np.argmax(vals))  # the first maximal element in row-major window order
        out[n, c, a, b] = vals[best]
        argmax.append(((n, c, a, b), (n, c) + cells[best]))
    return out, argmax


def ref_avg_pool(x: np.ndarray, k: Any, s: Any = None, p: Any = 0) -> np.ndarray:
    out = None
    for n, c, a, b, cells, size, oshape in _windows(x.shape, k, s, p):
        if out is None:
            out = np.zeros(x.shape[:2] + oshape)
        out[n, c, a, b] = sum(x[n, c, r, q] for r, q in cells) / size  # zero padding counted
    return out


def ref_avg_pool_grad(g: np.ndarray, x_shape: tuple, k: Any, s: Any = None, p: Any = 0) -> np.ndarray:
    dx = np.zeros(x_shape)
    for n, c, a, b, cells, size, _ in _windows(x_shape, k, s, p):
        for r, q in cells:
            dx[n, c, r, q] += g[n, c, a, b] / size
    return dx


CONV_CONFIGS = [
    ((2, 3, 5, 5), (4, 3, 3, 3), {}),
    ((1, 2, 7, 6), (3, 2, 3, 2), {"stride": 2, "padding": 1}),
    ((1, 2, 7, 7), (2, 2, 3, 3), {"dilation": 2, "padding": (2, 1)}),
    ((2, 4, 5, 5), (4, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((1, 4, 6, 7), (6, 2, 2, 3), {"groups": 2, "stride": (2, 1), "dilation": (1, 2), "padding": (0, 2)}),
    ((1, 3, 5, 5), (3, 1, 3, 3), {"groups": 3, "padding": 1, "stride": 2}),
    ((1, 2, 4, 4), (2, 2, 1, 1), {"stride": 3}),
    ((1, 1, 3, 3), (1, 1, 3, 3), {"padding": 2, "dilation": 2}),
]
CONV_IDS = [f"{x}{w}{kw}".replace(" ", "") for x, w, kw in CONV_CONFIGS]


def _tol(dtype: str) -> dict:
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-11, "atol": 1e-11}


@covers("conv2d")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("xs,ws,kw", CONV_CONFIGS, ids=CONV_IDS)
def test_conv2d_matches_direct_loops(xs: tuple, ws: tuple, kw: dict, dtype: str) -> None:
    xv, wv, bv = normal(*xs).astype(dtype), normal(*ws).astype(dtype), normal(ws[0]).astype(dtype)
    x, w, b = (gn.placeholder(n, v.shape, dtype) for n, v in (("x", xv), ("w", wv), ("b", bv)))
    out = run({"y": gn.conv2d(x, w, **kw), "yb": gn.conv2d(x, w, b, **kw)}, {"x": xv, "w": wv, "b": bv})
    want = ref_conv2d(xv.astype(np.float64), wv.astype(np.float64), **kw)
    assert_close(out["y"], want, dtype, **_tol(dtype))
    assert_close(out["yb"], want + bv.astype(np.float64)[None, :, None, None], dtype, **_tol(dtype))


@covers("conv2d_grad_input", "conv2d_grad_weight")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("xs,ws,kw", CONV_CONFIGS, ids=CONV_IDS)
def test_conv2d_gradient_kernels_match_direct_loops(xs: tuple, ws: tuple, kw: dict, dtype: str) -> None:
    x = gn.placeholder("x", xs, dtype)
    w = gn.placeholder("w", ws, dtype)
    y = gn.conv2d(x, w, **kw)
    g = gn.placeholder("g", y.shape, dtype)
    attrs = dict(y.node.attrs)
    gi = declare("conv2d_grad_input", [g, w, x], attrs)
    gw = declare("conv2d_grad_weight", [x, g, w], attrs)
    dx_auto, dw_auto = gn.grad(gn.sum(y * g), [x, w])
    xv, wv, gv = normal(*xs).astype(dtype), normal(*ws).astype(dtype), normal(*y.shape).astype(dtype)
    out = run({"gi": gi, "gw": gw, "dx": dx_auto, "dw": dw_auto}, {"x": xv, "w": wv, "g": gv})
    want_dx, want_dw = ref_conv2d_adjoints(*(a.astype(np.float64) for a in (xv, wv, gv)), **kw)
    for key, want in (("gi", want_dx), ("dx", want_dx), ("gw", want_dw), ("dw", want_dw)):
        assert_close(out[key], want, dtype, **_tol(dtype))


POOL_CONFIGS = [  # (x shape, kernel_size, stride, padding)
    ((2, 2, 4, 4), 2, None, 0),
    ((1, 2, 5, 5), 3, 1, 1),
    ((1, 2, 6, 5), (3, 2), (2, 1), (1, 0)),
    ((1, 1, 7, 7), 3, 2, 1),
    ((1, 2, 5, 4), (2, 3), (3, 2), (1, 1)),
    ((1, 1, 5, 6), (1, 2), (1, 3), 0),
    ((2, 1, 3, 3), 3, None, 0),
]
POOL_IDS = [f"{x}k{k}s{s}p{p}".replace(" ", "") for x, k, s, p in POOL_CONFIGS]


@covers("max_pool2d", "avg_pool2d")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("xs,k,s,p", POOL_CONFIGS, ids=POOL_IDS)
def test_pooling_matches_direct_loops(xs: tuple, k: Any, s: Any, p: Any, dtype: str) -> None:
    xv = normal(*xs).astype(dtype)
    xv.flat[::3] = -5.0  # negative values: padding must not win the max (it is -inf, not 0)
    x = gn.placeholder("x", xs, dtype)
    out = run({"max": gn.max_pool2d(x, k, s, p), "avg": gn.avg_pool2d(x, k, s, p)}, {"x": xv})
    want_max, _ = ref_max_pool(xv.astype(np.float64), k, s, p)
    assert_close(out["max"], want_max, dtype, **_tol(dtype))
    assert_close(out["avg"], ref_avg_pool(xv.astype(np.float64), k, s, p), dtype, **_tol(dtype))


@covers("max_pool2d_grad", "avg_pool2d_grad")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("xs,k,s,p", POOL_CONFIGS, ids=POOL_IDS)
def test_pooling_gradient_kernels_match_direct_loops(xs: tuple, k: Any, s: Any, p: Any, dtype: str) -> None:
    # ties inside windows: the whole window's gradient goes to the first maximal element (row-major)
    xv = R.integers(-2, 2, xs).astype(dtype)
    x = gn.placeholder("x", xs, dtype)
    mp, ap = gn.max_pool2d(x, k, s, p), gn.avg_pool2d(x, k, s, p)
    g = gn.placeholder("g", mp.shape, dtype)
    gv = normal(*mp.shape).astype(dtype)
    out = run({"dmax": gn.grad(gn.sum(mp * g), x), "davg": gn.grad(gn.sum(ap * g), x)}, {"x": xv, "g": gv})
    _, argmax = ref_max_pool(xv.astype(np.float64), k, s, p)
    want = np.zeros(xs)
    for o, i in argmax:
        want[i] += gv[o]
    assert_close(out["dmax"], want, dtype, **_tol(dtype))
    assert_close(out["davg"], ref_avg_pool_grad(gv.astype(np.float64), xs, k, s, p), dtype, **_tol(dtype))


@covers("max_pool2d_saving", "max_pool2d_grad_saved")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("xs,k,s,p", POOL_CONFIGS, ids=POOL_IDS)
def test_pooling_with_a_saved_argmax_matches_direct_loops(xs: tuple, k: Any, s: Any, p: Any, dtype: str) -> None:
    xv = R.integers(-2, 2, xs).astype(dtype)  # ties: the first maximal element (row-major) takes the gradient
    x = gn.placeholder("x", xs, dtype)
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    attrs = {"kernel_size": pair(k), "stride": pair(k if s is None else s), "padding": pair(p)}
    saved = declare("max_pool2d_saving", [x], attrs)
    y = gn.tuple_get(saved, 0)
    g = gn.placeholder("g", y.shape, dtype)
    gv = normal(*y.shape).astype(dtype)
    dx = declare("max_pool2d_grad_saved", [g, gn.tuple_get(saved, 1), gn.tuple_get(saved, 2), x], attrs)
    out = run({"y": y, "dx": dx}, {"x": xv, "g": gv})
    want_max, argmax = ref_max_pool(xv.astype(np.float64), k, s, p)
    want = np.zeros(xs)
    for o, i in argmax:
        want[i] += gv[o]
    assert_close(out["y"], want_max, dtype, **_tol(dtype))
    assert_close(out["dx"], want, dtype, **_tol(dtype))


# --- softmax formulas, losses -----------------------------------------------------------------------


@covers("softmax", "log_softmax")
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_direct_formulas_and_stability(dtype: str) -> None:
    x = gn.placeholder("x", (3, 4), dtype)
    moderate = normal(3, 4).astype(dtype)
    out = run({"s": gn.softmax(x), "l": gn.log_softmax(x)}, {"x": moderate})
    m = moderate.astype(np.float64)
    assert_close(out["s"], np.exp(m) / np.exp(m).sum(1, keepdims=True), dtype)  # unshifted textbook formula
    assert_close(out["l"], m - np.log(np.exp(m).sum(1, keepdims=True)), dtype)
    big = np.array([[1000.0, 1000.0, 0.0, -1000.0], [-1e4, -1e4 + 1.0, -1e4 - 1.0, -1e4],
                    [88.0, 89.0, 90.0, 91.0], [-3e4, 3e4, 0.0, 1.0]][:3]).astype(dtype)
    out = run({"s": gn.softmax(x), "l": gn.log_softmax(x)}, {"x": big})
    assert np.all(np.isfinite(out["s"])) and np.all(np.isfinite(out["l"]))
    assert_close(out["s"], _softmax(big.astype(np.float64)), dtype)
    assert_close(out["l"], _log_softmax(big.astype(np.float64)), dtype, rtol=1e-6)
    np.testing.assert_allclose(out["s"].sum(1), 1.0, rtol=1e-6)
    assert out["s"][0, 0] == pytest.approx(0.5) and out["l"][0, 3] == pytest.approx(-2000.0 - math.log(2), rel=1e-6)


def torch_cross_entropy(z: np.ndarray, y: np.ndarray, smoothing: float = 0.0, reduction: str = "mean") -> Any:
    """PyTorch's F.cross_entropy definition: (1 - e) * nll + e * mean over classes of -log p."""
    logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    n, c = z.shape
    nll = -logp[np.arange(n), y]
    smooth = -logp.sum(1) / c
    per = (1 - smoothing) * nll + smoothing * smooth
    return {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]


@covers("log_softmax", "pick", "softmax_cross_entropy", "softmax_cross_entropy_grad")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_pytorch_definition(smoothing: float, reduction: str, dtype: str) -> None:
    for zv in (normal(5, 4) * 3, np.array([[1000.0, -1000.0, 0.0, 5.0], [-500.0, -500.0, -500.0, 80.0]])):
        # the scores are a parameter trained one SGD step with lr 1: its change is minus the gradient
        z = gn.Parameter(zv.astype(dtype), name="z")
        y = gn.placeholder("y", (None,), "int64")
        loss = gn.losses.cross_entropy(z, y, label_smoothing=smoothing, reduction=reduction)
        outputs = {"objective": gn.sum(loss * gn.constant(np.array(0.5, dtype))), "loss": loss}
        fused = compile_plan(outputs, optimizer=gn.optim.SGD(lr=1.0))  # one step forward, one backward
        with gn.config.options(disabled_passes={"fuse_cross_entropy"}):
            plain = compile_plan(outputs, optimizer=gn.optim.SGD(lr=1.0))  # log_softmax, pick, ...
        yv = R.integers(0, 4, len(zv))
        z64 = zv.astype(dtype).astype(np.float64)
        p = np.exp(z64 - z64.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        per_sample = (1 - smoothing) * (p - np.eye(4)[yv]) + smoothing * (p - 0.25)
        want_grad = 0.5 * per_sample / (len(zv) if reduction == "mean" else 1)
        tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {}
        for plan in (fused, plain):
            z.data = zv.astype(dtype)
            got = plan.run(y=yv)
            assert np.all(np.isfinite(got["loss"]))
            assert_close(got["loss"], torch_cross_entropy(z64, yv, smoothing, reduction), dtype, **tol)
            # the step is read back as a difference of scores up to 1000: float32 keeps ~1e-4 of it
            step_tol = {"rtol": 1e-5, "atol": 1e-5 + 4 * float(np.finfo(dtype).eps) * float(np.abs(zv).max())}
            assert_close(zv.astype(dtype) - z.data, want_grad, dtype, **(step_tol if dtype == "float32" else tol))


@covers("one_hot")
def test_one_hot_rejects_labels_out_of_range() -> None:
    y = gn.placeholder("y", (3,), "int64")
    plan = compile_plan({"o": gn.one_hot(y, 3)})
    with pytest.raises(gn.FeedError, match="labels must lie in"):
        plan.run(y=np.array([0, 3, 1]))
    with pytest.raises(gn.FeedError):
        plan.run(y=np.array([0, -1, 1]))


@covers("log_softmax", "mul", "sub", "relu", "abs", "exp", "log", "mean", "sum")
@pytest.mark.parametrize("dtype", FLOATS)
def test_other_losses_match_direct_formulas(dtype: str) -> None:
    lp = gn.placeholder("lp", (4, 3), dtype)
    y = gn.placeholder("y", (4,), "int64")
    p = gn.placeholder("p", (2, 3), dtype)
    t = gn.placeholder("t", (2, 3), dtype)
    outs = {"nll": gn.losses.nll(gn.log_softmax(lp), y), "nll_sum": gn.losses.nll(lp, y, reduction="sum"),
            "mse": gn.losses.mse(p, t), "mse_none": gn.losses.mse(p, t, reduction="none"),
            "bce": gn.losses.binary_cross_entropy_with_logits(p, t),
            "bce_sum": gn.losses.binary_cross_entropy_with_logits(p, t, reduction="sum")}
    lpv, yv = normal(4, 3).astype(dtype), np.array([2, 0, 1, 2])
    pv = np.array([[-200.0, -3.0, -0.5], [0.25, 4.0, 200.0]]).astype(dtype)  # large |logits| too
    tv = R.uniform(0, 1, (2, 3)).astype(dtype)
    got = run(outs, {"lp": lpv, "y": yv, "p": pv, "t": tv})
    l64, p64, t64 = (a.astype(np.float64) for a in (lpv, pv, tv))
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {}
    assert_close(got["nll"], -_log_softmax(l64, 1)[np.arange(4), yv].mean(), dtype, **tol)
    assert_close(got["nll_sum"], -l64[np.arange(4), yv].sum(), dtype, **tol)
    assert_close(got["mse"], ((p64 - t64) ** 2).mean(), dtype, **tol)
    assert_close(got["mse_none"], (p64 - t64) ** 2, dtype, **tol)
    # the textbook -[t log s(x) + (1 - t) log(1 - s(x))], with log s(x) = -log1p(exp(-x)) computed stably
    log_s, log_1ms = -np.logaddexp(0, -p64), -np.logaddexp(0, p64)
    bce = -(t64 * log_s + (1 - t64) * log_1ms)
    assert_close(got["bce"], bce.mean(), dtype, **tol)
    assert_close(got["bce_sum"], bce.sum(), dtype, **tol)


# --- batch norm ----------------------------------------------------------------------------------------


def _bn_ref(x: np.ndarray, mean: np.ndarray, var: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * w.reshape(shape) + b.reshape(shape)


@covers("batch_norm_train", "sqrt")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(4, 3, 2, 5), (6, 3)])
def test_batch_norm_functional_train_and_eval(shape: tuple, dtype: str) -> None:
    xv = (normal(*shape) * 2 + 1).astype(dtype)
    wv, bv, rmv, rvv = normal(3), normal(3), normal(3), R.uniform(0.5, 2, 3)
    x = gn.placeholder("x", shape, dtype)
    w, b, rm, rv = (gn.placeholder(n, (3,), dtype) for n in ("w", "b", "rm", "rv"))
    outs = {"train": gn.batch_norm(x, None, None, w, b, training=True, eps=1e-3),
            "plain": gn.batch_norm(x, None, None, training=True),
            "eval": gn.batch_norm(x, rm, rv, w, b, training=False)}
    got = run(outs, {"x": xv, "w": wv.astype(dtype), "b": bv.astype(dtype), "rm": rmv.astype(dtype),
                     "rv": rvv.astype(dtype)})
    x64 = xv.astype(np.float64)
    axes = tuple(i for i in range(len(shape)) if i != 1)
    mu, var = x64.mean(axes), x64.var(axes)  # biased variance normalises
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-10}
    cast = lambda a: a.astype(dtype).astype(np.float64)  # noqa: E731
    assert_close(got["train"], _bn_ref(x64, mu, var, cast(wv), cast(bv), 1e-3), dtype, **tol)
    assert_close(got["plain"], _bn_ref(x64, mu, var, np.ones(3), np.zeros(3), 1e-5), dtype, **tol)
    assert_close(got["eval"], _bn_ref(x64, cast(rmv), cast(rvv), cast(wv), cast(bv), 1e-5), dtype, **tol)


@covers("assign", "fused_assign", "numel")
@pytest.mark.parametrize("dtype", FLOATS)
def test_batchnorm2d_running_statistics_update_after_a_run(dtype: str) -> None:
    with gn.config.options(disabled_passes={"fuse_updates", "fuse_batch_norm"}):  # decomposed, one assign each
        compile_plan({"y": gn.nn.BatchNorm2d(3, dtype=dtype)(gn.placeholder("x", (None, 3, 2, 2), dtype))},
                     mode="train").run(x=normal(2, 3, 2, 2).astype(dtype))
    gn.manual_seed(0)
    bn = gn.nn.BatchNorm2d(3, dtype=dtype)
    bn.weight.data[...] = [0.5, 1.0, 2.0]
    bn.bias.data[...] = [0.0, -1.0, 1.0]
    x = gn.placeholder("x", (None, 3, 2, 2), dtype)
    with gn.config.options(fuse=True):  # both statistics written by one fused_assign
        train = compile_plan({"y": bn(x)}, mode="train")
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-10}
    expected_mean, expected_var = np.zeros(3), np.ones(3)
    for n in (4, 2):  # two steps, two batch sizes (the unbiased factor n / (n - 1) uses the run-time count)
        xv = (normal(n, 3, 2, 2) * 3 + 2).astype(dtype)
        got = train.run(x=xv)["y"]
        x64 = xv.astype(np.float64)
        mu, var = x64.mean((0, 2, 3)), x64.var((0, 2, 3))
        assert_close(got, _bn_ref(x64, mu, var, bn.weight.data.astype(np.float64), bn.bias.data.astype(np.float64),
                                  1e-5), dtype, **tol)
        count = n * 4
        expected_mean = 0.9 * expected_mean + 0.1 * mu
        expected_var = 0.9 * expected_var + 0.1 * var * count / (count - 1)
        assert_close(bn.running_mean.data, expected_mean, dtype, **tol)
        assert_close(bn.running_var.data, expected_var, dtype, **tol)
    bn.eval()
    infer = compile_plan({"y": bn(x)})
    xv = normal(3, 3, 2, 2).astype(dtype)
    before = bn.running_mean.data.copy()
    got = infer.run(x=xv)["y"]
    assert_close(got, _bn_ref(xv.astype(np.float64), bn.running_mean.data.astype(np.float64),
                              bn.running_var.data.astype(np.float64), bn.weight.data.astype(np.float64),
                              bn.bias.data.astype(np.float64), 1e-5), dtype, **tol)
    np.testing.assert_array_equal(bn.running_mean.data, before)  # eval never updates


# --- dropout -------------------------------------------------------------------------------------------


@covers("dropout")
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_rate_scale_and_shared_mask(p: float, dtype: str) -> None:
    shape = (100, 80)
    x = gn.placeholder("x", shape, dtype)
    w = gn.placeholder("w", shape, dtype)
    y = gn.dropout(x, p)
    g = gn.grad(gn.sum(y * w), x)
    plan = compile_plan({"y": y, "g": g}, seed=123)
    xv = R.uniform(1.0, 2.0, shape).astype(dtype)
    wv = R.uniform(1.0, 2.0, shape).astype(dtype)
    first = plan.run(x=xv, w=wv)
    scale = 1.0 / (1.0 - p)
    mask = first["y"] / xv  # 0 or 1 / (1 - p)
    kept = mask != 0
    assert first["y"].dtype == np.dtype(dtype)
    np.testing.assert_allclose(mask[kept], scale, rtol=1e-6)
    rate = 1.0 - kept.mean()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / kept.size), rate
    # the backward pass reuses the forward mask: d sum(y * w) / dx = w * mask
    np.testing.assert_allclose(first["g"], wv.astype(np.float64) * mask, rtol=1e-6)
    # a new mask each run; the same sequence for the same seed
    second = plan.run(x=xv, w=wv)
    assert not np.array_equal(second["y"] != 0, kept)
    again = compile_plan({"y": y, "g": g}, seed=123).run(x=xv, w=wv)
    np.testing.assert_array_equal(again["y"], first["y"])


@covers("fused")
def test_fused_groups_compute_what_their_members_do() -> None:
    rng = np.random.default_rng(5)
    x = gn.placeholder("x", (None, 6))
    b = gn.placeholder("b", (6,))
    y = gn.tanh(gn.relu(x * 2.0 + b) - gn.sigmoid(x)) * gn.exp(-x) + gn.where(x > 0.5, x, 0.0)
    with gn.config.options(fuse=True):
        fused = compile_plan({"y": y})
    assert fused.plan.op_counts().get("fused", 0) >= 1
    with gn.config.options(disabled_passes={"fuse"}):
        plain = compile_plan({"y": y})
    assert "fused" not in plain.plan.op_counts()
    feeds = {"x": rng.standard_normal((5, 6)).astype(np.float32), "b": rng.standard_normal(6).astype(np.float32)}
    # generated kernels agree within float32 rounding; NumPy's fallback runs the very same kernels
    np.testing.assert_allclose(fused.run(feeds)["y"], plain.run(feeds)["y"], rtol=1e-6, atol=1e-6)
    with gn.config.options(fuse=True, codegen="numpy"):
        np.testing.assert_array_equal(compile_plan({"y": y}).run(feeds)["y"], plain.run(feeds)["y"])
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # a fused plan saves, is checked on load, and runs alike
        fused.save(f"{folder}/fused.gnp")
        loaded = gn.load(f"{folder}/fused.gnp")
    assert loaded.plan.op_counts() == fused.plan.op_counts()
    np.testing.assert_array_equal(loaded.run(feeds)["y"], fused.run(feeds)["y"])


@covers("max_pool2d_select")
def test_max_pool2d_select_reads_h_at_each_windows_first_maximum() -> None:
    rng = np.random.default_rng(3)
    xv = rng.integers(0, 4, (2, 2, 5, 5)).astype(np.float64)  # ties: the first maximum in row-major order
    hv = rng.standard_normal((2, 2, 5, 5))
    x, h = gn.placeholder("x", xv.shape, "float64"), gn.placeholder("h", hv.shape, "float64")
    attrs = {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}
    got = compile_plan({"s": declare("max_pool2d_select", [h, x], attrs)}).run(x=xv, h=hv)["s"]
    xp_ = np.pad(xv, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    hp = np.pad(hv, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((2, 2, 3, 3))
    for i in range(3):
        for j in range(3):
            win = xp_[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].reshape(2, 2, 9)
            first = win.argmax(-1)
            ref[:, :, i, j] = np.take_along_axis(hp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].reshape(2, 2, 9),
                                                 first[..., None], -1)[..., 0]
    np.testing.assert_array_equal(got, ref)


@covers("count_batches")
def test_count_batches_is_the_identity_that_counts_training_runs() -> None:
    x = gn.placeholder("x", (3,), "float64")
    counter = gn.nn.Parameter(np.array(5, np.int64), trainable=False)
    for training, counted in ((True, 7), (False, 5)):
        counter.data = np.array(5, np.int64)
        y = gn.ops.count_batches(x, counter, training)
        with gn.config.options(disabled_passes={"simplify"}):
            plan = compile_plan({"y": y * y, "g": gn.grad(gn.sum(y * y), x)})
        xv = np.array([1.0, -2.0, 3.0])
        for _ in range(2):
            out = plan.run(x=xv)
        np.testing.assert_array_equal(out["y"], xv * xv)
        np.testing.assert_array_equal(out["g"], 2 * xv)
        assert int(counter.data) == counted


@covers("stop_gradient")
def test_stop_gradient_is_the_identity_that_differentiation_treats_as_constant() -> None:
    x = gn.placeholder("x", (3,), "float64")
    y = gn.sum(x * gn.stop_gradient(x))
    with gn.config.options(disabled_passes={"simplify"}):
        plan = compile_plan({"y": y, "g": gn.grad(y, x)})
    xv = np.array([1.0, -2.0, 3.0])
    out = plan.run(x=xv)
    np.testing.assert_array_equal(out["y"], 14.0)
    np.testing.assert_array_equal(out["g"], xv)  # not 2 * x


@covers("copy")
def test_an_output_viewing_a_parameter_is_a_copy_taken_before_the_update() -> None:
    w = gn.Parameter(np.arange(4, dtype=np.float32).reshape(2, 2))
    x = gn.placeholder("x", (2, 2))
    plan = compile_plan({"loss": gn.sum(x * w), "wt": gn.transpose(w)}, optimizer=gn.optim.SGD(lr=1.0))
    out = plan.run(x=np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(out["wt"], np.arange(4, dtype=np.float32).reshape(2, 2).T)
    assert not np.shares_memory(out["wt"], w.data)
    np.testing.assert_array_equal(w.data, np.arange(4, dtype=np.float32).reshape(2, 2) - 1)


@covers("mul")
def test_dropout_is_the_identity_in_eval_mode_and_for_p_zero() -> None:
    x = gn.placeholder("x", (4, 5), "float32")
    assert gn.dropout(x, 0.5, training=False) is x
    assert gn.dropout(x, 0.0) is x
    layer = gn.nn.Dropout(0.5)
    layer.eval()
    xv = normal(4, 5).astype("float32")
    out = run({"y": layer(x) * 1.5}, {"x": xv})["y"]
    np.testing.assert_array_equal(out, xv * np.float32(1.5))
    with pytest.raises(gn.ShapeError):
        gn.dropout(x, 1.0)


# --- symbolic batch dims ----------------------------------------------------------------------------------


@covers("matmul", "softmax", "mean", "numel", "reshape", "flatten", "conv2d", "max_pool2d", "concat")
def test_symbolic_batch_dims_run_with_different_batch_sizes() -> None:
    x = gn.placeholder("x", (None, 4), "float64")
    wv, bv = normal(4, 3), normal(3)
    h = gn.softmax(x @ wv + bv)
    outs = {"h": h, "m": gn.mean(h, axis=0), "mall": gn.mean(x), "n": gn.ops.numel(x, 0),
            "r": gn.reshape(x, (None, 2, 2)), "f": gn.flatten(gn.reshape(x, (-1, 2, 2))),
            "c": gn.concat([x, x * 2.0], axis=1)}
    img = gn.placeholder("img", (None, 1, 6, 6), "float64")
    kv = normal(2, 1, 3, 3)
    outs["conv"] = gn.flatten(gn.max_pool2d(gn.conv2d(img, gn.constant(kv), padding=1), 2))
    assert outs["conv"].shape == (None, 18)
    plan = compile_plan(outs)
    for n in (1, 3, 8):
        xv, iv = normal(n, 4), normal(n, 1, 6, 6)
        got = plan.run(x=xv, img=iv)
        ref_h = _softmax(xv @ wv + bv)
        assert_close(got["h"], ref_h)
        assert_close(got["m"], ref_h.mean(0))
        assert_close(got["mall"], xv.mean())
        assert float(got["n"]) == n
        assert_close(got["r"], xv.reshape(n, 2, 2))
        assert_close(got["f"], xv)
        assert_close(got["c"], np.concatenate([xv, 2 * xv], 1))
        ref_conv, _ = ref_max_pool(ref_conv2d(iv, kv, padding=1), 2)
        assert_close(got["conv"], ref_conv.reshape(n, -1), rtol=1e-11, atol=1e-11)


@covers("add", "sum")
def test_named_symbolic_dims_bind_consistently_per_run() -> None:
    x = gn.placeholder("x", ("batch", 3), "float32")
    y = gn.placeholder("y", ("batch", 1), "float32")
    plan = compile_plan({"s": gn.sum(x + y, axis=1)})
    for n in (2, 5):
        xv, yv = normal(n, 3).astype("float32"), normal(n, 1).astype("float32")
        assert_close(plan.run(x=xv, y=yv)["s"], (xv.astype(np.float64) + yv).sum(1), "float32")
    with pytest.raises(gn.FeedError):
        plan.run(x=np.zeros((2, 3), "float32"), y=np.zeros((3, 1), "float32"))


@covers("sum_like")
def test_sum_to_an_unknown_shape_reduces_to_the_run_time_shape() -> None:
    a = gn.placeholder("a", (2, None, 4), dtype="float64")
    like = gn.placeholder("like", (None, 1), dtype="float64")
    av = normal(2, 3, 4)
    for rows in (3, 1):
        out = run({"s": gn.ops.sum_to(a, like)}, {"a": av[:, :rows], "like": normal(rows, 1)})["s"]
        np.testing.assert_allclose(out, av[:, :rows].sum(0).sum(-1, keepdims=True))


@covers("batch_norm_train", "batch_norm_train_grad")
@pytest.mark.parametrize("shape", [(4, 3, 2, 5), (6, 3)])
def test_batch_norm_train_and_its_gradient_kernel_against_the_formulas(shape: tuple) -> None:
    from graphnet.ops.common import declare

    xv, wv, bv, gv = normal(*shape) * 2 + 1, normal(3), normal(3), normal(*shape)
    x, w, b, g = (gn.placeholder(n, v.shape, "float64") for n, v in (("x", xv), ("w", wv), ("b", bv), ("g", gv)))
    node = declare("batch_norm_train", [x, w, b], {"eps": 1e-3, "momentum": 0.1, "stats": False, "weight": True,
                                                   "bias": True, "relu": False})
    y, mean, var, unbiased = (gn.tuple_get(node, i) for i in range(4))
    loss = gn.sum(y * g)
    got = run({"y": y, "mean": mean, "var": var, "unbiased": unbiased, "gx": gn.grad(loss, x), "gw": gn.grad(loss, w),
               "gb": gn.grad(loss, b)}, {"x": xv, "w": wv, "b": bv, "g": gv})
    axes = tuple(i for i in range(len(shape)) if i != 1)
    cshape = (1, 3) + (1,) * (len(shape) - 2)
    mu, sigma2 = xv.mean(axes), xv.var(axes)
    xhat = (xv - mu.reshape(cshape)) / np.sqrt(sigma2.reshape(cshape) + 1e-3)
    np.testing.assert_allclose(got["y"], xhat * wv.reshape(cshape) + bv.reshape(cshape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["mean"], mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["var"], sigma2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["unbiased"], xv.var(axes, ddof=1), rtol=1e-12, atol=1e-12)
    count = xv.size // 3
    gxhat = gv * wv.reshape(cshape)  # the textbook backward pass, in float64
    gx = (count * gxhat - gxhat.sum(axes, keepdims=True) - xhat * (gxhat * xhat).sum(axes, keepdims=True)) \
        / (count * np.sqrt(sigma2.reshape(cshape) + 1e-3))
    np.testing.assert_allclose(got["gx"], gx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["gw"], (gv * xhat).sum(axes), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["gb"], gv.sum(axes), rtol=1e-10, atol=1e-12)


@covers("scaled_dot_product_attention", "scaled_dot_product_attention_grad")
def test_scaled_dot_product_attention_and_its_gradient_against_the_formulas() -> None:
    """softmax(q k^T * scale + mask) v and the textbook gradients, float64 (issue 24; the blocked
    kernels, causal masks and dropout in tests/test_attention.py)."""
    qv, kv, vv, gv, mask = normal(2, 5, 4), normal(2, 7, 4), normal(2, 7, 3), normal(2, 5, 3), normal(5, 7)
    q, k, v, g = (gn.placeholder(n, a.shape, "float64") for n, a in (("q", qv), ("k", kv), ("v", vv), ("g", gv)))
    y = gn.scaled_dot_product_attention(q, k, v, mask, scale=0.5)
    dq, dk, dv = gn.grad(gn.sum(y * g), [q, k, v])
    got = run({"y": y, "dq": dq, "dk": dk, "dv": dv}, {"q": qv, "k": kv, "v": vv, "g": gv})
    p = _softmax(qv @ kv.transpose(0, 2, 1) * 0.5 + mask)
    dp = gv @ vv.transpose(0, 2, 1)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    assert_close(got["y"], p @ vv)
    assert_close(got["dv"], p.transpose(0, 2, 1) @ gv)
    assert_close(got["dq"], ds @ kv * 0.5)
    assert_close(got["dk"], ds.transpose(0, 2, 1) @ qv * 0.5)
