"""Every gradient rule against central finite differences of a compiled forward plan.

Each case applies one op (or a small composition around it) to float64 placeholders,
reduces it to a scalar with fixed random weights (so the upstream gradient is not all
ones), takes ``gn.grad`` with respect to every float input, and compares the result with
central differences (eps 1e-6) computed by re-running the compiled forward plan.

A second table checks second-order gradients: d/dx <grad f(x), v> (a Hessian-vector
product) against finite differences of the first gradient. Meta-tests make sure every
registered op with a gradient rule has a case, and that the ops without one are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

import graphnet as gn
from graphnet.ops import REGISTRY
from graphnet.ops.common import declare
from graphnet.ops.shape import slice_grad

from helpers import differentiated_ops, finite_difference, only_feeds, placeholders, rel_error

R = np.random.default_rng(20240607)

#: relative errors are measured against max(|analytic|, |numeric|, FLOOR * largest gradient of the case)
FLOOR = 1e-4


# --- input generators -------------------------------------------------------------------------


def normal(*shape: int) -> np.ndarray:
    return R.standard_normal(shape)


def positive(*shape: int, lo: float = 0.5, hi: float = 2.0) -> np.ndarray:
    return R.uniform(lo, hi, shape)


def away(*shape: int, lo: float = 0.2, hi: float = 1.5) -> np.ndarray:
    """Values with |x| in [lo, hi]: far (relative to eps) from kinks at 0."""
    return R.choice([-1.0, 1.0], shape) * R.uniform(lo, hi, shape)


def distinct(*shape: int) -> np.ndarray:
    """A random permutation of well separated values (no ties within any window)."""
    return R.permutation(np.arange(int(np.prod(shape))) * 0.1 - 0.05 * np.prod(shape)).reshape(shape) + \
        R.uniform(-0.01, 0.01, shape)


def separated(shape_a: tuple, shape_b: tuple, gap: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Two arrays whose broadcast elementwise differences are all at least ``gap`` apart."""
    while True:
        a, b = R.standard_normal(shape_a), R.standard_normal(shape_b)
        if np.min(np.abs(a - b)) > gap:
            return a, b


def labels(n: int, classes: int) -> np.ndarray:
    return R.integers(0, classes, n).astype(np.int64)


def bools(*shape: int) -> np.ndarray:
    return R.random(shape) > 0.5


# --- the table ----------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    build: Callable[..., gn.Tensor]  # placeholders by feed name -> tensor (any shape)
    feeds: dict[str, np.ndarray]
    shapes: dict[str, tuple] = field(default_factory=dict)  # symbolic placeholder shapes
    eps: float = 1e-6
    tol: float = 1e-6
    marks: tuple = ()

    @property
    def wrt(self) -> list[str]:
        return [n for n, a in self.feeds.items() if np.asarray(a).dtype.kind == "f"]

    def param(self) -> Any:
        return pytest.param(self, id=self.id, marks=self.marks)


CASES: list[Case] = []


def case(id: str, build: Callable[..., gn.Tensor], *, shapes: dict | None = None, eps: float = 1e-6,
         tol: float = 1e-6, marks: tuple = (), **feeds: np.ndarray) -> None:
    assert all(c.id != id for c in CASES), id
    CASES.append(Case(id, build, feeds, shapes or {}, eps, tol, marks))


# --- binary arithmetic, with broadcasting -------------------------------------------------------

BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 4), (3, 1)), ((3, 1), (1, 4)), ((), (3, 4)),
                    ((2, 1, 4), (3, 1))]
for sa, sb in BROADCAST_SHAPES:
    tag = f"{sa}x{sb}".replace(" ", "")
    case(f"add-{tag}", lambda a, b: a + b, a=normal(*sa), b=normal(*sb))
    case(f"sub-{tag}", lambda a, b: gn.sub(a, b), a=normal(*sa), b=normal(*sb))
    case(f"mul-{tag}", lambda a, b: a * b, a=normal(*sa), b=normal(*sb))
    case(f"div-{tag}", lambda a, b: a / b, a=normal(*sa), b=away(*sb, lo=0.5))
    case(f"pow-{tag}", lambda a, b: a ** b, a=positive(*sa), b=normal(*sb))
    a, b = separated(sa, sb)
    case(f"maximum-{tag}", lambda a, b: gn.maximum(a, b), a=a, b=b)
    a, b = separated(sa, sb)
    case(f"minimum-{tag}", lambda a, b: gn.minimum(a, b), a=a, b=b)

case("add-same-input-twice", lambda x: x + x * x, x=normal(3, 4))
case("scalar-rsub-rdiv", lambda x: 2.0 - 3.0 / x, x=away(3, 4, lo=0.5))
case("pow-python-exponent", lambda x: x ** 3 + x ** 0.5, x=positive(3, 4))
case("pow-python-base", lambda x: 2.0 ** x, x=normal(3, 4))
case("maximum-python-scalar", lambda x: gn.maximum(x, 0.1) + gn.minimum(x, -0.1), x=away(3, 4, lo=0.3))

# --- unary ops and activations ----------------------------------------------------------------

case("neg", lambda x: -x, x=normal(3, 4))
case("exp", lambda x: gn.exp(x), x=normal(3, 4))
case("log", lambda x: gn.log(x), x=positive(3, 4, lo=0.3))
case("sqrt", lambda x: gn.sqrt(x), x=positive(3, 4, lo=0.3))
case("sign-zero-grad", lambda x: gn.sign(x) + x, x=away(3, 4))
case("abs", lambda x: gn.abs(x), x=away(3, 4))
case("relu", lambda x: gn.relu(x), x=away(3, 4))
case("sigmoid", lambda x: gn.sigmoid(x), x=normal(3, 4) * 3)
case("tanh", lambda x: gn.tanh(x), x=normal(3, 4) * 2)
case("leaky_relu-default", lambda x: gn.leaky_relu(x), x=away(3, 4))
case("leaky_relu-0.2", lambda x: gn.leaky_relu(x, 0.2), x=away(3, 4))
case("elu-1", lambda x: gn.elu(x), x=away(3, 4, hi=3.0))
case("elu-0.5", lambda x: gn.elu(x, alpha=0.5), x=away(3, 4, hi=3.0))
# both erf branches: |x| < 2 (series) and |x| >= 2 (continued fraction)
case("erf", lambda x: gn.erf(x), x=np.array([[-3.0, -2.2, -1.9, -0.7], [-0.1, 0.05, 0.6, 1.3],
                                               [1.99, 2.01, 2.7, 3.5]]))
