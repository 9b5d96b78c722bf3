"""Issue 23's layers (Upsample/interpolate, InstanceNorm2d, RMSNorm, AdaptiveMaxPool2d, adaptive average
pooling at any sizes, Dropout2d, PReLU, Softplus, Mish, ConvTranspose1d) against plain NumPy references
written here in float64 (loops are fine), tables of PyTorch's own outputs, and float64 finite
differences of their gradients."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest

import graphnet as gn
from graphnet.ops.common import declare

from helpers import compile_plan, covers, finite_difference, only_feeds, placeholders, rel_error

R = np.random.default_rng(23)


def _run(out: gn.Tensor, **feeds: np.ndarray) -> np.ndarray:
    return compile_plan({"out": out}, mode="eval").run(**feeds)["out"]


def _distinct(*shape: int) -> np.ndarray:
    """Well separated values in random order (no ties within any pooling window)."""
    return R.permutation(np.arange(math.prod(shape)) * 0.1).reshape(shape) + R.uniform(-0.01, 0.01, shape)


# --- references -------------------------------------------------------------------------------------


def _nearest_matrix(n_in: int, n_out: int, scale: float, exact: bool) -> np.ndarray:
    """PyTorch's nearest source index, floor(dst * s) ("nearest-exact": floor((dst + 0.5) * s)), s = 1 /
    scale_factor or In / Out, in float32 as PyTorch computes it; "nearest" copies at equal sizes and
    halves at double sizes."""
    a = np.zeros((n_out, n_in))
    s = np.float32(1.0 / scale) if scale else np.float32(n_in) / np.float32(n_out)
    for o in range(n_out):
        if not exact and n_out == n_in:
            src = o
        elif not exact and n_out == 2 * n_in:
            src = o // 2
        elif not exact:
            src = int(math.floor(np.float32(o) * s))
        else:
            src = int(math.floor(np.float32((o + 0.5) * float(s))))
        a[o, min(src, n_in - 1)] = 1.0
    return a


def _linear_matrix(n_in: int, n_out: int, align_corners: bool, scale: float) -> np.ndarray:
    """PyTorch's bilinear weights along one axis (float64 arithmetic)."""
    a = np.zeros((n_out, n_in))
    for o in range(n_out):
        if n_out == n_in:
            a[o, o] = 1.0
            continue
        if align_corners:
            real = (n_in - 1) / (n_out - 1) * o if n_out > 1 else 0.0
        else:
            ratio = 1.0 / scale if scale else n_in / n_out
            real = max(ratio * (o + 0.5) - 0.5, 0.0)
        i0 = min(int(math.floor(real)), n_in - 1)
        lam = min(max(real - i0, 0.0), 1.0)
        i1 = i0 + (1 if i0 < n_in - 1 else 0)
        a[o, i0] += 1 - lam
        a[o, i1] += lam
    return a


