"""Tests for graphnet.ops.conv_kernels against direct-loop references."""

import itertools
import math

import numpy as np
import pytest

from graphnet.ops import conv_kernels as ck

xp = np


# ----------------------------------------------------------------------------
# direct-loop references (float64)
# ----------------------------------------------------------------------------


def _out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def ref_conv2d(x, w, stride, padding, dilation, groups):
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = _out(H, kh, sh, ph, dh), _out(W, kw, sw, pw, dw)
    Og = O // groups
    xpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    out = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            gi = o // Og
            for p in range(Ho):
                for q in range(Wo):
                    acc = 0.0
                    for c in range(Cg):
                        for i in range(kh):
                            for j in range(kw):
                                acc += (xpad[n, gi * Cg + c, p * sh + i * dh, q * sw + j * dw]
                                        * w[o, c, i, j])
                    out[n, o, p, q] = acc
    return out


def ref_conv2d_grads(x, w, g, stride, padding, dilation, groups):
    """Direct-loop adjoint: returns (dx, dw)."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = g.shape[2:]
    Og = O // groups
    xpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    dxpad = np.zeros_like(xpad)
    dwt = np.zeros_like(w)
    for n in range(N):
        for o in range(O):
            gi = o // Og
            for p in range(Ho):
                for q in range(Wo):
                    gv = g[n, o, p, q]
                    for c in range(Cg):
                        for i in range(kh):
                            for j in range(kw):
                                r, s = p * sh + i * dh, q * sw + j * dw
                                dxpad[n, gi * Cg + c, r, s] += gv * w[o, c, i, j]
                                dwt[o, c, i, j] += gv * xpad[n, gi * Cg + c, r, s]
    return dxpad[:, :, ph:ph + H, pw:pw + W], dwt


def _pool_windows(x, k, s, p, fill):
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    xpad = np.full((N, C, H + 2 * ph, W + 2 * pw), fill)
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    for n, c, a, b in itertools.product(range(N), range(C), range(Ho), range(Wo)):
        r0, c0 = a * sh, b * sw
        yield (n, c, a, b, r0, c0), xpad[n, c, r0:r0 + kh, c0:c0 + kw]


def ref_max_pool(x, k, s, p):
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1
    out = np.zeros((N, C, Ho, Wo))
    for (n, c, a, b, _, _), win in _pool_windows(x, k, s, p, -np.inf):
        out[n, c, a, b] = win.max()
    return out


def ref_max_pool_grad(g, x, k, s, p):
    N, C, H, W = x.shape
    (ph, pw) = p
    dxpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for (n, c, a, b, r0, c0), win in _pool_windows(x, k, s, p, -np.inf):
        i, j = np.unravel_index(np.argmax(win), win.shape)  # first max, row-major
        dxpad[n, c, r0 + i, c0 + j] += g[n, c, a, b]
    return dxpad[:, :, ph:ph + H, pw:pw + W]


def ref_avg_pool(x, k, s, p):
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1
    out = np.zeros((N, C, Ho, Wo))
    for (n, c, a, b, _, _), win in _pool_windows(x, k, s, p, 0.0):
        out[n, c, a, b] = win.sum() / (k[0] * k[1])
    return out


def ref_avg_pool_grad(g, x, k, s, p):
    N, C, H, W = x.shape
    (kh, kw), (ph, pw) = k, p
    dxpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for (n, c, a, b, r0, c0), _ in _pool_windows(x, k, s, p, 0.0):
        dxpad[n, c, r0:r0 + kh, c0:c0 + kw] += g[n, c, a, b] / (kh * kw)
    return dxpad[:, :, ph:ph + H, pw:pw + W]


# ----------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------

# (N, C, H, W, O, kh, kw, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 3, 7, 6, 4, 3, 2, (1, 1), (0, 0), (1, 1), 1),     # flat layout
    (2, 4, 9, 8, 6, 3, 3, (2, 1), (1, 2), (1, 1), 2),     # groups=2, strided
    (1, 4, 10, 9, 4, 3, 3, (1, 1), (2, 1), (2, 1), 4),    # depthwise, dilation
    (2, 3, 6, 7, 6, 2, 3, (1, 2), (1, 1), (1, 1), 3),     # depthwise x2 multiplier
    (3, 2, 6, 5, 3, 1, 1, (1, 1), (0, 0), (1, 1), 1),     # 1x1
    (2, 2, 11, 10, 3, 2, 3, (3, 2), (1, 0), (1, 2), 1),   # leftover rows/cols
    (2, 2, 6, 7, 3, 2, 5, (1, 1), (0, 0), (1, 1), 1),     # stride 1, standard layout
    (2, 1, 12, 12, 3, 5, 5, (1, 1), (0, 0), (1, 1), 1),   # MNIST-like
    (2, 2, 3, 4, 2, 3, 4, (1, 1), (0, 0), (1, 1), 1),     # kernel == input
    (1, 2, 5, 6, 4, 3, 3, (2, 2), (2, 2), (2, 2), 2),     # everything at once
    (2, 2, 7, 9, 2, 2, 3, (2, 1), (0, 1), (1, 2), 1),     # sw == 1 with dw == 2
    (2, 8, 6, 5, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1),     # many channels (nhwc)
    (2, 4, 7, 8, 4, 3, 3, (2, 2), (1, 1), (1, 1), 2),     # nhwc with groups
    (2, 4, 7, 8, 5, 1, 1, (2, 2), (0, 0), (1, 1), 1),     # 1x1 strided (a residual shortcut)
]


def test_conv_cases_cover_all_layouts():
    layouts = set()
    for N, C, H, W, O, kh, kw, s, p, d, G in CONV_CASES:
        layouts.add(ck._ConvGeom((N, C, H, W), (O, C // G, kh, kw), s, p, d, G).layout)
    assert layouts == {"flat", "nhwc", "std"}


def _conv_attrs(case):
    return dict(stride=case[7], padding=case[8], dilation=case[9], groups=case[10])


def _conv_inputs(case, seed=0):
    N, C, H, W, O, kh, kw = case[:7]
    groups = case[10]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // groups, kh, kw))
    return x, w


@pytest.fixture(scope="module", params=range(len(CONV_CASES)), ids=lambda i: f"case{i}")
def conv_case(request):
    case = CONV_CASES[request.param]
    x, w = _conv_inputs(case, seed=request.param)
    a = _conv_attrs(case)
    y_ref = ref_conv2d(x, w, a["stride"], a["padding"], a["dilation"], a["groups"])
    g = np.random.default_rng(100 + request.param).standard_normal(y_ref.shape)
    dx_ref, dw_ref = ref_conv2d_grads(x, w, g, a["stride"], a["padding"],
                                      a["dilation"], a["groups"])
    return case, x, w, g, a, y_ref, dx_ref, dw_ref


def test_conv2d_forward(conv_case):
    _, x, w, _, a, y_ref, _, _ = conv_case
    y = ck.conv2d(xp, x, w, **a)
    assert y.shape == y_ref.shape and y.dtype == np.float64
    assert y.flags.c_contiguous
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)


def test_conv2d_grad_input(conv_case):
    _, x, w, g, a, y_ref, dx_ref, _ = conv_case
    dx = ck.conv2d_grad_input(xp, g, w, x, **a)
    assert dx.shape == x.shape and dx.dtype == np.float64
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-12)
    # adjoint identity <conv(x), g> == <x, grad_input(g)>
    assert abs(np.vdot(y_ref, g) - np.vdot(x, dx)) <= 1e-10


def test_conv2d_grad_weight(conv_case):
    _, x, w, g, a, y_ref, _, dw_ref = conv_case
    dw = ck.conv2d_grad_weight(xp, x, g, w, **a)
    assert dw.shape == w.shape and dw.dtype == np.float64
    np.testing.assert_allclose(dw, dw_ref, rtol=0, atol=1e-12)
    assert abs(np.vdot(y_ref, g) - np.vdot(w, dw)) <= 1e-10


def test_conv2d_grads_finite_differences():
    case = CONV_CASES[2]
    x, w = _conv_inputs(case, seed=7)
    a = _conv_attrs(case)
    g = np.random.default_rng(8).standard_normal(ck.conv2d(xp, x, w, **a).shape)

    def loss(xx, ww):
        return np.vdot(ck.conv2d(xp, xx, ww, **a), g)

    dx = ck.conv2d_grad_input(xp, g, w, x, **a)
    dw = ck.conv2d_grad_weight(xp, x, g, w, **a)
    eps = 1e-6
    rng = np.random.default_rng(9)
    for _ in range(5):
        idx = tuple(rng.integers(0, s) for s in x.shape)
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += eps
        xm[idx] -= eps
        assert abs((loss(xp_, w) - loss(xm, w)) / (2 * eps) - dx[idx]) < 1e-6
        idx = tuple(rng.integers(0, s) for s in w.shape)
        wp, wm = w.copy(), w.copy()
        wp[idx] += eps
        wm[idx] -= eps
        assert abs((loss(x, wp) - loss(x, wm)) / (2 * eps) - dw[idx]) < 1e-6


def test_conv2d_non_contiguous_input():
    case = CONV_CASES[1]
    x, w = _conv_inputs(case)
    a = _conv_attrs(case)
    xt = np.asfortranarray(x)
    np.testing.assert_allclose(ck.conv2d(xp, xt, w, **a), ck.conv2d(xp, x, w, **a),
                               rtol=0, atol=1e-13)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[1], CONV_CASES[2],
                                  CONV_CASES[6]])
def test_conv2d_float32(case):
    x, w = _conv_inputs(case)
    a = _conv_attrs(case)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    y = ck.conv2d(xp, x32, w32, **a)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ck.conv2d(xp, x, w, **a), rtol=1e-4, atol=1e-4)
    g32 = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    dx = ck.conv2d_grad_input(xp, g32, w32, x32, **a)
    dw = ck.conv2d_grad_weight(xp, x32, g32, w32, **a)
    assert dx.dtype == np.float32 and dw.dtype == np.float32
    g = g32.astype(np.float64)
    np.testing.assert_allclose(dx, ck.conv2d_grad_input(xp, g, w, x, **a),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, ck.conv2d_grad_weight(xp, x, g, w, **a),
                               rtol=1e-4, atol=1e-4)


def test_conv2d_bad_shapes():
    x = np.zeros((1, 4, 5, 5))
    with pytest.raises(ValueError):
        ck.conv2d(xp, x, np.zeros((3, 2, 3, 3)), stride=(1, 1), padding=(0, 0),
                  dilation=(1, 1), groups=2)  # O not divisible by groups
    with pytest.raises(ValueError):
        ck.conv2d(xp, x, np.zeros((2, 4, 7, 7)), stride=(1, 1), padding=(0, 0),
                  dilation=(1, 1), groups=1)  # kernel too large


# ----------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------

# (N, C, H, W, kernel, stride, padding)
POOL_CASES = [
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0)),   # non-overlapping (hot case shape)
    (2, 2, 9, 7, (2, 2), (2, 2), (0, 0)),   # non-overlapping with leftovers
    (2, 2, 7, 8, (3, 3), (1, 1), (1, 1)),   # overlapping, padded
    (1, 3, 9, 10, (3, 2), (2, 1), (1, 0)),  # overlapping, non-square
    (2, 2, 10, 9, (2, 3), (3, 2), (1, 1)),  # stride > kernel in H
    (1, 2, 5, 6, (1, 1), (1, 1), (0, 0)),   # identity pooling
    (1, 2, 6, 5, (3, 1), (2, 1), (1, 0)),   # kw == 1
    (2, 1, 5, 9, (1, 3), (1, 2), (0, 1)),   # kh == 1, overlapping in W
    (1, 2, 8, 8, (4, 4), (4, 4), (0, 0)),   # non-overlapping 4x4 (uint8 arg-max)
]


def _pool_attrs(case):
    return dict(kernel_size=case[4], stride=case[5], padding=case[6])


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool(case, ties):
    N, C, H, W = case[:4]
    a = _pool_attrs(case)
    rng = np.random.default_rng(3)
    if ties:
        x = rng.integers(-1, 2, size=(N, C, H, W)).astype(np.float64)
    else:
        x = rng.standard_normal((N, C, H, W))
    y = ck.max_pool2d(xp, x, **a)
    y_ref = ref_max_pool(x, a["kernel_size"], a["stride"], a["padding"])
    assert y.shape == y_ref.shape and y.dtype == np.float64
    np.testing.assert_array_equal(y, y_ref)
    assert not np.shares_memory(y, x)
    g = rng.standard_normal(y.shape)
    dx = ck.max_pool2d_grad(xp, g, x, **a)
    dx_ref = ref_max_pool_grad(g, x, a["kernel_size"], a["stride"], a["padding"])
    assert dx.shape == x.shape and dx.dtype == np.float64
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-12)


def test_max_pool_negative_values_with_padding():
    # all-negative input: padding (-inf) must never win
    x = -np.random.default_rng(0).random((1, 2, 5, 5)) - 1.0
    a = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
    np.testing.assert_array_equal(ck.max_pool2d(xp, x, **a),
                                  ref_max_pool(x, (3, 3), (2, 2), (1, 1)))
    g = np.ones((1, 2, 3, 3))
    dx = ck.max_pool2d_grad(xp, g, x, **a)
    np.testing.assert_allclose(dx, ref_max_pool_grad(g, x, (3, 3), (2, 2), (1, 1)))
    assert dx.sum() == g.sum()


@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool(case):
    N, C, H, W = case[:4]
    a = _pool_attrs(case)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, C, H, W))
    y = ck.avg_pool2d(xp, x, **a)
    y_ref = ref_avg_pool(x, a["kernel_size"], a["stride"], a["padding"])
    assert y.shape == y_ref.shape and y.dtype == np.float64
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-13)
    assert not np.shares_memory(y, x)
    g = rng.standard_normal(y.shape)
    dx = ck.avg_pool2d_grad(xp, g, x, **a)
    dx_ref = ref_avg_pool_grad(g, x, a["kernel_size"], a["stride"], a["padding"])
    assert dx.shape == x.shape and dx.dtype == np.float64
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-13)
    assert abs(np.vdot(y, g) - np.vdot(x, dx)) <= 1e-10


@pytest.mark.parametrize("case", [POOL_CASES[0], POOL_CASES[2], POOL_CASES[3]])
def test_pool_float32(case):
    N, C, H, W = case[:4]
    a = _pool_attrs(case)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    for fwd, bwd in [(ck.max_pool2d, ck.max_pool2d_grad),
                     (ck.avg_pool2d, ck.avg_pool2d_grad)]:
        y = fwd(xp, x, **a)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, fwd(xp, x.astype(np.float64), **a),
                                   rtol=1e-6, atol=1e-6)
        g = rng.standard_normal(y.shape).astype(np.float32)
        dx = bwd(xp, g, x, **a)
        assert dx.dtype == np.float32 and dx.shape == x.shape
        np.testing.assert_allclose(
            dx, bwd(xp, g.astype(np.float64), x.astype(np.float64), **a),
            rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------
# erf
# ----------------------------------------------------------------------------


def test_erf_float64_dense_grid():
    x = np.linspace(-8.0, 8.0, 160001)
    ref = np.array([math.erf(v) for v in x])
    y = ck.erf(xp, x)
    assert y.dtype == np.float64 and y.shape == x.shape
    assert np.abs(y - ref).max() <= 1e-13
    # around the branch switch and in the tails
    x2 = np.concatenate([np.linspace(1.99, 2.01, 2001), -np.linspace(1.99, 2.01, 2001),
                         np.array([0.0, -0.0, 1e-300, 5.9, 6.0, 6.1, 30.0, -30.0])])
    ref2 = np.array([math.erf(v) for v in x2])
    assert np.abs(ck.erf(xp, x2) - ref2).max() <= 1e-13


def test_erf_special_values_and_shapes():
    y = ck.erf(xp, np.array([np.inf, -np.inf, np.nan, 0.0]))
    assert y[0] == 1.0 and y[1] == -1.0 and np.isnan(y[2]) and y[3] == 0.0
    z = ck.erf(xp, np.float64(0.5))
    assert abs(float(z) - math.erf(0.5)) < 1e-15
    m = ck.erf(xp, np.linspace(-3, 3, 24).reshape(2, 3, 4))
    assert m.shape == (2, 3, 4)


def test_erf_float32():
    x = np.linspace(-8.0, 8.0, 20001).astype(np.float32)
    ref = np.array([math.erf(float(v)) for v in x])
    y = ck.erf(xp, x)
    assert y.dtype == np.float32
    assert np.abs(y.astype(np.float64) - ref).max() <= 1e-6