case("gelu-none", lambda x: gn.gelu(x), x=normal(3, 4) * 2)
case("gelu-tanh", lambda x: gn.gelu(x, approximate="tanh"), x=normal(3, 4) * 2)
case("cast-float64", lambda x: gn.cast(x, "float64") * x, x=normal(3, 4))
# a float32 round trip limits the precision of the forward values: wider eps and tolerance
case("cast-float32-roundtrip", lambda x: gn.cast(gn.cast(x, "float32") * 2.0, "float64"), x=normal(3, 4),
     eps=1e-2, tol=1e-4)
case("cast-int-zero-grad", lambda x: gn.cast(gn.cast(x * 4.0, "int64"), "float64") + x,
     x=np.arange(12).reshape(3, 4) * 0.25 + 0.13)

# --- where ----------------------------------------------------------------------------------------

case("where-same-shape", lambda c, a, b: gn.where(c, a, b), c=bools(3, 4), a=normal(3, 4), b=normal(3, 4))
case("where-broadcast", lambda c, a, b: gn.where(c, a, b), c=bools(3, 1), a=normal(4), b=normal(3, 4))
case("where-broadcast-cond", lambda c, a, b: gn.where(c, a, b), c=bools(2, 3, 4), a=normal(3, 1), b=normal(4))
case("where-scalar-branch", lambda x: gn.where(x > 0, x * x, 0.5), x=away(3, 4))

# --- reductions -------------------------------------------------------------------------------

for red in ("sum", "mean", "max"):
    fn = getattr(gn, red)
    for axis in (None, 0, 1, -1, (0, 2)):
        for keepdims in (False, True):
            case(f"{red}-axis{axis}-keepdims{keepdims}".replace(" ", ""),
                 lambda x, fn=fn, axis=axis, keepdims=keepdims: fn(x, axis, keepdims),
                 x=distinct(2, 3, 4))
case("mean-symbolic-batch-numel", lambda x: gn.mean(x, axis=0) * gn.mean(x), shapes={"x": (None, 4)},
     x=normal(3, 4))
case("numel-symbolic", lambda x: gn.ops.numel(x, 0) * x + gn.ops.numel(x) * gn.ops.numel(x, 1),
     shapes={"x": (None, 4)}, x=normal(3, 4))
case("max-1d", lambda x: gn.max(x) * x, x=distinct(5))

# --- shape ops -----------------------------------------------------------------------------------

case("reshape", lambda x: gn.reshape(x, (4, 3)), x=normal(2, 6))
case("reshape-minus-one", lambda x: gn.reshape(x, (-1, 2, 2)), x=normal(3, 4))
case("reshape-symbolic", lambda x: gn.reshape(x, (None, 2, 2)), shapes={"x": (None, 4)}, x=normal(3, 4))
case("reshape_like", lambda x, like: gn.ops.reshape_like(x, like) * like, x=normal(12), like=normal(3, 4))
case("flatten-default", lambda x: gn.flatten(x), x=normal(2, 3, 2, 2))
case("flatten-middle", lambda x: gn.flatten(x, 1, 2), x=normal(2, 3, 2, 2))
case("flatten-all", lambda x: gn.flatten(x, 0), x=normal(2, 3, 2))
case("transpose-default", lambda x: gn.transpose(x), x=normal(2, 3, 4))
case("transpose-perm", lambda x: gn.transpose(x, (1, 2, 0)), x=normal(2, 3, 4))
case("transpose-T", lambda x: x.T, x=normal(3, 4))
case("swapaxes", lambda x: gn.swapaxes(x, 0, -1), x=normal(2, 3, 4))
case("concat-axis0", lambda a, b, c: gn.concat([a, b, c], 0), a=normal(1, 4), b=normal(2, 4), c=normal(3, 4))
case("concat-axis1", lambda a, b: gn.concat([a, b], axis=-1), a=normal(3, 2), b=normal(3, 3))
case("concat-same-tensor", lambda a: gn.concat([a, a * 2.0], 0), a=normal(2, 3))
case("slice-getitem-1:3,::2", lambda x: x[1:3, ::2], x=normal(4, 5))
case("slice-getitem-reverse", lambda x: x[::-1, 1:], x=normal(3, 4))
case("slice-getitem-negative-step", lambda x: x[3:0:-2, -2:], x=normal(4, 5))
case("slice-getitem-int-and-newaxis", lambda x: x[1, None, ..., -1], x=normal(3, 4, 2))
case("slice-getitem-int-neg", lambda x: x[-2], x=normal(3, 4))
case("gn.slice", lambda x: gn.slice(x, ((0, 2, 1), (1, None, 2))), x=normal(3, 5))
case("slice_grad", lambda g, like: slice_grad(g, like, ((1, 3, 1), (None, None, 2))) * like,
     g=normal(2, 3), like=normal(4, 5))
case("pad", lambda x: gn.pad(x, ((1, 2), (0, 1))), x=normal(3, 4))
case("pad-value", lambda x: gn.pad(x, ((0, 0), (2, 0), (1, 1)), value=1.5) ** 2, x=normal(2, 2, 3))
case("broadcast_to", lambda x: gn.broadcast_to(x, (3, 4)), x=normal(4))
case("broadcast_to-inner", lambda x: gn.broadcast_to(x, (2, 3, 4)), x=normal(3, 1))
case("broadcast_like", lambda x, like: gn.broadcast_like(x, like) * like, x=normal(3, 1), like=normal(2, 3, 4))
case("sum_to", lambda x: gn.ops.sum_to(x, (3, 1)), x=normal(2, 3, 4))
case("sum_like", lambda x, like: gn.ops.sum_to(x, like) * like, x=normal(2, 3, 4), like=normal(3, 1),
     shapes={"like": (None, 1)})
case("sum_to-lead", lambda x: gn.ops.sum_to(x, (4,)) ** 2, x=normal(2, 3, 4))
case("expand_dims", lambda x: gn.expand_dims(x, 1), x=normal(3, 4))
case("expand_dims-multi", lambda x: gn.expand_dims(x, (0, -1)), x=normal(3, 4))
case("squeeze", lambda x: gn.squeeze(x), x=normal(3, 1, 4, 1))
case("squeeze-axis", lambda x: gn.squeeze(x, -1), x=normal(3, 1, 4, 1))

# --- matmul ------------------------------------------------------------------------------------

MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                 ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,))]
for sa, sb in MATMUL_SHAPES:
    case(f"matmul-{sa}@{sb}".replace(" ", ""), lambda a, b: a @ b, a=normal(*sa), b=normal(*sb))
case("matmul-gram", lambda a: gn.matmul(a, gn.transpose(a)), a=normal(3, 4))

# --- convolution and pooling -----------------------------------------------------------------------