def _window(i: int, n_in: int, n_out: int) -> slice:
    """PyTorch's adaptive window: floor(i * In / Out) to ceil((i + 1) * In / Out)."""
    return slice(i * n_in // n_out, -(-(i + 1) * n_in // n_out))


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    a = np.zeros((n_out, n_in))
    for o in range(n_out):
        w = _window(o, n_in, n_out)
        a[o, w] = 1.0 / (w.stop - w.start)
    return a


def _axis_matrix(mode: str, n_in: int, n_out: int, align_corners: bool, scale: float) -> np.ndarray:
    if mode in ("nearest", "nearest-exact"):
        return _nearest_matrix(n_in, n_out, scale, mode == "nearest-exact")
    if mode == "bilinear":
        return _linear_matrix(n_in, n_out, align_corners, scale)
    return _area_matrix(n_in, n_out)


def _interpolate_ref(x: np.ndarray, size: tuple, mode: str, align_corners: bool = False,
                     scales: tuple = (0.0, 0.0)) -> np.ndarray:
    ah = _axis_matrix(mode, x.shape[2], size[0], align_corners, scales[0])
    aw = _axis_matrix(mode, x.shape[3], size[1], align_corners, scales[1])
    return np.einsum("oh,nchw,pw->ncop", ah, x, aw)


def _adaptive_max_ref(x: np.ndarray, out: tuple, g: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pooled values, and g added at each window's first (row-major) maximum."""
    n, c, h, w = x.shape
    y = np.zeros((n, c) + out)
    gx = np.zeros_like(x)
    for i in range(out[0]):
        for j in range(out[1]):
            rows, cols = _window(i, h, out[0]), _window(j, w, out[1])
            for a in range(n):
                for b in range(c):
                    win = x[a, b, rows, cols]
                    y[a, b, i, j] = win.max()
                    r, q = np.unravel_index(np.argmax(win), win.shape)
                    if g is not None:
                        gx[a, b, rows.start + r, cols.start + q] += g[a, b, i, j]
    return y, gx


def _softplus_ref(x: np.ndarray, beta: float = 1.0, threshold: float = 20.0) -> np.ndarray:
    return np.where(x * beta > threshold, x, np.log1p(np.exp(np.minimum(x * beta, threshold))) / beta)


def _conv_transpose1d_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, padding: int,
                          output_padding: int, groups: int, dilation: int) -> np.ndarray:
    n, cin, length = x.shape
    og, k = w.shape[1], w.shape[2]
    out_len = (length - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1
    y = np.zeros((n, og * groups, out_len))
    cg = cin // groups
    for c in range(cin):
        g = c // cg
        for o in range(og):
            for i in range(length):
                for t in range(k):
                    pos = i * stride + t * dilation - padding
                    if 0 <= pos < out_len:
                        y[:, g * og + o, pos] += x[:, c, i] * w[c, o, t]
    return y if b is None else y + b[None, :, None]


# --- gradient check (float64 central differences of a compiled forward plan) ---------------------


def _check_gradients(build: Callable[..., gn.Tensor], feeds: dict[str, np.ndarray], tol: float = 1e-6) -> None:
    """sum(build(...) * W) with fixed random W: gn.grad against central differences, for every float feed."""
    ph = placeholders(feeds)
    out = build(**ph)
    weight = R.uniform(0.5, 1.5, out.shape) * R.choice([-1.0, 1.0], out.shape)
    y = gn.sum(out * gn.constant(weight))
    wrt = [n for n, a in feeds.items() if a.dtype.kind == "f"]
    grads = gn.grad(y, [ph[n] for n in wrt])
    plan = compile_plan({n: g for n, g in zip(wrt, grads)})
    analytic = plan.run(only_feeds(plan, feeds))
    forward = compile_plan({"y": y})
    numeric = {n: finite_difference(forward, "y", feeds, n) for n in wrt}
    scale = max(float(np.max(np.abs(v))) for v in numeric.values())
    for n in wrt:
        assert analytic[n].shape == feeds[n].shape
        err = rel_error(analytic[n], numeric[n], 1e-4 * scale)
        assert err <= tol, f"d/d{n}: relative error {err:.3g}\nanalytic\n{analytic[n]}\nnumeric\n{numeric[n]}"


# --- interpolate / Upsample ------------------------------------------------------------------------

_RAMP = np.arange(1.0, 21.0).reshape(1, 1, 5, 4)
#: PyTorch 2.13's F.interpolate of _RAMP (rounded to 10 decimals)
PYTORCH_INTERPOLATE = [
    (dict(size=(3, 7)), [[1, 1, 2, 2, 3, 3, 4], [5, 5, 6, 6, 7, 7, 8], [13, 13, 14, 14, 15, 15, 16]]),
    (dict(size=(3, 7), mode="nearest-exact"),
     [[1, 1, 2, 3, 3, 4, 4], [9, 9, 10, 11, 11, 12, 12], [17, 17, 18, 19, 19, 20, 20]]),
    (dict(size=(3, 7), mode="bilinear"),
     [[2.3333333333, 2.6904761905, 3.2619047619, 3.8333333333, 4.4047619048, 4.9761904762, 5.3333333333],
      [9.0, 9.3571428571, 9.9285714286, 10.5, 11.0714285714, 11.6428571429, 12.0],
      [15.6666666667, 16.0238095238, 16.5952380952, 17.1666666667, 17.7380952381, 18.3095238095,
       18.6666666667]]),
    (dict(size=(3, 7), mode="bilinear", align_corners=True),
     [[1, 1.5, 2, 2.5, 3, 3.5, 4], [9, 9.5, 10, 10.5, 11, 11.5, 12], [17, 17.5, 18, 18.5, 19, 19.5, 20]]),
    (dict(scale_factor=1.7),
     [[1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3], [5, 5, 6, 6, 7, 7], [5, 5, 6, 6, 7, 7], [9, 9, 10, 10, 11, 11],
      [9, 9, 10, 10, 11, 11], [13, 13, 14, 14, 15, 15], [17, 17, 18, 18, 19, 19]]),
    (dict(scale_factor=1.7, mode="bilinear"),
     [[1.0, 1.3823529412, 1.9705882353, 2.5588235294, 3.1470588235, 3.7352941176],
      [2.5294117647, 2.9117647059, 3.5, 4.0882352941, 4.6764705882, 5.2647058824],
      [4.8823529412, 5.2647058824, 5.8529411765, 6.4411764706, 7.0294117647, 7.6176470588],
      [7.2352941176, 7.6176470588, 8.2058823529, 8.7941176471, 9.3823529412, 9.9705882353],
      [9.5882352941, 9.9705882353, 10.5588235294, 11.1470588235, 11.7352941176, 12.3235294118],
      [11.9411764706, 12.3235294118, 12.9117647059, 13.5, 14.0882352941, 14.6764705882],
      [14.2941176471, 14.6764705882, 15.2647058824, 15.8529411765, 16.4411764706, 17.0294117647],
      [16.6470588235, 17.0294117647, 17.6176470588, 18.2058823529, 18.7941176471, 19.3823529412]]),
    (dict(size=(3, 3), mode="area"), [[3.5, 4.5, 5.5], [9.5, 10.5, 11.5], [15.5, 16.5, 17.5]]),
]


@covers("interpolate2d")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw,want", PYTORCH_INTERPOLATE, ids=[str(sorted(k.items())) for k, _ in PYTORCH_INTERPOLATE])
def test_interpolate_matches_pytorch_outputs(kw: dict, want: list, dtype: str) -> None:
    x = gn.placeholder("x", _RAMP.shape, dtype)
    got = _run(gn.interpolate(x, **kw), x=_RAMP.astype(dtype))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got[0, 0], np.array(want, np.float64), rtol=1e-6 if dtype == "float32" else 0,
                               atol=1e-5 if dtype == "float32" else 1e-9)


INTERPOLATIONS = [
    ((2, 3, 7, 5), dict(size=(3, 4)), "nearest"),
    ((2, 3, 7, 5), dict(size=(10, 13)), "nearest"),
    ((1, 2, 4, 6), dict(scale_factor=2), "nearest"),
    ((1, 2, 4, 6), dict(scale_factor=(2.5, 0.7)), "nearest"),
    ((2, 3, 7, 5), dict(size=(3, 11)), "nearest-exact"),
    ((2, 3, 7, 5), dict(size=(3, 4)), "bilinear"),
    ((2, 3, 5, 4), dict(size=(9, 7)), "bilinear"),
    ((1, 2, 4, 6), dict(scale_factor=(1.7, 0.6)), "bilinear"),
    ((1, 2, 4, 6), dict(scale_factor=1.7, recompute_scale_factor=True), "bilinear"),
    ((2, 3, 7, 5), dict(size=(3, 4), align_corners=True), "bilinear"),
    ((2, 3, 5, 4), dict(size=(9, 1), align_corners=True), "bilinear"),
    ((2, 3, 7, 5), dict(size=(3, 4)), "area"),
    ((2, 3, 5, 4), dict(size=(4, 6)), "area"),
    ((1, 1, 1, 3), dict(size=(4, 3)), "bilinear"),
]


@covers("interpolate2d")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,kw,mode", INTERPOLATIONS,
                         ids=[f"{s}-{m}-{sorted(k.items())}" for s, k, m in INTERPOLATIONS])
