"""The layers a PyTorch user reaches for, against plain NumPy references (loops are fine here)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphnet as gn

from helpers import compile_plan, covers

R = np.random.default_rng(11)


def _run(out, **feeds):
    plan = compile_plan({"out": out}, mode="eval")
    return plan.run(**feeds)["out"]


def _conv2d_ref(x, w, stride=(1, 1), pad=((0, 0), (0, 0)), dil=(1, 1), groups=1):
    x = np.pad(x, ((0, 0), (0, 0)) + tuple(pad))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho = (h - dil[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd - dil[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, ho, wo))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(ho):
            for j in range(wo):
                patch = x[:, g * cg:(g + 1) * cg, i * stride[0]:i * stride[0] + dil[0] * (kh - 1) + 1:dil[0],
                          j * stride[1]:j * stride[1] + dil[1] * (kw - 1) + 1:dil[1]]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return out


@pytest.mark.parametrize("kernel", [(3, 3), (2, 3), (4, 4)])
def test_conv2d_same_and_valid_padding(kernel):
    xv, wv = R.standard_normal((2, 3, 6, 5)), R.standard_normal((4, 3) + kernel)
    x, w = gn.placeholder("x", xv.shape, "float64"), gn.placeholder("w", wv.shape, "float64")
    same = _run(gn.conv2d(x, w, padding="same"), x=xv, w=wv)
    totals = [k - 1 for k in kernel]
    pads = tuple((t // 2, t - t // 2) for t in totals)
    np.testing.assert_allclose(same, _conv2d_ref(xv, wv, pad=pads), rtol=1e-10, atol=1e-12)
    assert same.shape[2:] == xv.shape[2:]
    valid = _run(gn.conv2d(x, w, padding="valid"), x=xv, w=wv)
    np.testing.assert_allclose(valid, _conv2d_ref(xv, wv), rtol=1e-10, atol=1e-12)
    with pytest.raises(gn.ShapeError, match="stride 1"):
        gn.conv2d(x, w, stride=2, padding="same")


def test_conv1d_against_numpy():
    xv, wv, bv = R.standard_normal((2, 4, 9)), R.standard_normal((6, 2, 3)), R.standard_normal(6)
    layer = gn.nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2, dtype="float64")
    layer.weight.data, layer.bias.data = wv, bv
    got = _run(layer(gn.placeholder("x", (None, 4, 9), "float64")), x=xv)
    ref = _conv2d_ref(xv[:, :, None], wv[:, :, None], stride=(1, 2), pad=((0, 0), (1, 1)), groups=2)[:, :, 0]
    np.testing.assert_allclose(got, ref + bv[None, :, None], rtol=1e-10, atol=1e-12)


def _conv_transpose_ref(x, w, stride, pad, out_pad, groups=1, dil=(1, 1)):
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    ho = (h - 1) * stride[0] - 2 * pad[0] + dil[0] * (kh - 1) + out_pad[0] + 1
    wo = (wd - 1) * stride[1] - 2 * pad[1] + dil[1] * (kw - 1) + out_pad[1] + 1
    full = np.zeros((n, cog * groups, ho + 2 * pad[0] + kh * dil[0], wo + 2 * pad[1] + kw * dil[1]))
    cig = cin // groups
    for c in range(cin):
        g = c // cig
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for b in range(kw):
                        full[:, g * cog:(g + 1) * cog, i * stride[0] + a * dil[0], j * stride[1] + b * dil[1]] += \
                            x[:, c, i, j][:, None] * w[c, :, a, b][None, :]
    return full[:, :, pad[0]:pad[0] + ho, pad[1]:pad[1] + wo]


@covers("conv_transpose2d")
@pytest.mark.parametrize("kw", [{}, {"stride": 2, "padding": 1, "output_padding": 1}, {"groups": 2, "dilation": 2}])
def test_conv_transpose2d_against_numpy(kw):
    xv, wv, bv = R.standard_normal((2, 4, 3, 4)), R.standard_normal((4, 3, 3, 2)), R.standard_normal(6)
    groups = kw.get("groups", 1)
    layer = gn.nn.ConvTranspose2d(4, 3 * groups, (3, 2), dtype="float64", **kw)
    layer.weight.data = wv
    layer.bias.data = bv[:3 * groups]
    got = _run(layer(gn.placeholder("x", (None, 4, 3, 4), "float64")), x=xv)
    pair = lambda v: (v, v)  # noqa: E731
    ref = _conv_transpose_ref(xv, wv, pair(kw.get("stride", 1)), pair(kw.get("padding", 0)),
                              pair(kw.get("output_padding", 0)), groups, pair(kw.get("dilation", 1)))
    np.testing.assert_allclose(got, ref + bv[None, :3 * groups, None, None], rtol=1e-10, atol=1e-12)


def _pool_ref(x, k, s, p, d, ceil, op, include_pad=True):
    n, c, h, w = x.shape
    sizes = []
    for size, kk, ss, pp, dd in zip((h, w), k, s, p, d):
        span = size + 2 * pp - dd * (kk - 1) - 1
        out = (math.ceil(span / ss) if ceil else span // ss) + 1
        if ceil and (out - 1) * ss >= size + pp:
            out -= 1
        sizes.append(out)
    res = np.zeros((n, c) + tuple(sizes))
    for i in range(sizes[0]):
        for j in range(sizes[1]):
            rows = [i * s[0] - p[0] + a * d[0] for a in range(k[0])]
            cols = [j * s[1] - p[1] + b * d[1] for b in range(k[1])]
            vals, count = [], 0
            for r in rows:
                for q in cols:
                    inside = 0 <= r < h and 0 <= q < w
                    if inside:
                        vals.append(x[:, :, r, q])
                    if inside or (include_pad and -p[0] <= r < h + p[0] and -p[1] <= q < w + p[1]):
                        count += 1
            if op == "max":
                res[:, :, i, j] = np.max(vals, axis=0)
            else:
                res[:, :, i, j] = np.sum(vals, axis=0) / count
    return res


@pytest.mark.parametrize("k, s, p, d, ceil", [(2, 2, 0, 1, True), (3, 2, 1, 1, True), (2, 1, 0, 2, False),
                                              (3, 2, 1, 2, True), ((2, 3), (2, 1), (1, 1), (1, 1), True)])
def test_max_pool_options_against_numpy(k, s, p, d, ceil):
    xv = R.standard_normal((2, 2, 7, 6))
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    got = _run(gn.max_pool2d(gn.placeholder("x", xv.shape, "float64"), k, s, p, dilation=d, ceil_mode=ceil), x=xv)
    np.testing.assert_allclose(got, _pool_ref(xv, pair(k), pair(s), pair(p), pair(d), ceil, "max"))


@pytest.mark.parametrize("k, s, p, ceil, include", [(3, 2, 1, True, True), (3, 2, 1, False, False),
                                                    (3, 2, 1, True, False), (2, 2, 0, True, True)])
def test_avg_pool_options_against_numpy(k, s, p, ceil, include):
    xv = R.standard_normal((2, 2, 7, 6))
    out = gn.avg_pool2d(gn.placeholder("x", xv.shape, "float64"), k, s, p, ceil_mode=ceil, count_include_pad=include)
    np.testing.assert_allclose(_run(out, x=xv), _pool_ref(xv, (k, k), (s, s), (p, p), (1, 1), ceil, "avg", include),
                               rtol=1e-12)


def test_1d_pools_and_adaptive_pool():
    xv = R.standard_normal((2, 3, 9))
    x = gn.placeholder("x", xv.shape, "float64")
    got = _run(gn.nn.MaxPool1d(3, 2, 1, ceil_mode=True)(x), x=xv)
    np.testing.assert_allclose(got, _pool_ref(xv[:, :, None], (1, 3), (1, 2), (0, 1), (1, 1), True, "max")[:, :, 0])
    got = _run(gn.nn.AvgPool1d(2)(x), x=xv)
    np.testing.assert_allclose(got, xv[:, :, :8].reshape(2, 3, 4, 2).mean(-1))
    img = R.standard_normal((2, 3, 4, 6))
    y = gn.placeholder("y", (None, 3, 4, 6), "float64")
    np.testing.assert_allclose(_run(gn.nn.AdaptiveAvgPool2d(1)(y), y=img), img.mean((2, 3), keepdims=True))
    np.testing.assert_allclose(_run(gn.nn.AdaptiveAvgPool2d((2, 3))(y), y=img),
                               img.reshape(2, 3, 2, 2, 3, 2).mean((3, 5)))
    with pytest.raises(gn.ShapeError, match=">= 1"):  # sizes that do not divide: tests/test_layers_more.py
        gn.nn.AdaptiveAvgPool2d(0)(y)


def test_norm_layers_against_numpy():
    xv = R.standard_normal((4, 6, 3)) * 2 + 1
    x = gn.placeholder("x", (None, 6, 3), "float64")
    ln = gn.nn.LayerNorm((6, 3), dtype="float64")
    ln.weight.data, ln.bias.data = R.standard_normal((6, 3)), R.standard_normal((6, 3))
    mu, var = xv.mean((1, 2), keepdims=True), xv.var((1, 2), keepdims=True)
    np.testing.assert_allclose(_run(ln(x), x=xv), (xv - mu) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data,
                               rtol=1e-10)
    gnorm = gn.nn.GroupNorm(3, 6, dtype="float64")
    gnorm.weight.data, gnorm.bias.data = R.standard_normal(6), R.standard_normal(6)
    grouped = xv.reshape(4, 3, 2, 3)
    ref = ((grouped - grouped.mean((2, 3), keepdims=True)) / np.sqrt(grouped.var((2, 3), keepdims=True) + 1e-5))
    ref = ref.reshape(4, 6, 3) * gnorm.weight.data[None, :, None] + gnorm.bias.data[None, :, None]
    np.testing.assert_allclose(_run(gnorm(x), x=xv), ref, rtol=1e-10)
    bn = gn.nn.BatchNorm1d(6, dtype="float64")
    train = compile_plan({"out": bn(x)}, mode="train")
    out = train.run(x=xv)["out"]
    np.testing.assert_allclose(out, (xv - xv.mean((0, 2), keepdims=True)) / np.sqrt(xv.var((0, 2), keepdims=True)
                                                                                    + 1e-5), rtol=1e-9)
    np.testing.assert_allclose(bn.running_var.data, 0.9 + 0.1 * xv.var((0, 2), ddof=1), rtol=1e-10)
    flat = gn.placeholder("f", (None, 6), "float64")
    assert gn.compile({"o": bn(flat)}, mode="eval").run(f=np.ones((2, 6)))["o"].shape == (2, 6)
    with pytest.raises(gn.ShapeError, match="BatchNorm1d"):
        bn(gn.placeholder("img", (2, 6, 3, 3), "float64"))


@covers("embedding", "embedding_grad")
def test_embedding_gathers_and_its_gradient_scatters():
    gn.manual_seed(0)
    emb = gn.nn.Embedding(5, 3, padding_idx=0, dtype="float64")
    assert np.all(emb.weight.data[0] == 0) and emb.weight.data[1:].std() > 0.3
    idx = gn.placeholder("idx", (None, 3), "int64")
    w = gn.placeholder("w", (None, 3, 3), "float64")
    out = emb(idx)
    loss = gn.sum(out * w)
    plan = compile_plan({"out": out, "g": gn.grad(loss, emb.weight)})
    iv, wv = np.array([[0, 4, 4], [2, 0, 1]]), R.standard_normal((2, 3, 3))
    got = plan.run(idx=iv, w=wv)
    np.testing.assert_array_equal(got["out"], emb.weight.data[iv])
    expected = np.zeros((5, 3))
    np.add.at(expected, iv.reshape(-1), wv.reshape(-1, 3))
    expected[0] = 0  # the padding row gets no gradient
    np.testing.assert_allclose(got["g"], expected)
    with pytest.raises(gn.FeedError, match=r"indices must lie in \[0, 5\)"):
        plan.run(idx=np.array([[5, 0, 0]]), w=wv[:1])


def test_activation_layers():
    xv = R.standard_normal((3, 4))
    x = gn.placeholder("x", xv.shape, "float64")
    cases = {gn.nn.SiLU(): xv / (1 + np.exp(-xv)), gn.nn.LogSoftmax(dim=1): xv - np.log(np.exp(xv).sum(1))[:, None],
             gn.nn.Tanh(): np.tanh(xv), gn.nn.Sigmoid(): 1 / (1 + np.exp(-xv)), gn.nn.ELU(0.5):
             np.where(xv > 0, xv, 0.5 * np.expm1(xv)), gn.nn.LeakyReLU(0.2): np.where(xv > 0, xv, 0.2 * xv),
             gn.nn.Softmax(0): np.exp(xv) / np.exp(xv).sum(0), gn.nn.Identity(): xv}
    for layer, ref in cases.items():
        np.testing.assert_allclose(_run(layer(x), x=xv), ref, rtol=1e-7, err_msg=type(layer).__name__)
    gelu = _run(gn.nn.GELU()(x), x=xv)
    from math import erf

    np.testing.assert_allclose(gelu, [[v * 0.5 * (1 + erf(v / math.sqrt(2))) for v in row] for row in xv], rtol=1e-7)