CONV_CONFIGS = [  # (x shape, w shape, kwargs)
    ((2, 3, 5, 5), (4, 3, 3, 3), {}),
    ((1, 2, 6, 5), (3, 2, 3, 2), {"stride": 2, "padding": 1}),
    ((1, 2, 7, 7), (2, 2, 3, 3), {"dilation": 2, "padding": (2, 1)}),
    ((2, 4, 5, 5), (4, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((1, 4, 6, 6), (6, 2, 2, 3), {"groups": 2, "stride": (2, 1), "dilation": (1, 2)}),
    ((1, 3, 4, 4), (3, 1, 3, 3), {"groups": 3, "padding": 1, "stride": 2}),  # depthwise
]
for xs, ws, kw in CONV_CONFIGS:
    tag = f"{xs}{ws}{kw}".replace(" ", "").replace("'", "")
    case(f"conv2d-{tag}", lambda x, w, kw=kw: gn.conv2d(x, w, **kw), x=normal(*xs), w=normal(*ws))
case("conv2d-bias-groups", lambda x, w, b: gn.conv2d(x, w, b, padding=1, groups=2),
     x=normal(1, 4, 4, 4), w=normal(6, 2, 3, 3), b=normal(6))


def _conv_attrs(stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> dict:
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    return {"stride": pair(stride), "padding": pair(padding), "dilation": pair(dilation), "groups": groups}


def _conv_out_shape(xs: tuple, ws: tuple, kw: dict) -> tuple:
    a = _conv_attrs(**kw)
    out = [xs[0], ws[0]]
    for i in range(2):
        out.append((xs[2 + i] + 2 * a["padding"][i] - a["dilation"][i] * (ws[2 + i] - 1) - 1) // a["stride"][i] + 1)
    return tuple(out)


# the second-order ops, differentiated directly (x and w enter the grad ops only for their shapes)
for xs, ws, kw in CONV_CONFIGS[1:4]:
    tag = f"{xs}{ws}{kw}".replace(" ", "").replace("'", "")
    gs = _conv_out_shape(xs, ws, kw)
    case(f"conv2d_grad_input-{tag}", lambda g, w, x, kw=kw: declare("conv2d_grad_input", [g, w, x], _conv_attrs(**kw)),
         g=normal(*gs), w=normal(*ws), x=normal(*xs))
    case(f"conv2d_grad_weight-{tag}",
         lambda x, g, w, kw=kw: declare("conv2d_grad_weight", [x, g, w], _conv_attrs(**kw)),
         x=normal(*xs), g=normal(*gs), w=normal(*ws))
# ... and reached the way users reach them: differentiating a gradient
case("conv2d-double-backward",
     lambda x, w, u: gn.grad(gn.sum(gn.tanh(gn.conv2d(x, w, padding=1)) * u), [x, w])[0]
     * gn.grad(gn.sum(gn.conv2d(x, w, padding=1) * u), w)[0, 0, 0, 0],
     x=normal(1, 2, 4, 4), w=normal(3, 2, 3, 3), u=normal(1, 3, 4, 4))

POOL_CONFIGS = [  # (x shape, kernel_size, stride, padding)
    ((2, 2, 4, 4), 2, None, 0),
    ((1, 2, 5, 5), 3, 1, 1),  # overlapping windows, padded
    ((1, 2, 6, 5), (3, 2), (2, 1), (1, 0)),
    ((1, 1, 7, 7), 3, 2, 1),
    ((1, 2, 5, 4), (2, 3), (3, 2), (1, 1)),  # gaps between windows
]
for xs, k, s, p in POOL_CONFIGS:
    tag = f"{xs}k{k}s{s}p{p}".replace(" ", "")
    case(f"max_pool2d-{tag}", lambda x, k=k, s=s, p=p: gn.max_pool2d(x, k, s, p), x=distinct(*xs))
    case(f"avg_pool2d-{tag}", lambda x, k=k, s=s, p=p: gn.avg_pool2d(x, k, s, p), x=normal(*xs))


def _pool_attrs(k: Any, s: Any, p: Any) -> dict:
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    return {"kernel_size": pair(k), "stride": pair(k if s is None else s), "padding": pair(p)}


for xs, k, s, p in POOL_CONFIGS[1:]:
    tag = f"{xs}k{k}s{s}p{p}".replace(" ", "")
    out_shape = gn.avg_pool2d(gn.placeholder("probe", xs), k, s, p).shape
    case(f"avg_pool2d_grad-{tag}", lambda g, x, k=k, s=s, p=p: declare("avg_pool2d_grad", [g, x], _pool_attrs(k, s, p)),
         g=normal(*out_shape), x=normal(*xs))
for xs, k, s, p in POOL_CONFIGS[1:3]:
    tag = f"{xs}k{k}s{s}p{p}".replace(" ", "")
    out_shape = gn.max_pool2d(gn.placeholder("probe", xs), k, s, p).shape
    case(f"max_pool2d_grad-{tag}", lambda g, x, k=k, s=s, p=p: declare("max_pool2d_grad", [g, x], _pool_attrs(k, s, p)),
         g=normal(*out_shape), x=distinct(*xs))
    case(f"max_pool2d_select-{tag}",
         lambda h, x, k=k, s=s, p=p: declare("max_pool2d_select", [h, x], _pool_attrs(k, s, p)),
         h=normal(*xs), x=distinct(*xs))
for xs, k, s, p in POOL_CONFIGS[1:3]:  # training plans' pooling (graphnet.passes.save_pool_argmax)
    tag = f"{xs}k{k}s{s}p{p}".replace(" ", "")
    out_shape = gn.max_pool2d(gn.placeholder("probe", xs), k, s, p).shape
    case(f"max_pool2d_saving-{tag}",
         lambda x, k=k, s=s, p=p: gn.tuple_get(declare("max_pool2d_saving", [x], _pool_attrs(k, s, p)), 0),
         x=distinct(*xs))
    case(f"max_pool2d_grad_saved-{tag}",
         lambda g, x, k=k, s=s, p=p: (lambda saved: declare(
             "max_pool2d_grad_saved", [g, gn.tuple_get(saved, 1), gn.tuple_get(saved, 2), x], _pool_attrs(k, s, p)))(
             declare("max_pool2d_saving", [x], _pool_attrs(k, s, p))),
         g=normal(*out_shape), x=distinct(*xs))
case("avg_pool2d-double-backward",
     lambda x: gn.grad(gn.sum(gn.tanh(gn.avg_pool2d(x, 3, 1, 1)) * gn.avg_pool2d(x, 3, 1, 1)), x),
     x=normal(1, 2, 4, 4))

# --- the layers built on them: options, 1-d, transposed, adaptive, norms, embedding ----------------

case("conv2d-same-odd", lambda x, w: gn.conv2d(x, w, padding="same"), x=normal(1, 2, 5, 5), w=normal(3, 2, 2, 3))
case("conv2d-valid", lambda x, w: gn.conv2d(x, w, padding="valid"), x=normal(1, 2, 5, 5), w=normal(3, 2, 3, 3))
case("conv1d", lambda x, w, b: gn.conv1d(x, w, b, stride=2, padding=1), x=normal(2, 3, 7), w=normal(4, 3, 3),
     b=normal(4))
for tag, kw in (("plain", {}), ("s2p1op1", {"stride": 2, "padding": 1, "output_padding": 1}),
                ("groups-dil", {"groups": 2, "dilation": 2})):
    case(f"conv_transpose2d-{tag}", lambda x, w, kw=kw: gn.conv_transpose2d(x, w, **kw),
         x=normal(2, 4, 3, 3), w=normal(4, 3, 3, 2))
case("max_pool2d-ceil-dilation", lambda x: gn.max_pool2d(x, 2, 2, 0, dilation=2, ceil_mode=True),
     x=distinct(1, 2, 7, 6))
case("max_pool2d-ceil", lambda x: gn.max_pool2d(x, 3, 2, 1, ceil_mode=True), x=distinct(1, 2, 6, 6))
case("avg_pool2d-ceil-exclude-pad", lambda x: gn.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
     x=normal(1, 2, 6, 5))
case("max_pool1d", lambda x: gn.max_pool1d(x, 3, 2, 1), x=distinct(2, 2, 8))
case("avg_pool1d", lambda x: gn.avg_pool1d(x, 2), x=normal(2, 2, 8))
case("adaptive_avg_pool2d", lambda x: gn.adaptive_avg_pool2d(x, (2, 1)), x=normal(2, 3, 4, 6))
# resampling (graphnet/ops/resample.py); more cases, at every mode, in tests/test_layers_more.py
_INTERP = {"mode": "bilinear", "size": (5, 3), "align_corners": False, "scale_h": 0.0, "scale_w": 0.0}
case("interpolate-bilinear", lambda x: gn.interpolate(x, size=(5, 3), mode="bilinear"), x=normal(1, 2, 3, 4))
case("interpolate-nearest", lambda x: gn.interpolate(x, scale_factor=(2, 0.5)), x=normal(1, 2, 3, 4))
case("adaptive_avg_pool2d-not-dividing", lambda x: gn.adaptive_avg_pool2d(x, (3, 4)), x=normal(1, 2, 7, 5))
case("interpolate2d_grad", lambda g, x: declare("interpolate2d_grad", [g, x], _INTERP),
     g=normal(1, 2, 5, 3), x=normal(1, 2, 3, 4))
case("adaptive_max_pool2d", lambda x: gn.adaptive_max_pool2d(x, (3, 4)), x=distinct(1, 2, 7, 5))
case("adaptive_max_pool2d_grad", lambda g, x: declare("adaptive_max_pool2d_grad", [g, x], {"output_size": (3, 4)}),
     g=normal(1, 2, 3, 4), x=distinct(1, 2, 7, 5))
case("adaptive_max_pool2d_select",
     lambda h, x: declare("adaptive_max_pool2d_select", [h, x], {"output_size": (3, 4)}),
     h=normal(1, 2, 7, 5), x=distinct(1, 2, 7, 5))
case("softplus-beta-threshold", lambda x: gn.softplus(x, 2.0, 3.0),
     x=np.array([[-3.0, -1.2, -0.3, 0.0, 0.4], [1.2, 1.4, 1.6, 2.0, 3.5]]))
case("layer_norm", lambda x, w, b: gn.layer_norm(x, (3, 4), w, b), x=normal(2, 3, 4), w=normal(3, 4), b=normal(3, 4))
case("group_norm", lambda x, w, b: gn.group_norm(x, 2, w, b), x=normal(2, 4, 3, 2), w=normal(4), b=normal(4))
case("embedding", lambda w, idx: gn.embedding(idx, w), w=normal(5, 3), idx=np.array([[0, 4, 4], [2, 0, 1]]))
case("embedding_grad", lambda g, w, idx: declare("embedding_grad", [g, idx, w]), g=normal(2, 3, 3), w=normal(5, 3),
     idx=np.array([[0, 4, 4], [2, 0, 1]]))
case("silu", lambda x: gn.silu(x), x=normal(3, 4))

# --- issue 24's sequence ops (graphnet/ops/sequence.py; sin and cos come from the forward table's UNARY rows) --
for _spec, _shapes in [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 2)]),
                       ("bhqd,bhkd->bhqk", [(2, 2, 3, 2), (2, 2, 4, 2)]), ("i,j", [(3,), (4,)]),
                       ("ijk,jl->il", [(2, 3, 2), (3, 2)]), ("ijk->kji", [(2, 3, 4)]), ("ii->", [(3, 3)]),
                       ("iij,j->ij", [(3, 3, 2), (2,)]), ("ij,kj->ik", [(3, 1), (2, 4)]),
                       ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 4)]), ("...ij,...jk->...ik", [(2, 3, 4), (4, 2)]),
                       ("i,->i", [(3,), ()])]:
    case(f"einsum-{_spec}", lambda s=_spec, **xs: gn.einsum(s, *xs.values()),
         **{name: normal(*shape) for name, shape in zip("abc", _shapes)})