def test_interpolate_against_numpy(shape: tuple, kw: dict, mode: str, dtype: str) -> None:
    xv = R.standard_normal(shape)
    x = gn.placeholder("x", (None,) + shape[1:], dtype)
    y = gn.interpolate(x, mode=mode, **kw)
    if "size" in kw:
        size, scales = kw["size"], (0.0, 0.0)
    else:
        f = kw["scale_factor"] if isinstance(kw["scale_factor"], tuple) else (kw["scale_factor"],) * 2
        size = tuple(int(math.floor(d * s)) for d, s in zip(shape[2:], f))
        scales = (0.0, 0.0) if kw.get("recompute_scale_factor") else f
    assert tuple(y.shape) == (None, shape[1]) + size
    want = _interpolate_ref(xv, size, mode, kw.get("align_corners", False), scales)
    got = _run(y, x=xv.astype(dtype))
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@covers("interpolate2d")
def test_upsample_layer() -> None:
    xv = R.standard_normal((2, 3, 4, 5))
    x = gn.placeholder("x", (None, 3, 4, 5), "float64")
    up = gn.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    assert repr(up) == "Upsample(scale_factor=2.0, mode='bilinear')"
    np.testing.assert_allclose(_run(up(x), x=xv), _interpolate_ref(xv, (8, 10), "bilinear", True), rtol=1e-12)
    near = gn.nn.Upsample(size=(3, 7))
    assert repr(near) == "Upsample(size=(3, 7), mode='nearest')"
    np.testing.assert_allclose(_run(near(x), x=xv), _interpolate_ref(xv, (3, 7), "nearest"))
    assert gn.ops.interpolate is gn.interpolate
    with pytest.raises(gn.ShapeError, match="exactly one"):
        gn.nn.Upsample()


def test_interpolate_rejects_what_it_cannot_do() -> None:
    x = gn.placeholder("x", (2, 3, 4, 5), "float32")
    for kw, match in [(dict(size=3, scale_factor=2), "exactly one"), (dict(), "exactly one"),
                      (dict(size=3, mode="bicubic"), "mode"), (dict(size=3, align_corners=True), "align_corners"),
                      (dict(size=(3, 0)), ">= 1"), (dict(scale_factor=0.1), ">= 1"),
                      (dict(size=3, antialias=True, mode="bilinear"), "antialias"),
                      (dict(size=(1, 2, 3)), "pair"), (dict(scale_factor=-1.0), "positive")]:
        with pytest.raises(gn.ShapeError, match=match):
            gn.interpolate(x, **kw)
    with pytest.raises(gn.ShapeError, match="4-d"):
        gn.interpolate(gn.placeholder("v", (2, 3, 4), "float32"), size=5)
    with pytest.raises(gn.ShapeError, match="static"):
        gn.interpolate(gn.placeholder("s", (2, 3, None, 5), "float32"), scale_factor=2)
    with pytest.raises(gn.DTypeError):
        gn.interpolate(gn.placeholder("i", (2, 3, 4, 5), "int64"), size=2)
    with pytest.raises(gn.ShapeError, match="interpolate2d_grad"):
        declare("interpolate2d_grad", [gn.placeholder("g", (2, 3, 3, 3), "float32"), x],
                {"mode": "nearest", "size": (3, 4), "align_corners": False, "scale_h": 0.0, "scale_w": 0.0})


@covers("interpolate2d")
def test_interpolate_takes_symbolic_spatial_sizes_with_a_size() -> None:
    x = gn.placeholder("x", (None, 2, None, None), "float64")
    plan = compile_plan({"y": gn.interpolate(x, size=(4, 3), mode="bilinear")})
    for shape in [(1, 2, 5, 7), (3, 2, 2, 2)]:
        xv = R.standard_normal(shape)
        np.testing.assert_allclose(plan.run(x=xv)["y"], _interpolate_ref(xv, (4, 3), "bilinear"), rtol=1e-12)


# --- adaptive pooling ------------------------------------------------------------------------------------

#: PyTorch 2.13 on this input: adaptive_max_pool2d(x, (3, 4)), its gradient for ones, adaptive_avg_pool2d
_PERM = np.array([[26, 29, 12, 27, 24], [17, 3, 20, 11, 33], [31, 34, 0, 22, 10], [30, 15, 23, 28, 21],
                  [13, 8, 9, 18, 6], [1, 2, 32, 16, 14], [25, 4, 7, 5, 19]], np.float64)[None, None]
PYTORCH_AMAX = [[34, 34, 27, 33], [34, 34, 28, 28], [25, 32, 32, 19]]
PYTORCH_AMAX_GRAD = [[0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 4, 0, 0, 0], [0, 0, 0, 2, 0], [0, 0, 0, 0, 0],
                     [0, 0, 2, 0, 0], [1, 0, 0, 0, 1]]
PYTORCH_AAVG = [[23.3333333333, 16.3333333333, 15.3333333333, 21.1666666667],
                [21.8333333333, 14.8333333333, 16.6666666667, 17.5], [8.8333333333, 10.3333333333, 14.5, 13.0]]


@covers("adaptive_max_pool2d", "adaptive_max_pool2d_grad", "interpolate2d")
def test_adaptive_pools_match_pytorch_outputs() -> None:
    x = gn.placeholder("x", _PERM.shape, "float64")
    y = gn.adaptive_max_pool2d(x, (3, 4))
    got = compile_plan({"y": y, "g": gn.grad(gn.sum(y), x), "a": gn.adaptive_avg_pool2d(x, (3, 4))}).run(x=_PERM)
    np.testing.assert_array_equal(got["y"][0, 0], PYTORCH_AMAX)
    np.testing.assert_array_equal(got["g"][0, 0], PYTORCH_AMAX_GRAD)  # overlapping windows add up
    np.testing.assert_allclose(got["a"][0, 0], PYTORCH_AAVG, atol=1e-9)


ADAPTIVE = [((2, 3, 7, 5), (3, 4)), ((2, 3, 5, 5), (4, 4)), ((1, 2, 3, 4), (5, 6)), ((2, 3, 6, 8), (3, 4)),
            ((2, 3, 6, 8), (1, 1)), ((1, 2, 7, 9), (None, 4)), ((1, 2, 7, 9), 3)]


@covers("adaptive_max_pool2d", "adaptive_max_pool2d_grad")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,out", ADAPTIVE, ids=[f"{s}->{o}" for s, o in ADAPTIVE])
def test_adaptive_pools_against_numpy(shape: tuple, out: Any, dtype: str) -> None:
    xv = _distinct(*shape)
    pair = out if isinstance(out, tuple) else (out, out)
    target = tuple(shape[2 + i] if o is None else o for i, o in enumerate(pair))
    x = gn.placeholder("x", (None,) + shape[1:], dtype)
    g = gn.placeholder("g", (None, shape[1]) + target, dtype)
    mx = gn.nn.AdaptiveMaxPool2d(out)(x)
    av = gn.nn.AdaptiveAvgPool2d(out)(x)
    assert tuple(mx.shape) == tuple(av.shape) == (None, shape[1]) + target
    gv = R.standard_normal((shape[0], shape[1]) + target)
    plan = compile_plan({"max": mx, "avg": av, "gmax": gn.grad(gn.sum(mx * g), x), "gavg": gn.grad(gn.sum(av * g), x)})
    got = plan.run(x=xv.astype(dtype), g=gv.astype(dtype))
    want_max, want_gmax = _adaptive_max_ref(xv.astype(dtype).astype(np.float64), target, gv.astype(dtype))
    ah, aw = _area_matrix(shape[2], target[0]), _area_matrix(shape[3], target[1])
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_array_equal(got["max"], want_max.astype(dtype))
    np.testing.assert_allclose(got["gmax"], want_gmax, rtol=tol, atol=tol)
    np.testing.assert_allclose(got["avg"], np.einsum("oh,nchw,pw->ncop", ah, xv, aw), rtol=tol, atol=tol)
    np.testing.assert_allclose(got["gavg"], np.einsum("oh,ncop,pw->nchw", ah, gv, aw), rtol=tol, atol=tol)