case("einsum-same-operand-twice", lambda x: gn.einsum("ij,ij->i", x, x), x=normal(3, 4))
case("einsum-symbolic-batch", lambda a, b: gn.einsum("bij,jk->bik", a, b), shapes={"a": (None, 3, 4)},
     a=normal(2, 3, 4), b=normal(4, 2))
case("masked_fill", lambda x, m: gn.masked_fill(x, m, -2.0), x=normal(3, 4), m=bools(4))
case("masked_fill-tensor-value", lambda x, v, m: gn.masked_fill(x, m, v), x=normal(3, 4), v=np.array(0.7),
     m=bools(3, 1))
for _d in (0, 1, -1):
    case(f"triu-{_d}", lambda x, d=_d: gn.triu(x, d), x=normal(2, 3, 4))
    case(f"tril-{_d}", lambda x, d=_d: gn.tril(x, d), x=normal(4, 3))
for _axis in (0, -1, None):
    case(f"cumsum-{_axis}", lambda x, ax=_axis: gn.cumsum(x, ax), x=normal(2, 3, 4))
case("cumsum-reverse", lambda x: declare("cumsum", [x], {"axis": 1, "reverse": True}), x=normal(3, 4))
case("topk-largest", lambda x: gn.topk(x, 2)[0], x=distinct(3, 5))
# with one process (no mpiexec) the sum over the processes is the identity; its rule's
# arithmetic with two is in tests/test_distributed.py
case("allreduce_sum", lambda x: gn.ops.allreduce_sum(x * x) * x, x=normal(3, 2))
case("topk-smallest-axis0", lambda x: gn.topk(x, 3, axis=0, largest=False)[0] ** 2, x=distinct(4, 3))
case("take_along_axis", lambda x, i: declare("take_along_axis", [x, i], {"axis": 1}), x=normal(3, 5),
     i=np.array([[0, 4, 4], [2, 2, 1], [1, 3, 0]]))