@covers("adaptive_max_pool2d", "interpolate2d")
def test_adaptive_pools_take_unbatched_and_symbolic_inputs() -> None:
    xv = _distinct(3, 7, 5)
    x = gn.placeholder("x", (3, 7, 5), "float64")
    got = compile_plan({"m": gn.nn.AdaptiveMaxPool2d((3, 4))(x), "a": gn.nn.AdaptiveAvgPool2d((3, 4))(x)}).run(x=xv)
    np.testing.assert_array_equal(got["m"], _adaptive_max_ref(xv[None], (3, 4))[0][0])
    np.testing.assert_allclose(got["a"], _interpolate_ref(xv[None], (3, 4), "area")[0], rtol=1e-12)
    # symbolic spatial sizes: the windows are found at run time
    s = gn.placeholder("s", (None, 2, None, None), "float64")
    plan = compile_plan({"m": gn.adaptive_max_pool2d(s, 2), "a": gn.adaptive_avg_pool2d(s, (2, 3))})
    for shape in [(1, 2, 5, 7), (2, 2, 3, 3)]:
        sv = _distinct(*shape)
        out = plan.run(s=sv)
        np.testing.assert_array_equal(out["m"], _adaptive_max_ref(sv, (2, 2))[0])
        np.testing.assert_allclose(out["a"], _interpolate_ref(sv, (2, 3), "area"), rtol=1e-12)
    for bad, match in [(0, ">= 1"), ((2, 3, 4), "pair"), ("x", "pair")]:
        with pytest.raises(gn.ShapeError, match=match):
            gn.adaptive_max_pool2d(x, bad)
    with pytest.raises(gn.ShapeError, match="static"):
        gn.adaptive_avg_pool2d(s, (None, 2))
    with pytest.raises(gn.ShapeError, match="return_indices"):
        gn.nn.AdaptiveMaxPool2d(2, return_indices=True)
    with pytest.raises(gn.ShapeError, match=r"\(N, C, H, W\)"):
        gn.adaptive_max_pool2d(gn.placeholder("v", (3, 4), "float64"), 2)


def test_adaptive_max_pool_propagates_nan_as_pytorch() -> None:
    xv = _distinct(1, 1, 5, 5)
    xv[0, 0, 1, 1] = np.nan
    x = gn.placeholder("x", xv.shape, "float64")
    got = _run(gn.adaptive_max_pool2d(x, 2), x=xv)
    assert np.isnan(got[0, 0, 0, 0]) and not np.isnan(got[0, 0, 1, 1])


# --- gradients ------------------------------------------------------------------------------------------

GRADIENT_CASES: list[tuple[str, Callable[..., gn.Tensor], dict[str, np.ndarray]]] = [
    ("interpolate-nearest-7x5-to-3x4", lambda x: gn.interpolate(x, size=(3, 4)),
     {"x": R.standard_normal((2, 2, 7, 5))}),
    ("interpolate-nearest-scale-2", lambda x: gn.interpolate(x, scale_factor=2),
     {"x": R.standard_normal((1, 2, 3, 4))}),
    ("interpolate-nearest-exact", lambda x: gn.interpolate(x, size=(5, 7), mode="nearest-exact"),
     {"x": R.standard_normal((1, 2, 3, 4))}),
    ("interpolate-bilinear-up", lambda x: gn.interpolate(x, size=(7, 9), mode="bilinear"),
     {"x": R.standard_normal((1, 2, 3, 4))}),
    ("interpolate-bilinear-down", lambda x: gn.interpolate(x, size=(3, 2), mode="bilinear"),
     {"x": R.standard_normal((1, 2, 7, 5))}),
    ("interpolate-bilinear-corners-up", lambda x: gn.interpolate(x, size=(7, 9), mode="bilinear", align_corners=True),
     {"x": R.standard_normal((1, 2, 3, 4))}),
    ("interpolate-bilinear-corners-down", lambda x: gn.interpolate(x, size=(3, 2), mode="bilinear",
                                                                   align_corners=True),
     {"x": R.standard_normal((1, 2, 7, 5))}),
    ("interpolate-area", lambda x: gn.interpolate(x, size=(3, 4), mode="area"), {"x": R.standard_normal((1, 2, 7, 5))}),
    ("adaptive_avg_pool2d-7x5-to-3x4", lambda x: gn.adaptive_avg_pool2d(x, (3, 4)),
     {"x": R.standard_normal((2, 2, 7, 5))}),
    ("adaptive_avg_pool2d-5-to-4", lambda x: gn.adaptive_avg_pool2d(x, 4), {"x": R.standard_normal((1, 2, 5, 5))}),
    ("adaptive_max_pool2d-7x5-to-3x4", lambda x: gn.adaptive_max_pool2d(x, (3, 4)), {"x": _distinct(2, 2, 7, 5)}),
    ("adaptive_max_pool2d-5-to-4", lambda x: gn.adaptive_max_pool2d(x, 4), {"x": _distinct(1, 2, 5, 5)}),
    ("instance_norm-affine", lambda x, w, b: gn.instance_norm(x, weight=w, bias=b),
     {"x": R.standard_normal((2, 3, 4, 3)), "w": R.standard_normal(3), "b": R.standard_normal(3)}),
    ("rms_norm", lambda x, w: gn.rms_norm(x, (3, 4), w), {"x": R.standard_normal((2, 3, 4)),
                                                        "w": R.standard_normal((3, 4))}),
    ("prelu-channels", lambda x, w: gn.prelu(x, w),
     {"x": R.choice([-1.0, 1.0], (2, 3, 4)) * R.uniform(0.2, 2, (2, 3, 4)), "w": R.uniform(0.1, 0.5, 3)}),
    ("prelu-one", lambda x, w: gn.prelu(x, w), {"x": R.choice([-1.0, 1.0], (3, 4)) * R.uniform(0.2, 2, (3, 4)),
                                                "w": np.array([0.25])}),
    ("softplus-beta-threshold", lambda x: gn.softplus(x, 2.0, 3.0),
     {"x": np.array([[-3.0, -1.2, -0.3, 0.0, 0.4], [1.2, 1.4, 1.6, 2.0, 3.5]])}),
    ("mish", lambda x: gn.mish(x), {"x": R.standard_normal((3, 4)) * 3}),
    ("conv_transpose1d", lambda x, w, b: gn.conv_transpose1d(x, w, b, stride=2, padding=1, output_padding=1, groups=2,
                                                             dilation=2),
     {"x": R.standard_normal((2, 4, 5)), "w": R.standard_normal((4, 3, 3)), "b": R.standard_normal(6)}),
]