case("scatter_along_axis", lambda g, i, like: declare("scatter_along_axis", [g, i, like], {"axis": 0}),
     g=normal(2, 3), i=np.array([[0, 4, 4], [0, 2, 1]]), like=normal(5, 3))

# --- softmax and friends ---------------------------------------------------------------------------

for fn_name in ("softmax", "log_softmax"):
    fn = getattr(gn, fn_name)
    case(f"{fn_name}-last", lambda x, fn=fn: fn(x), x=normal(3, 5) * 2)
    case(f"{fn_name}-axis0", lambda x, fn=fn: fn(x, axis=0), x=normal(3, 5) * 2)
    case(f"{fn_name}-3d-axis1", lambda x, fn=fn: fn(x, 1), x=normal(2, 4, 3))
    case(f"{fn_name}-large", lambda x, fn=fn: fn(x), x=normal(2, 4) + 300.0)

# --- batch norm ------------------------------------------------------------------------------------

case("batch_norm-train-affine", lambda x, w, b: gn.batch_norm(x, None, None, w, b, training=True),
     x=normal(4, 3, 2, 2), w=normal(3), b=normal(3))
case("batch_norm-train-plain", lambda x: gn.batch_norm(x, None, None, training=True, eps=1e-3), x=normal(3, 2, 3, 2))
case("batch_norm-train-2d", lambda x, w, b: gn.batch_norm(x, None, None, w, b, training=True),
     x=normal(5, 3), w=normal(3), b=normal(3))
case("batch_norm-train-symbolic-batch", lambda x, w: gn.batch_norm(x, None, None, w, training=True),
     shapes={"x": (None, 2, 2, 2)}, x=normal(3, 2, 2, 2), w=normal(2))
case("batch_norm_train-affine",  # the one-step kernel and its gradient op
     lambda x, w, b: gn.tuple_get(declare("batch_norm_train", [x, w, b], {
         "eps": 1e-3, "momentum": 0.1, "stats": False, "weight": True, "bias": True, "relu": False}), 0),
     x=normal(4, 3, 2, 2), w=normal(3), b=normal(3))
case("batch_norm_train-relu",  # with the ReLU folded in: the gradient masks by the output
     lambda x, w, b: gn.tuple_get(declare("batch_norm_train", [x, w, b], {
         "eps": 1e-3, "momentum": 0.1, "stats": False, "weight": True, "bias": True, "relu": True}), 0),
     x=normal(4, 3, 2, 2), w=normal(3), b=normal(3) + 0.3)
case("batch_norm_train-plain",
     lambda x: gn.tuple_get(declare("batch_norm_train", [x], {"eps": 1e-3, "momentum": 0.1, "stats": False,
                                                              "weight": False, "bias": False, "relu": False}), 0),
     x=normal(4, 3, 2, 2))
case("batch_norm_train-statistics-read",  # a loss on the batch statistics too
     lambda x: (lambda node: gn.tuple_get(node, 0) * 0.5 + gn.reshape(gn.tuple_get(node, 1), (1, 3))
                * gn.reshape(gn.tuple_get(node, 2) + gn.tuple_get(node, 3), (1, 3)))(
         declare("batch_norm_train", [x], {"eps": 1e-3, "momentum": 0.1, "stats": False, "weight": False,
                                           "bias": False, "relu": False})),
     x=normal(5, 3))
for _reduction in ("mean", "sum", "none"):  # cross_entropy in one step, its gradient in one more
    for _smoothing in (0.0, 0.2):
        case(f"softmax_cross_entropy-{_reduction}-{_smoothing}",
             lambda x, y, r=_reduction, s=_smoothing: gn.tuple_get(declare(
                 "softmax_cross_entropy", [x, y], {"label_smoothing": s, "reduction": r}), 0),
             x=normal(5, 4), y=np.array([0, 3, 1, 1, 2]))
case("batch_norm-eval", lambda x, rm, rv, w, b: gn.batch_norm(x, rm, rv, w, b, training=False),
     x=normal(2, 3, 2, 2), rm=normal(3), rv=positive(3), w=normal(3), b=normal(3))

# --- losses ----------------------------------------------------------------------------------------

for red in ("mean", "sum", "none"):
    case(f"cross_entropy-{red}", lambda z, y, red=red: gn.losses.cross_entropy(z, y, reduction=red),
         z=normal(4, 5) * 2, y=labels(4, 5))
    case(f"cross_entropy-smoothing-{red}",
         lambda z, y, red=red: gn.losses.cross_entropy(z, y, label_smoothing=0.1, reduction=red),
         z=normal(4, 5) * 2, y=labels(4, 5))
    case(f"nll-{red}", lambda z, y, red=red: gn.losses.nll(gn.log_softmax(z), y, reduction=red),
         z=normal(4, 5), y=labels(4, 5))
    case(f"mse-{red}", lambda p, t, red=red: gn.losses.mse(p, t, reduction=red), p=normal(3, 4), t=normal(3, 4))
    case(f"bce_with_logits-{red}",
         lambda z, t, red=red: gn.losses.binary_cross_entropy_with_logits(z, t, reduction=red),
         z=away(3, 4, hi=4.0), t=R.uniform(0, 1, (3, 4)))
case("cross_entropy-symbolic-batch", lambda z, y: gn.losses.cross_entropy(z, y, label_smoothing=0.2),
     shapes={"z": (None, 3), "y": (None,)}, z=normal(5, 3), y=labels(5, 3))
case("nll-raw-scores", lambda z, y: gn.losses.nll(z, y), z=normal(4, 3), y=labels(4, 3))
case("cross_entropy-weighted-ignoring",  # more weighted and ignoring cases in tests/test_losses_more.py
     lambda z, y: gn.losses.cross_entropy(z, y, weight=np.array([0.5, 2.0, 1.0]), ignore_index=-100,
                                          label_smoothing=0.1),
     z=normal(5, 3) * 2, y=np.array([0, -100, 2, 1, 2]))