@pytest.mark.parametrize("build,feeds", [c[1:] for c in GRADIENT_CASES], ids=[c[0] for c in GRADIENT_CASES])
def test_gradients_match_finite_differences(build: Callable[..., gn.Tensor], feeds: dict) -> None:
    _check_gradients(build, feeds)


@covers("adaptive_max_pool2d_select", "interpolate2d_grad")
def test_gradient_penalties_differentiate_again() -> None:
    """Gradients of gradients: interpolate2d_grad's rule (interpolate2d) and adaptive_max_pool2d_grad's
    (adaptive_max_pool2d_select)."""
    for pool in (lambda x: gn.adaptive_max_pool2d(x, (3, 4)),
                 lambda x: gn.interpolate(x, size=(4, 7), mode="bilinear")):
        def penalty(x: gn.Tensor, pool: Callable = pool) -> gn.Tensor:
            g = gn.grad(gn.sum(pool(x) ** 3), x)
            return g * g
        _check_gradients(penalty, {"x": _distinct(1, 2, 7, 5) / 3})


# --- normalisation ---------------------------------------------------------------------------------------


def _instance_norm_ref(x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, eps: float = 1e-5) -> np.ndarray:
    axes = tuple(range(2, x.ndim))
    y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return y * (1 if w is None else w.reshape(shape)) + (0 if b is None else b.reshape(shape))