case("scan-rnn-step",  # more scan gradients (reverse, outer values, against the unrolled graph) in test_scan.py
     lambda x, h: gn.sum(gn.scan(lambda c, xt: (gn.tanh(xt @ gn.constant(np.linspace(-1, 1, 12).reshape(3, 4))
                                                         + c * 0.5),) * 2, h, x)[1] ** 2),
     x=normal(4, 2, 3), h=normal(2, 4))
case("cond-both-branches",  # the predicate flips with the data: each run takes one branch (more in test_scan.py)
     lambda x: gn.sum(gn.cond(gn.sum(x) > 0.0, lambda v: gn.exp(v) * v, lambda v: gn.sin(v) * 3.0, x))
     + gn.sum(gn.cond(gn.sum(x) <= 0.0, lambda v: gn.exp(v) * v, lambda v: gn.sin(v) * 3.0, x)),
     x=normal(2, 3))
case("mse-constant-target", lambda p: gn.losses.mse(p, np.linspace(-1, 1, 12).reshape(3, 4)), p=normal(3, 4))

# --- a small network: many rules chained --------------------------------------------------------------

case("mlp-chain",
     lambda x, w1, b1, w2, y: gn.losses.cross_entropy(gn.gelu(x @ w1 + b1) @ w2, y, label_smoothing=0.05),
     x=normal(4, 3), w1=normal(3, 5), b1=normal(5), w2=normal(5, 3), y=labels(4, 3))
case("cnn-chain",
     lambda x, w, b: gn.mean(gn.log_softmax(gn.flatten(gn.avg_pool2d(gn.elu(gn.conv2d(x, w, b, padding=1)), 2)))),
     x=normal(2, 1, 4, 4), w=normal(2, 1, 3, 3), b=normal(2))

# --- attention (issue 24; blocked kernels, masks and dropout: tests/test_attention.py) -------------------

case("scaled_dot_product_attention-float-mask",  # a float mask read from a placeholder gets a gradient too
     lambda q, k, v, m: gn.scaled_dot_product_attention(q, k, v, m, scale=0.6),
     q=normal(2, 3, 4), k=normal(2, 5, 4), v=normal(2, 5, 3), m=normal(3, 5))
case("scaled_dot_product_attention-causal-second-order",  # the gradient op's own rule
     lambda q, k, v: gn.grad(gn.sum(gn.scaled_dot_product_attention(q, k, v, is_causal=True) ** 3), q),
     q=normal(2, 4, 3), k=normal(2, 5, 3), v=normal(2, 5, 2))


# --- the checks ------------------------------------------------------------------------------------


def _scalarize(out: gn.Tensor, feeds: dict) -> tuple[gn.Tensor, dict]:
    """sum(out * W) with W a fixed random placeholder, so the upstream gradient varies."""
    plan = gn.compile({"out": out})
    value = plan.run(only_feeds(plan, feeds))["out"]
    weight = np.random.default_rng(7).uniform(0.5, 1.5, np.shape(value)) * \
        np.random.default_rng(8).choice([-1.0, 1.0], np.shape(value))
    w = gn.placeholder("__weight", out.shape, dtype=out.dtype)
    return gn.sum(out * w), {**feeds, "__weight": weight}


def _check_gradients(y: gn.Tensor, ph: dict, feeds: dict, wrt: list[str], eps: float, tol: float) -> None:
    grads = gn.grad(y, [ph[n] for n in wrt])
    for n, g in zip(wrt, grads):
        assert g.shape == ph[n].shape and g.dtype == ph[n].dtype, (n, g.shape, g.dtype)
    plan = gn.compile({f"g:{n}": g for n, g in zip(wrt, grads)})
    analytic = plan.run(only_feeds(plan, feeds))
    forward = gn.compile({"y": y})
    numeric = {n: finite_difference(forward, "y", feeds, n, eps) for n in wrt}
    scale = max(float(np.max(np.abs(v))) if v.size else 0.0 for v in numeric.values())
    for n in wrt:
        a = analytic[f"g:{n}"]
        assert a.shape == feeds[n].shape, (n, a.shape)
        err = rel_error(a, numeric[n], FLOOR * scale)
        assert err <= tol, f"d/d{n}: relative error {err:.3g} > {tol}\nanalytic\n{a}\nnumeric\n{numeric[n]}"


# --- unary elementwise ops from the forward table ------------------------------------------------
# Each row of test_op_forward's UNARY table (op: public function, NumPy reference, input domain)
# is also a gradient case here, on inputs of that domain kept away from kinks at 0: a new unary
# elementwise op needs that one row for both its forward values and its gradient rule.

from test_op_forward import UNARY as FORWARD_UNARY  # noqa: E402 - the forward table, after this file's own

_KINK_SAFE = {"normal": normal, "positive": positive, "ties": away}
for _name, (_fn, _ref, _domain) in FORWARD_UNARY.items():
    if REGISTRY[_name].grad is not None:
        case(f"{_name}-forward-row", lambda x, f=_fn: f(x), x=_KINK_SAFE[_domain.__name__](3, 4))


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_gradient_matches_finite_differences(case: Case) -> None:
    ph = placeholders(case.feeds, case.shapes)
    out = case.build(**ph)
    y, feeds = _scalarize(out, case.feeds)
    _check_gradients(y, ph, feeds, case.wrt, case.eps, case.tol)


def test_symbolic_batch_gradient_runs_with_several_batch_sizes() -> None:
    x = gn.placeholder("x", (None, 3), dtype="float64")
    w = gn.placeholder("w", (3, 2), dtype="float64")
    y = gn.mean(gn.tanh(x @ w)) + gn.sum(gn.mean(x, axis=0) ** 2)
    gx, gw = gn.grad(y, [x, w])
    plan = gn.compile({"gx": gx, "gw": gw})
    forward = gn.compile({"y": y})
    wv = normal(3, 2)
    for n in (1, 2, 5):
        feeds = {"x": normal(n, 3), "w": wv}
        out = plan.run(feeds)
        assert out["gx"].shape == (n, 3)
        for name in ("x", "w"):
            numeric = finite_difference(forward, "y", feeds, name)
            assert rel_error(out[f"g{name}"], numeric) <= 1e-6


def test_ties_send_the_gradient_to_the_first_argument() -> None:
    a = gn.placeholder("a", (4,), dtype="float64")
    b = gn.placeholder("b", (4,), dtype="float64")
    w = np.array([1.0, 2.0, 3.0, 4.0])
    grads = gn.grad(gn.sum((gn.maximum(a, b) + gn.minimum(a, b) * 10.0) * w), [a, b])
    out = gn.compile({"ga": grads[0], "gb": grads[1]}).run(a=np.array([1.0, 2.0, 3.0, 4.0]),
                                                           b=np.array([1.0, 0.0, 3.0, 5.0]))
    np.testing.assert_array_equal(out["ga"], [11.0, 2.0, 33.0, 40.0])
    np.testing.assert_array_equal(out["gb"], [0.0, 20.0, 0.0, 4.0])