def test_instance_norm_layer() -> None:
    xv = R.standard_normal((2, 3, 4, 5)) * 3 + 1
    x = gn.placeholder("x", (None, 3, 4, 5), "float64")
    plain = gn.nn.InstanceNorm2d(3)
    assert plain.weight is None and plain.bias is None and list(plain.state_dict()) == []
    np.testing.assert_allclose(_run(plain(x), x=xv), _instance_norm_ref(xv, None, None), rtol=1e-10, atol=1e-12)
    affine = gn.nn.InstanceNorm2d(3, eps=1e-3, affine=True, dtype="float64")
    assert {k: v.shape for k, v in affine.state_dict().items()} == {"weight": (3,), "bias": (3,)}
    affine.weight.data, affine.bias.data = R.standard_normal(3), R.standard_normal(3)
    want = _instance_norm_ref(xv, affine.weight.data, affine.bias.data, 1e-3)
    np.testing.assert_allclose(_run(affine(x), x=xv), want, rtol=1e-10, atol=1e-12)
    # training and eval normalise alike (no running statistics)
    np.testing.assert_allclose(compile_plan({"o": affine(x)}, mode="train").run(x=xv)["o"], want, rtol=1e-10)
    unbatched = gn.placeholder("u", (3, 4, 5), "float64")
    np.testing.assert_allclose(_run(affine(unbatched), u=xv[0]), want[0], rtol=1e-10, atol=1e-12)
    assert list(gn.nn.InstanceNorm2d(3, affine=True, bias=False).state_dict()) == ["weight"]
    with pytest.raises(gn.ShapeError, match="track_running_stats"):
        gn.nn.InstanceNorm2d(3, track_running_stats=True)
    with pytest.raises(gn.ShapeError, match="InstanceNorm2d"):
        affine(gn.placeholder("bad", (2, 4, 4, 5), "float64"))
    with pytest.raises(gn.ShapeError, match="running statistics"):
        gn.instance_norm(x, gn.constant(np.zeros(3)), gn.constant(np.ones(3)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rms_norm_layer(dtype: str) -> None:
    eps = float(np.finfo(dtype).eps)
    xv = R.standard_normal((2, 3, 4)) * 1e-4 if dtype == "float32" else R.standard_normal((2, 3, 4)) * 1e-8
    x = gn.placeholder("x", (None, 3, 4), dtype)
    layer = gn.nn.RMSNorm([3, 4], dtype=dtype)
    assert layer.eps is None and {k: v.shape for k, v in layer.state_dict().items()} == {"weight": (3, 4)}
    layer.weight.data = R.standard_normal((3, 4)).astype(dtype)
    ref = xv / np.sqrt((xv ** 2).mean((1, 2), keepdims=True) + eps) * layer.weight.data
    # at these magnitudes eps=None (the dtype's machine epsilon) changes the result visibly
    assert np.max(np.abs(ref - xv / np.sqrt((xv ** 2).mean((1, 2), keepdims=True)) * layer.weight.data)) > 1e-3
    tol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(_run(layer(x), x=xv.astype(dtype)), ref, rtol=tol, atol=tol)
    last = gn.nn.RMSNorm(4, eps=1e-2, elementwise_affine=False)
    assert last.weight is None
    np.testing.assert_allclose(_run(last(x), x=xv.astype(dtype)),
                               xv / np.sqrt((xv ** 2).mean(-1, keepdims=True) + 1e-2), rtol=tol, atol=tol)
    with pytest.raises(gn.ShapeError, match="rms_norm"):
        gn.nn.RMSNorm(5)(x)


# --- dropout2d, activations, transposed convolution --------------------------------------------------------


@covers("dropout")
@pytest.mark.parametrize("shape", [(40, 50, 3, 2), (40, 50, 6)])
def test_dropout2d_zeroes_whole_channels(shape: tuple) -> None:
    p = 0.3
    x = gn.placeholder("x", (None,) + shape[1:], "float32")
    w = gn.placeholder("w", (None,) + shape[1:], "float32")
    layer = gn.nn.Dropout2d(p)
    assert repr(layer) == "Dropout2d(p=0.3)"
    y = layer(x)
    plan = compile_plan({"y": y, "g": gn.grad(gn.sum(y * w), x)}, mode="train", seed=5)
    xv = R.uniform(1.0, 2.0, shape).astype("float32")
    wv = R.uniform(1.0, 2.0, shape).astype("float32")
    first = plan.run(x=xv, w=wv)
    mask = (first["y"] / xv).reshape(shape[0], shape[1], -1)
    per_channel = mask[..., :1]
    np.testing.assert_allclose(mask, np.broadcast_to(per_channel, mask.shape), rtol=1e-6)  # one value per channel
    kept = per_channel[..., 0] != 0
    np.testing.assert_allclose(per_channel[kept], 1 / (1 - p), rtol=1e-6)
    assert abs((1 - kept.mean()) - p) < 5 * math.sqrt(p * (1 - p) / kept.size)
    np.testing.assert_allclose(first["g"], wv * mask.reshape(shape), rtol=1e-6)  # the backward reuses the mask
    again = compile_plan({"y": y, "g": gn.grad(gn.sum(y * w), x)}, mode="train", seed=5).run(x=xv, w=wv)
    np.testing.assert_array_equal(again["y"], first["y"])  # the plan's seeded random source
    assert not np.array_equal(plan.run(x=xv, w=wv)["y"], first["y"])
    layer.eval()
    np.testing.assert_array_equal(compile_plan({"y": layer(x)}).run(x=xv)["y"], xv)
    assert gn.dropout2d(x, 0.5, training=False) is x
    with pytest.raises(gn.ShapeError, match="dropout2d"):
        gn.dropout2d(gn.placeholder("v", (3, 4), "float32"))
    with pytest.raises(gn.ShapeError, match="probability"):
        gn.nn.Dropout2d(1.0)


@covers("softplus")
def test_activation_layers() -> None:
    xv = np.concatenate([np.linspace(-30, 30, 61), R.standard_normal(19) * 3]).reshape(4, 20)
    x = gn.placeholder("x", xv.shape, "float64")
    cases = {"Softplus()": (gn.nn.Softplus(), _softplus_ref(xv)),
             "Softplus(2, 5)": (gn.nn.Softplus(beta=2.0, threshold=5.0), _softplus_ref(xv, 2.0, 5.0)),
             "Mish": (gn.nn.Mish(), xv * np.tanh(np.log1p(np.exp(xv))))}
    for name, (layer, ref) in cases.items():
        np.testing.assert_allclose(_run(layer(x), x=xv), ref, rtol=1e-12, atol=1e-300, err_msg=name)
    assert repr(gn.nn.Softplus(beta=2.0, threshold=5.0)) == "Softplus(beta=2.0, threshold=5.0)"
    one = gn.nn.PReLU()
    assert {k: v.shape for k, v in one.state_dict().items()} == {"weight": (1,)}
    np.testing.assert_allclose(one.weight.data, [0.25])
    np.testing.assert_allclose(_run(one(gn.cast(x, "float32")), x=xv), np.where(xv > 0, xv, 0.25 * xv), rtol=1e-6)
    per = gn.nn.PReLU(3, init=0.1, dtype="float64")
    per.weight.data = np.array([0.1, -0.5, 2.0])
    img = R.standard_normal((2, 3, 4, 5))
    y = gn.placeholder("y", (None, 3, 4, 5), "float64")
    np.testing.assert_allclose(_run(per(y), y=img), np.where(img > 0, img, per.weight.data[None, :, None, None] * img))
    with pytest.raises(gn.ShapeError, match="prelu"):
        per(gn.placeholder("z", (2, 4, 5), "float64"))
    # large inputs: no overflow, x itself above the threshold (float32: exp(89) would be inf)
    big = gn.placeholder("b", (3,), "float32")
    with np.errstate(over="ignore"):  # exp(95) is inf in float32, as in PyTorch
        got = _run(gn.softplus(big, 1.0, 100.0), b=np.array([50.0, 95.0, 120.0], "float32"))
    np.testing.assert_array_equal(got, np.array([50.0, np.inf, 120.0], "float32"))


@covers("conv_transpose2d")
@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1, output_padding=1),
                                dict(stride=3, dilation=2, groups=2), dict(padding=2, bias=False)])