def test_gradient_has_the_input_shape_when_unnamed_dims_broadcast_at_run_time() -> None:
    # (None, 4) * (None, 4) fed (1, 4) and (3, 4): NumPy broadcasting makes the product (3, 4), and
    # d/dx must be summed back to x's run-time shape (1, 4). graphnet returns a (3, 4) "gradient".
    x = gn.placeholder("x", (None, 4), dtype="float64")
    y = gn.placeholder("y", (None, 4), dtype="float64")
    g = gn.grad(gn.sum(x * y), x)
    yv = normal(3, 4)
    out = gn.compile({"g": g}).run(x=normal(1, 4), y=yv)["g"]
    assert out.shape == (1, 4)
    np.testing.assert_allclose(out, yv.sum(0, keepdims=True))


def test_max_ties_share_the_gradient() -> None:
    x = gn.placeholder("x", (2, 3), dtype="float64")
    g = gn.grad(gn.sum(gn.max(x, axis=1) * np.array([1.0, 3.0])), x)
    out = gn.compile({"g": g}).run(x=np.array([[1.0, 5.0, 5.0], [2.0, 2.0, 2.0]]))["g"]
    np.testing.assert_allclose(out, [[0.0, 0.5, 0.5], [1.0, 1.0, 1.0]])


def test_unconnected_input_gets_zero_gradient() -> None:
    x = gn.placeholder("x", (2, 3), dtype="float64")
    z = gn.placeholder("z", (4,), dtype="float64")
    g = gn.grad(gn.sum(x * 2.0), z)
    out = gn.compile({"g": g}).run(z=normal(4))["g"]
    np.testing.assert_array_equal(out, np.zeros(4))


# --- second order: Hessian-vector products -------------------------------------------------------------

HVP_CASES: list[Case] = []


def hvp_case(id: str, build: Callable[..., gn.Tensor], *, marks: tuple = (), **feeds: np.ndarray) -> None:
    HVP_CASES.append(Case(id, build, feeds, {}, marks=marks))


hvp_case("tanh", lambda x: gn.tanh(x), x=normal(3, 4))
hvp_case("exp", lambda x: gn.exp(x), x=normal(3, 4))
hvp_case("sigmoid", lambda x: gn.sigmoid(x), x=normal(3, 4) * 2)
hvp_case("log-sqrt", lambda x: gn.log(x) + gn.sqrt(x), x=positive(3, 4))
hvp_case("mul", lambda a, b: a * b * a, a=normal(3, 4), b=normal(4))
hvp_case("div", lambda a, b: a / b, a=normal(3, 4), b=away(3, 1, lo=0.5))
hvp_case("pow", lambda a, b: a ** b, a=positive(3, 4), b=normal(4))
hvp_case("gelu-erf", lambda x: gn.gelu(x) + gn.gelu(x, approximate="tanh") + gn.erf(x), x=normal(3, 4))
hvp_case("elu-leaky", lambda x: gn.elu(x) * gn.leaky_relu(x, 0.3), x=away(3, 4))
hvp_case("matmul", lambda a, b: a @ b, a=normal(3, 4), b=normal(4, 2))
hvp_case("matmul-batched", lambda a, b: gn.tanh(a @ b), a=normal(2, 3, 4), b=normal(4,))
hvp_case("sum", lambda x: gn.sum(x, axis=1) ** 2 + gn.sum(x * x), x=normal(3, 4))
hvp_case("mean", lambda x: gn.tanh(gn.mean(x, axis=0, keepdims=True)) * x, x=normal(3, 4))
hvp_case("max", lambda x: gn.max(x, axis=1) ** 2, x=distinct(3, 4))
hvp_case("softmax", lambda x: gn.softmax(x), x=normal(3, 4))
hvp_case("softmax-axis0", lambda x: gn.softmax(x, axis=0) * x, x=normal(3, 4))
hvp_case("log_softmax", lambda x: gn.log_softmax(x), x=normal(3, 4))
hvp_case("cross_entropy", lambda z, y: gn.losses.cross_entropy(z, y, label_smoothing=0.1),
         z=normal(4, 3), y=labels(4, 3))
hvp_case("conv2d", lambda x, w: gn.tanh(gn.conv2d(x, w, stride=2, padding=1)), x=normal(1, 2, 4, 4),
         w=normal(2, 2, 3, 3))
hvp_case("avg_pool2d", lambda x: gn.avg_pool2d(x * x, 3, 1, 1), x=normal(1, 1, 4, 4))
hvp_case("batch_norm", lambda x, w: gn.batch_norm(x, None, None, w, training=True), x=normal(4, 2), w=normal(2))
hvp_case("einsum", lambda a, b: gn.tanh(gn.einsum("bij,bjk->bik", a, b)), a=normal(2, 3, 4), b=normal(2, 4, 2))
hvp_case("sin-cos", lambda x: gn.sin(x) * gn.cos(x * 2.0), x=normal(3, 4))
hvp_case("topk-cumsum", lambda x: gn.cumsum(gn.topk(x, 3)[0] ** 2, 1), x=distinct(2, 5))
hvp_case("slice-concat-pad", lambda x: gn.concat([x[1:, :], gn.pad(x, ((0, 0), (1, 0)))[:, :3] ** 2], 0),
         x=normal(3, 3))


@pytest.mark.parametrize("case", [c.param() for c in HVP_CASES])
def test_hessian_vector_product_matches_finite_differences_of_the_gradient(case: Case) -> None:
    ph = placeholders(case.feeds)
    out = case.build(**ph)
    f, feeds = _scalarize(out, case.feeds)
    wrt = case.wrt
    xs = [ph[n] for n in wrt]
    grads = gn.grad(f, xs)
    vs = {n: np.random.default_rng(11 + i).standard_normal(feeds[n].shape) for i, n in enumerate(wrt)}
    vph = {n: gn.placeholder(f"__v_{n}", ph[n].shape, dtype="float64") for n in wrt}
    s = gn.sum(gn.concat([gn.reshape(gn.sum(g * vph[n]), (1,)) for n, g in zip(wrt, grads)], 0))
    feeds = {**feeds, **{f"__v_{n}": v for n, v in vs.items()}}
    # d/dx <grad f(x), v>, symbolically, against central differences of <grad f(x), v>
    _check_gradients(s, ph, feeds, wrt, 1e-6, 1e-6)
    # and H v against the directional difference of the first gradient (g(x + eps v) - g(x - eps v)) / 2 eps
    hv_plan = gn.compile({n: h for n, h in zip(wrt, gn.grad(s, xs))})
    hv = hv_plan.run(only_feeds(hv_plan, feeds))
    grad_plan = gn.compile({n: g for n, g in zip(wrt, grads)})
    eps = 1e-6
    plus = grad_plan.run(only_feeds(grad_plan, {**feeds, **{n: feeds[n] + eps * vs[n] for n in wrt}}))
    minus = grad_plan.run(only_feeds(grad_plan, {**feeds, **{n: feeds[n] - eps * vs[n] for n in wrt}}))
    scale = max(float(np.max(np.abs(hv[n]))) for n in wrt)
    for n in wrt:
        numeric = (plus[n] - minus[n]) / (2 * eps)
        assert rel_error(hv[n], numeric, FLOOR * scale) <= 1e-6, n


# --- meta-tests ------------------------------------------------------------------------------------------

#: ops with a gradient rule that no case differentiates through, and why
GRAD_EXCEPTIONS = {
    "target_weights": "its float input is the class weights, which get no gradient by design (as in PyTorch); the "
                      "weighted cross_entropy/nll cases run it as a constant-like factor and test_losses_more checks "
                      "that gn.grad of a weight is zero",
    "one_hot": "its only input is integer labels, never on a gradient path (gradients need float inputs), so the "
               "rule is unreachable; it appears in the cross_entropy/nll cases as a constant-like factor",
    "dropout": "random: each run draws a new mask, so finite differences are meaningless; test_op_forward "
               "checks that forward and backward share one mask",
    "stop_gradient": "its rule gives no gradient by design; test_op_forward checks that gn.grad sees a constant",
    "copy": "only the lowering adds copies (of outputs that would alias state), after autodiff",
    "while_loop": "its rule raises GradientError by design (test_scan checks it): use scan with a bound",
    "count_batches": "the identity (its count is an effect); test_op_forward checks the gradient passes unchanged",
}

#: registered ops without a gradient rule (leaves and effects aside), and why that is fine
NO_GRAD_RULE = {
    "fused": "fusion runs after autodiff, on graphs whose gradients exist already",
    "softmax_cross_entropy_grad": "the fuse_cross_entropy pass puts softmax_cross_entropy in compiled graphs just "
                                  "before the one autodiff pass; gn.grad of gn.grad goes through cross_entropy's "
                                  "decomposition",
    "batch_norm_train_grad": "the fuse_batch_norm pass puts batch_norm_train in compiled graphs just before the one "
                             "autodiff pass: nothing differentiates its gradient (gn.grad of gn.grad goes through "
                             "batch_norm's decomposition)",
    "equal": "bool output", "not_equal": "bool output", "less": "bool output", "less_equal": "bool output",
    "greater": "bool output", "greater_equal": "bool output",
    "argmax": "int64 output: an index, on no gradient's path (as torch.argmax)",
    "allreduce_start": "the data_parallel pass puts gradient buckets' sums in after autodiff",
    "allreduce_wait": "the data_parallel pass puts gradient buckets' sums in after autodiff",
}


def _skippable(name: str) -> bool:
    op = REGISTRY[name]
    return op.kernel is None or op.effect or op.random


def test_every_op_with_a_gradient_rule_has_a_case() -> None:
    reached: dict[str, list[str]] = {}
    for c in CASES:
        ph = placeholders(c.feeds, c.shapes)
        out = c.build(**ph)
        y = gn.sum(out)
        for op in differentiated_ops(y.node, [ph[n].node for n in c.wrt]):
            reached.setdefault(op, []).append(c.id)
    with_rule = {n for n, op in REGISTRY.items() if op.grad is not None and not _skippable(n)}
    missing = sorted(with_rule - set(reached) - set(GRAD_EXCEPTIONS))
    assert not missing, f"ops with a gradient rule but no gradient case: {missing}"
    stale = sorted(n for n in GRAD_EXCEPTIONS if n not in REGISTRY or (n in reached and not _skippable(n)))
    assert not stale, f"exceptions that are not needed any more: {stale}"


def test_ops_without_a_gradient_rule_are_known() -> None:
    without = {n for n, op in REGISTRY.items() if op.grad is None and op.kernel is not None and not op.effect}
    assert without == set(NO_GRAD_RULE)
    leaves_and_effects = {n for n, op in REGISTRY.items() if op.kernel is None or op.effect}
    assert leaves_and_effects == {"placeholder", "constant", "variable", "assign", "fused_assign", "batch_norm",
                                  "sync_batch_norm", "cross_entropy", "layer_norm", "tuple_get", "make_tuple",
                                  "composite_vjp"}
    composites = {n for n, op in REGISTRY.items() if op.category == "composite"}
    assert all(REGISTRY[n].decompose is not None for n in composites - {"composite_vjp"})


def test_a_gradient_penalty_through_max_pool2d_differentiates() -> None:
    xv = distinct(1, 2, 5, 5)
    x = gn.placeholder("x", xv.shape, dtype="float64")
    g = gn.grad(gn.sum(gn.max_pool2d(x, 3, 2, 1) ** 3), x)
    penalty = gn.sum(g * g)
    _check_gradients(penalty, {"x": x}, {"x": xv}, ["x"], 1e-6, 1e-6)


#: ops that a gradient may contain although they have no gradient rule, and why that is fine
GRADIENT_LEAVES = {
    "equal": "bool mask", "not_equal": "bool mask", "less": "bool mask", "less_equal": "bool mask",
    "greater": "bool mask", "greater_equal": "bool mask",
    "tuple_get": "autodiff hands its gradient to the multi-output op, which has the rule",
}


def test_every_gradient_can_be_differentiated_again() -> None:
    """Each op a gradient emits has a gradient rule (or is listed above with the reason)."""
    emitted: dict[str, str] = {}
    for c in CASES:
        ph = placeholders(c.feeds, c.shapes)
        y = gn.sum(c.build(**ph))
        if y.dtype not in ("float32", "float64"):
            continue
        grads = gn.grad(y, [ph[n] for n in c.wrt])
        for node in gn.make_graph({f"g{i}": t for i, t in enumerate(grads)}).nodes:
            op = REGISTRY[node.op]
            if op.grad is None and op.kernel is not None and node.op not in GRADIENT_LEAVES \
                    and node.op not in ("batch_norm_train_grad", "softmax_cross_entropy_grad"):  # NO_GRAD_RULE
                emitted.setdefault(node.op, c.id)
    assert not emitted, f"gradients emit ops without a gradient rule: {emitted}"