def test_conv_transpose1d_against_numpy(kw: dict) -> None:
    layer = gn.nn.ConvTranspose1d(4, 6, 3, dtype="float64", **kw)
    want_shapes = {"weight": (4, 6 // kw.get("groups", 1), 3)}
    if kw.get("bias", True):
        want_shapes["bias"] = (6,)
    assert {k: v.shape for k, v in layer.state_dict().items()} == want_shapes
    layer.weight.data = R.standard_normal(layer.weight.data.shape)
    xv = R.standard_normal((2, 4, 7))
    x = gn.placeholder("x", (None, 4, 7), "float64")
    got = _run(layer(x), x=xv)
    want = _conv_transpose1d_ref(xv, layer.weight.data, None if layer.bias is None else layer.bias.data,
                                 kw.get("stride", 1), kw.get("padding", 0), kw.get("output_padding", 0),
                                 kw.get("groups", 1), kw.get("dilation", 1))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(gn.ShapeError):
        layer(gn.placeholder("bad", (2, 4, 7, 1), "float64"))


# --- PyTorch state dicts and a small training run ------------------------------------------------------------


def test_pytorch_state_dict_loads() -> None:
    """Keys and shapes as PyTorch 2.13's state_dict of the same layers (converted to NumPy) name them."""
    model = gn.nn.Sequential(gn.nn.ConvTranspose1d(4, 6, 3, groups=2), gn.nn.PReLU(6),
                             gn.nn.InstanceNorm2d(3, affine=True), gn.nn.RMSNorm((2, 3)), gn.nn.PReLU(),
                             gn.nn.Upsample(scale_factor=2), gn.nn.AdaptiveMaxPool2d(2), gn.nn.Dropout2d(),
                             gn.nn.Softplus(), gn.nn.Mish())
    pytorch = {"0.weight": (4, 3, 3), "0.bias": (6,), "1.weight": (6,), "2.weight": (3,), "2.bias": (3,),
               "3.weight": (2, 3), "4.weight": (1,)}
    assert {k: v.shape for k, v in model.state_dict().items()} == pytorch
    state = {k: R.standard_normal(s).astype("float32") for k, s in pytorch.items()}
    assert model.load_state_dict(state) == ([], [])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k])


def test_a_small_model_trains() -> None:
    """Upsample, InstanceNorm2d, PReLU, Mish, Dropout2d and both adaptive pools in one network: SGD
    lowers the loss of a fixed batch."""
    gn.manual_seed(3)
    model = gn.nn.Sequential(
        gn.nn.Conv2d(1, 4, 3, padding=1), gn.nn.InstanceNorm2d(4, affine=True), gn.nn.PReLU(4),
        gn.nn.Upsample(scale_factor=2, mode="bilinear"), gn.nn.Dropout2d(0.1), gn.nn.Conv2d(4, 4, 3),
        gn.nn.Mish(), gn.nn.AdaptiveMaxPool2d((3, 5)), gn.nn.AdaptiveAvgPool2d(2), gn.nn.Flatten(),
        gn.nn.RMSNorm(16), gn.nn.Linear(16, 3), gn.nn.Softplus())
    x = gn.placeholder("x", (None, 1, 5, 6))
    y = gn.placeholder("y", (None,), "int64")
    train = compile_plan({"loss": gn.losses.cross_entropy(model(x), y)}, optimizer=gn.optim.SGD(lr=0.2), seed=0)
    xv = R.standard_normal((8, 1, 5, 6)).astype("float32")
    yv = np.arange(8) % 3
    losses = [float(train.run(x=xv, y=yv)["loss"]) for _ in range(30)]
    assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
