"""Attention (issue 24): the one-op ``scaled_dot_product_attention`` and its blocked kernels, and the
Transformer layers built on it, against plain NumPy references written here in float64.

The op's kernels run over blocks of query rows and key columns with an online softmax: the tests
force small blocks (several row and key blocks, every masking case) and compare with the whole
softmax(q k^T * scale + mask) v; float64 finite differences check the gradient op (and its own
gradient); tracemalloc checks that the kernels' temporaries stay the size of a block, not of the
(L, S) scores. The layers (PyTorch's names, arguments and parameter names, the state-dict keys of
PyTorch 2.13 listed literally) are checked against NumPy implementations of PyTorch's formulas.
"""

from __future__ import annotations

import math
import tracemalloc
from typing import Any, Callable

import numpy as np
import pytest

import graphnet as gn
from graphnet.ops import attention as A

from helpers import compile_plan, covers, finite_difference, only_feeds, rel_error

R = np.random.default_rng(24)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 16 query rows by 8 key columns (and no plain path): several of each in every test."""
    monkeypatch.setattr(A, "PLAIN_ELEMENTS", 0)
    monkeypatch.setattr(A, "BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(A, "BLOCK_KEYS", 8)
    monkeypatch.setattr(A, "MIN_ROWS", 16)


# --- NumPy references ---------------------------------------------------------------------------------


def _softmax(s: np.ndarray) -> np.ndarray:
    """Along the last axis; a row of -inf only gives zeros (what the op gives a row that sees no key)."""
    top = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isneginf(top), 0.0, top))
    total = e.sum(axis=-1, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)


def ref_scores(q: np.ndarray, k: np.ndarray, masks: tuple = (), causal: bool = False,
               scale: float | None = None) -> np.ndarray:
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    for m in masks:
        s = np.where(m, s, -np.inf) if m.dtype == bool else s + m
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    return s


def ref_sdpa(q: np.ndarray, k: np.ndarray, v: np.ndarray, masks: tuple = (), causal: bool = False,
             scale: float | None = None) -> np.ndarray:
    return _softmax(ref_scores(q, k, masks, causal, scale)) @ v


# --- the op's forward ------------------------------------------------------------------------------------

#: (id, q shape, k shape, v shape, masks (a factory each), causal, scale)
FORWARD = [
    ("plain", (2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6), (), False, None),
    ("long-keys", (2, 37, 4), (2, 61, 4), (2, 61, 3), (), False, 0.3),
    ("long-queries-causal", (1, 2, 50, 4), (1, 2, 20, 4), (1, 2, 20, 5), (), True, None),
    ("causal-more-keys", (2, 21, 3), (2, 45, 3), (2, 45, 2), (), True, None),
    ("bool-mask", (2, 2, 33, 4), (2, 2, 29, 4), (2, 2, 29, 4), (lambda L, S: R.random((L, S)) > 0.4,), False, None),
    ("float-mask-batched", (3, 19, 4), (3, 27, 4), (3, 27, 2), (lambda L, S: R.standard_normal((3, L, S)),), False,
     None),
    ("padding-and-float", (2, 2, 18, 4), (2, 2, 26, 4), (2, 2, 26, 3),
     (lambda L, S: (R.random((2, 1, 1, S)) > 0.3) | (np.arange(S) == 0), lambda L, S: R.standard_normal((L, 1))),
     False, None),
    ("mask-and-causal", (2, 30, 4), (2, 30, 4), (2, 30, 4), (lambda L, S: R.standard_normal((1, S)),), True, None),
    ("broadcast-batch", (4, 1, 17, 4), (1, 3, 23, 4), (4, 3, 23, 2), (), False, None),
]


def _forward_case(qs: tuple, ks: tuple, vs: tuple, mask_fns: tuple, dtype: str) -> tuple[dict, list]:
    feeds = {"q": R.standard_normal(qs), "k": R.standard_normal(ks), "v": R.standard_normal(vs)}
    masks = [fn(qs[-2], ks[-2]) for fn in mask_fns]
    for i, m in enumerate(masks):
        feeds[f"m{i}"] = m
    return {n: (a.astype(dtype) if a.dtype != bool else a) for n, a in feeds.items()}, masks


@covers("scaled_dot_product_attention")
@pytest.mark.parametrize("blocks", ["default", "small"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", FORWARD, ids=[c[0] for c in FORWARD])
def test_forward_matches_the_whole_softmax(case: tuple, dtype: str, blocks: str, request: Any) -> None:
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    _, qs, ks, vs, mask_fns, causal, scale = case
    feeds, masks = _forward_case(qs, ks, vs, mask_fns, dtype)
    ph = {n: gn.placeholder(n, a.shape, a.dtype.name) for n, a in feeds.items()}
    ms = [ph[f"m{i}"] for i in range(len(masks))]
    y = A.attention(ph["q"], ph["k"], ph["v"], ms, causal=causal, scale=scale)
    got = compile_plan({"y": y}).run(feeds)["y"]
    f64 = {n: a.astype(np.float64) if a.dtype != bool else a for n, a in feeds.items()}
    want = ref_sdpa(f64["q"], f64["k"], f64["v"], tuple(f64[f"m{i}"] for i in range(len(masks))), causal, scale)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@covers("scaled_dot_product_attention")
def test_functional_form_takes_pytorchs_arguments() -> None:
    qv, kv, vv = R.standard_normal((2, 4, 3)), R.standard_normal((2, 6, 3)), R.standard_normal((2, 6, 5))
    q, k, v = (gn.placeholder(n, a.shape, "float64") for n, a in (("q", qv), ("k", kv), ("v", vv)))
    bool_mask = R.random((4, 6)) > 0.3
    float_mask = R.standard_normal((4, 6))
    got = compile_plan({
        "bool": gn.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask),
        "float": gn.scaled_dot_product_attention(q, k, v, gn.constant(float_mask)),
        "causal": gn.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.25),
        "dropout-off": gn.scaled_dot_product_attention(q, k, v, dropout_p=0.5, training=False),
    }).run(q=qv, k=kv, v=vv)
    np.testing.assert_allclose(got["bool"], ref_sdpa(qv, kv, vv, (bool_mask,)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["float"], ref_sdpa(qv, kv, vv, (float_mask,)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["causal"], ref_sdpa(qv, kv, vv, causal=True, scale=0.25), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["dropout-off"], ref_sdpa(qv, kv, vv), rtol=1e-12, atol=1e-12)


@covers("scaled_dot_product_attention")
def test_a_row_that_sees_no_key_gives_zeros_and_no_gradient(small_blocks: None) -> None:
    """As PyTorch 2.13's SDPA: a fully masked row is 0 (the softmax of the textbook would be NaN)."""
    qv, kv, vv = R.standard_normal((2, 20, 3)), R.standard_normal((2, 12, 3)), R.standard_normal((2, 12, 2))
    mask = R.random((20, 12)) > 0.3
    mask[[3, 17]] = False
    q, k, v = (gn.placeholder(n, a.shape, "float64") for n, a in (("q", qv), ("k", kv), ("v", vv)))
    y = gn.scaled_dot_product_attention(q, k, v, mask)
    gq, gk, gv = gn.grad(gn.sum(y * y), [q, k, v])
    got = compile_plan({"y": y, "gq": gq, "gk": gk, "gv": gv}).run(q=qv, k=kv, v=vv)
    assert np.all(np.isfinite(got["y"])) and np.all(got["y"][:, [3, 17]] == 0)
    checked = compile_plan({"y": y, "gq": gq}, check_numerics=True).run(q=qv, k=kv, v=vv)  # nothing non-finite
    np.testing.assert_array_equal(checked["gq"], got["gq"])
    np.testing.assert_allclose(got["y"], ref_sdpa(qv, kv, vv, (mask,)), rtol=1e-12, atol=1e-12)
    assert np.all(got["gq"][:, [3, 17]] == 0) and all(np.all(np.isfinite(got[n])) for n in ("gk", "gv"))


def test_blocks_and_the_plain_path_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same values (to rounding) whatever the blocks, dropout masks included: a mask element
    depends on the seed and its position only."""
    q, k, v = R.standard_normal((2, 3, 40, 4)), R.standard_normal((2, 3, 50, 4)), R.standard_normal((2, 3, 50, 5))
    g = R.standard_normal((2, 3, 40, 5))
    mask = R.standard_normal((40, 50))
    results = []
    for plain, keys, rows in ((1 << 30, 256, 16), (0, 8, 16), (0, 16, 7), (0, 50, 40)):
        monkeypatch.setattr(A, "PLAIN_ELEMENTS", plain)
        monkeypatch.setattr(A, "BLOCK_ELEMENTS", 1)
        monkeypatch.setattr(A, "BLOCK_KEYS", keys)
        monkeypatch.setattr(A, "MIN_ROWS", rows)
        for causal in (False, True):
            o, lse = A.attention_forward(np, q, k, v, [mask], 0.4, causal, 0.3, 77)
            grads = A.attention_backward(np, q, k, v, [mask], o, lse, g, 0.4, causal, 0.3, 77, (True,))
            results.append((causal, o, lse) + grads)
    for result in results[2:]:
        first = results[0] if not result[0] else results[1]
        for a, b in zip(result[1:], first[1:]):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


# --- gradients -------------------------------------------------------------------------------------------


def _check_gradients(build: Callable[..., gn.Tensor], feeds: dict[str, np.ndarray], params: tuple = (),
                     tol: float = 1e-6, eps: float = 1e-6) -> None:
    """sum(build(...) * W), W fixed and random: gn.grad against central differences of the compiled
    forward plan, for every float feed and every parameter in ``params`` (perturbed in place)."""
    ph = {n: gn.placeholder(n, a.shape, a.dtype.name) for n, a in feeds.items()}
    out = build(**ph)
    weight = R.uniform(0.5, 1.5, out.shape) * R.choice([-1.0, 1.0], out.shape)
    y = gn.sum(out * gn.constant(weight))
    wrt = [n for n, a in feeds.items() if a.dtype.kind == "f"]
    grads = gn.grad(y, [ph[n] for n in wrt] + [p for _, p in params])
    plan = compile_plan({f"g{i}": g for i, g in enumerate(grads)})
    analytic = plan.run(only_feeds(plan, feeds))
    forward = compile_plan({"y": y})
    numeric = [finite_difference(forward, "y", feeds, n, eps) for n in wrt]
    for _, p in params:
        value = p.data
        d = np.zeros(value.shape)
        for idx in np.ndindex(value.shape):
            orig = value[idx]
            value[idx] = orig + eps
            plus = float(forward.run(only_feeds(forward, feeds))["y"])
            value[idx] = orig - eps
            minus = float(forward.run(only_feeds(forward, feeds))["y"])
            value[idx] = orig
            d[idx] = (plus - minus) / (2 * eps)
        numeric.append(d)
    names = wrt + [n for n, _ in params]
    scale = max(float(np.max(np.abs(n))) for n in numeric)
    for i, (name, num) in enumerate(zip(names, numeric)):
        err = rel_error(analytic[f"g{i}"], num, 1e-4 * scale)
        assert err <= tol, f"d/d{name}: relative error {err:.3g}\nanalytic\n{analytic[f'g{i}']}\nnumeric\n{num}"


GRADIENTS = [
    ("plain", lambda q, k, v: gn.scaled_dot_product_attention(q, k, v),
     {"q": (2, 5, 3), "k": (2, 7, 3), "v": (2, 7, 2)}),
    ("causal-broadcast", lambda q, k, v: gn.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.7),
     {"q": (1, 2, 19, 3), "k": (2, 1, 11, 3), "v": (2, 2, 11, 2)}),
    ("float-mask-gets-a-gradient", lambda q, k, v, m: gn.scaled_dot_product_attention(q, k, v, m),
     {"q": (2, 18, 3), "k": (2, 20, 3), "v": (2, 20, 2), "m": (1, 20)}),
    ("bool-and-float-masks",
     lambda q, k, v, m, b: A.attention(q, k, v, [b, m], causal=True),
     {"q": (2, 20, 3), "k": (2, 17, 3), "v": (2, 17, 2), "m": (20, 17), "b": (2, 1, 17)}),
]


@covers("scaled_dot_product_attention", "scaled_dot_product_attention_grad")
@pytest.mark.parametrize("case", GRADIENTS, ids=[c[0] for c in GRADIENTS])
def test_gradients_match_finite_differences(case: tuple, small_blocks: None) -> None:
    _, build, shapes = case
    feeds = {n: R.standard_normal(s) for n, s in shapes.items()}
    if "b" in feeds:
        feeds["b"] = (feeds["b"] > -0.8) | (np.arange(17) == 0)
    _check_gradients(build, feeds)


def test_second_derivatives_match_finite_differences(small_blocks: None) -> None:
    """A gradient penalty: the gradient op's own rule (the first gradient written with plain ops)."""
    def penalty(q: gn.Tensor, k: gn.Tensor, v: gn.Tensor, m: gn.Tensor) -> gn.Tensor:
        y = A.attention(q, k, v, [m], causal=True)
        gq, gk, gv = gn.grad(gn.sum(y * y * y), [q, k, v])
        return gn.sum(gq * gq, -1) + gn.sum(gk, -1) + gn.sum(gv * gv, -1) * 2.0

    _check_gradients(penalty, {"q": R.standard_normal((2, 18, 3)), "k": R.standard_normal((2, 18, 3)),
                               "v": R.standard_normal((2, 18, 2)), "m": R.standard_normal((18, 18))})


def test_dropout_gradient_uses_the_forward_mask(small_blocks: None) -> None:
    """The kernels with one seed: the gradient of the forward's dropped-out output, recomputed block
    by block from the seed, against central differences of the forward with that seed."""
    q, k, v = R.standard_normal((2, 20, 3)), R.standard_normal((2, 26, 3)), R.standard_normal((2, 26, 2))
    g = R.standard_normal((2, 20, 2))

    def forward(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> float:
        return float((A.attention_forward(np, q, k, v, [], 0.6, True, 0.4, 123)[0] * g).sum())

    o, lse = A.attention_forward(np, q, k, v, [], 0.6, True, 0.4, 123)
    analytic = A.attention_backward(np, q, k, v, [], o, lse, g, 0.6, True, 0.4, 123)
    for x, d in zip((q, k, v), analytic):
        num = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            orig = x[idx]
            x[idx] = orig + 1e-6
            plus = forward(q, k, v)
            x[idx] = orig - 1e-6
            minus = forward(q, k, v)
            x[idx] = orig
            num[idx] = (plus - minus) / 2e-6
        assert rel_error(d, num, 1e-4 * np.abs(num).max()) < 1e-6


@covers("scaled_dot_product_attention", "scaled_dot_product_attention_grad")
def test_dropout_draws_from_the_plans_random_source() -> None:
    """With v the identity the output is the dropped-out probabilities themselves: zeros at the rate
    p, the rest scaled by 1 / (1 - p); the gradient with respect to v reads the same mask; each run
    draws a new one, and a plan compiled with the same seed draws the same."""
    n, p = 48, 0.25
    qv, kv = R.standard_normal((2, n, 8)), R.standard_normal((2, n, 8))
    q, k = gn.placeholder("q", qv.shape, "float64"), gn.placeholder("k", kv.shape, "float64")
    v = gn.placeholder("v", (2, n, n), "float64")
    weight = R.standard_normal((2, n, n))
    y = gn.scaled_dot_product_attention(q, k, v, dropout_p=p)
    gv = gn.grad(gn.sum(y * gn.constant(weight)), v)
    plan = compile_plan({"y": y, "gv": gv}, seed=3)
    feeds = {"q": qv, "k": kv, "v": np.broadcast_to(np.eye(n), (2, n, n)).copy()}
    first, second = plan.run(feeds), plan.run(feeds)
    probs = _softmax(ref_scores(qv, kv))
    kept = first["y"] != 0
    assert abs((1 - kept.mean()) - p) < 4 * math.sqrt(p * (1 - p) / kept.size)
    np.testing.assert_allclose(first["y"][kept], probs[kept] / (1 - p), rtol=1e-12)
    np.testing.assert_allclose(first["gv"], np.swapaxes(first["y"], 1, 2) @ weight, rtol=1e-12, atol=1e-12)
    assert not np.array_equal(second["y"] != 0, kept)
    np.testing.assert_array_equal(compile_plan({"y": y, "gv": gv}, seed=3).run(feeds)["y"], first["y"])


def test_memory_stays_the_size_of_a_block() -> None:
    """L = S = 4096: the (L, S) scores would take 128 MB in float64; the forward and the backward
    kernels allocate about a block (2**20 scores) of temporaries besides their results."""
    n, e = 4096, 8
    q, k, v, g = (R.standard_normal((1, n, e)) for _ in range(4))
    whole = n * n * 8
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        o, lse = A.attention_forward(np, q, k, v, [], 0.3, False)
        forward_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        A.attention_backward(np, q, k, v, [], o, lse, g, 0.3, False)
        backward_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    block = A.BLOCK_ELEMENTS * 8
    assert A.block_sizes(1, n, n) == (n, A.BLOCK_KEYS)
    assert block <= whole / 16
    assert forward_peak < 1.5 * block, forward_peak
    assert backward_peak < 2.5 * block, backward_peak
    # and the peak-memory formula counts them, for the kernel the backend runs
    qp, kp, vp = (gn.placeholder(name, (1, n, e), "float64") for name in "qkv")
    plan = compile_plan({"y": gn.scaled_dot_product_attention(qp, kp, vp, scale=0.3)})
    predicted = plan.executor.peak_bytes(plan.plan, {"q": (1, n, e), "k": (1, n, e), "v": (1, n, e)})
    assert forward_peak <= predicted < 2 * forward_peak + n * e * 8


def test_errors_say_what_is_wrong() -> None:
    q, k, v = gn.placeholder("q", (2, 4, 3)), gn.placeholder("k", (2, 5, 3)), gn.placeholder("v", (2, 5, 2))
    with pytest.raises(gn.ShapeError, match="not both"):
        gn.scaled_dot_product_attention(q, k, v, np.ones((4, 5), bool), is_causal=True)
    with pytest.raises(gn.ShapeError, match="same last dim"):
        gn.scaled_dot_product_attention(q, gn.placeholder("k2", (2, 5, 4)), v)
    with pytest.raises(gn.ShapeError, match="same length"):
        gn.scaled_dot_product_attention(q, k, gn.placeholder("v2", (2, 6, 2)))
    with pytest.raises(gn.ShapeError, match="does not broadcast"):
        gn.scaled_dot_product_attention(q, k, v, np.ones((4, 6), bool))
    with pytest.raises(gn.DTypeError, match="bool or float32"):
        gn.scaled_dot_product_attention(q, k, v, gn.placeholder("m", (4, 5), "int64"))
    with pytest.raises(gn.DTypeError, match="one dtype"):
        gn.scaled_dot_product_attention(q, k, gn.placeholder("v3", (2, 5, 2), "float64"))
    with pytest.raises(gn.ShapeError, match="dropout_p"):
        gn.scaled_dot_product_attention(q, k, v, dropout_p=1.0)
    with pytest.raises(gn.ShapeError, match="scale"):
        gn.scaled_dot_product_attention(gn.placeholder("q4", (2, 4, None)), k, v)


# --- layers: NumPy references of PyTorch's formulas ------------------------------------------------------


def _layer_norm(x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, eps: float = 1e-5) -> np.ndarray:
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return y * (1.0 if w is None else w) + (0.0 if b is None else b)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def ref_mha(sd: dict, query: np.ndarray, key: np.ndarray, value: np.ndarray, heads: int, batch_first: bool = False,
            key_padding_mask: Any = None, attn_mask: Any = None, is_causal: bool = False) -> tuple:
    """torch.nn.MultiheadAttention's formulas (eval mode): (output, weights averaged over heads)."""
    if not batch_first:
        query, key, value = (np.swapaxes(t, 0, 1) for t in (query, key, value))
    e = sd["out_proj.weight"].shape[0]
    d = e // heads
    if "in_proj_weight" in sd:
        wq, wk, wv = np.split(sd["in_proj_weight"], 3)
    else:
        wq, wk, wv = sd["q_proj_weight"], sd["k_proj_weight"], sd["v_proj_weight"]
    bq, bk, bv = np.split(sd["in_proj_bias"], 3) if "in_proj_bias" in sd else (0.0, 0.0, 0.0)

    def heads_of(x: np.ndarray) -> np.ndarray:  # (N, L, E) -> (N, heads, L, d)
        return np.swapaxes(x.reshape(x.shape[0], x.shape[1], heads, d), 1, 2)

    q, k, v = heads_of(query @ wq.T + bq), heads_of(key @ wk.T + bk), heads_of(value @ wv.T + bv)
    n, L, S = q.shape[0], q.shape[2], k.shape[2]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)
    if attn_mask is not None:
        am = attn_mask.reshape(n, heads, L, S) if attn_mask.ndim == 3 else attn_mask
        s = np.where(am, -np.inf, s) if am.dtype == bool else s + am
    elif is_causal:
        s = np.where(np.triu(np.ones((L, S), bool), 1), -np.inf, s)
    if key_padding_mask is not None:
        kpm = key_padding_mask[:, None, None, :]
        s = np.where(kpm, -np.inf, s) if kpm.dtype == bool else s + kpm
    p = _softmax(s)
    out = np.swapaxes(p @ v, 1, 2).reshape(n, L, e) @ sd["out_proj.weight"].T + sd.get("out_proj.bias", 0.0)
    return (out if batch_first else np.swapaxes(out, 0, 1)), p.mean(1)


def _sub(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def ref_encoder_layer(sd: dict, x: np.ndarray, heads: int, batch_first: bool = False, norm_first: bool = False,
                      activation: str = "relu", mask: Any = None, key_padding_mask: Any = None,
                      is_causal: bool = False) -> np.ndarray:
    act = _gelu if activation == "gelu" else (lambda t: np.maximum(t, 0.0))

    def sa(t: np.ndarray) -> np.ndarray:
        return ref_mha(_sub(sd, "self_attn."), t, t, t, heads, batch_first, key_padding_mask, mask, is_causal)[0]

    def ff(t: np.ndarray) -> np.ndarray:
        return act(t @ sd["linear1.weight"].T + sd["linear1.bias"]) @ sd["linear2.weight"].T + sd["linear2.bias"]

    def norm(i: int, t: np.ndarray) -> np.ndarray:
        return _layer_norm(t, sd[f"norm{i}.weight"], sd[f"norm{i}.bias"])

    if norm_first:
        x = x + sa(norm(1, x))
        return x + ff(norm(2, x))
    x = norm(1, x + sa(x))
    return norm(2, x + ff(x))


def ref_decoder_layer(sd: dict, x: np.ndarray, memory: np.ndarray, heads: int, batch_first: bool = False,
                      norm_first: bool = False, tgt_mask: Any = None, memory_mask: Any = None,
                      tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None,
                      tgt_is_causal: bool = False) -> np.ndarray:
    def sa(t: np.ndarray) -> np.ndarray:
        return ref_mha(_sub(sd, "self_attn."), t, t, t, heads, batch_first, tgt_key_padding_mask, tgt_mask,
                       tgt_is_causal)[0]

    def mha(t: np.ndarray) -> np.ndarray:
        return ref_mha(_sub(sd, "multihead_attn."), t, memory, memory, heads, batch_first, memory_key_padding_mask,
                       memory_mask)[0]

    def ff(t: np.ndarray) -> np.ndarray:
        return np.maximum(t @ sd["linear1.weight"].T + sd["linear1.bias"], 0.0) @ sd["linear2.weight"].T \
            + sd["linear2.bias"]

    def norm(i: int, t: np.ndarray) -> np.ndarray:
        return _layer_norm(t, sd[f"norm{i}.weight"], sd[f"norm{i}.bias"])

    if norm_first:
        x = x + sa(norm(1, x))
        x = x + mha(norm(2, x))
        return x + ff(norm(3, x))
    x = norm(1, x + sa(x))
    x = norm(2, x + mha(x))
    return norm(3, x + ff(x))


def _randomize(module: gn.nn.Module) -> dict:
    """Random values for every parameter (biases and norms too, so that each one matters)."""
    state = {k: R.standard_normal(v.shape) * (0.5 if v.ndim > 1 else 0.3) + (1.0 if "norm" in k and "weight" in k
                                                                             else 0.0)
             for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    return module.state_dict()


def _eval(out: gn.Tensor, **feeds: np.ndarray) -> np.ndarray:
    return compile_plan({"out": out}, mode="eval").run(**feeds)["out"]


E, HEADS, L, S, N = 8, 2, 5, 7, 3


def _seq(length: int, batch_first: bool, features: int = E) -> np.ndarray:
    return R.standard_normal((N, length, features) if batch_first else (length, N, features))


@covers("scaled_dot_product_attention")
@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_against_numpy(batch_first: bool) -> None:
    mha = gn.nn.MultiheadAttention(E, HEADS, batch_first=batch_first, dtype="float64")
    sd = _randomize(mha)
    qv, kv, vv = _seq(L, batch_first), _seq(S, batch_first), _seq(S, batch_first)
    q, k, v = (gn.placeholder(n, a.shape, "float64") for n, a in (("q", qv), ("k", kv), ("v", vv)))
    kpm = R.random((N, S)) < 0.3
    kpm[:, 0] = False
    float_mask, bool_mask = R.standard_normal((L, S)), R.random((L, S)) < 0.3
    bool_mask[:, 1] = False
    per_head = R.standard_normal((N * HEADS, L, S))
    out, none = mha(q, k, v)
    assert none is None and out.shape == qv.shape
    cases = {
        "plain": (out, {}),
        "float-mask-and-padding": (mha(q, k, v, key_padding_mask=kpm, attn_mask=float_mask)[0],
                                   {"key_padding_mask": kpm, "attn_mask": float_mask}),
        "bool-masks": (mha(q, k, v, key_padding_mask=gn.constant(kpm), attn_mask=gn.constant(bool_mask))[0],
                       {"key_padding_mask": kpm, "attn_mask": bool_mask}),
        "per-head-mask": (mha(q, k, v, attn_mask=per_head)[0], {"attn_mask": per_head}),
    }
    plan = compile_plan({name: t for name, (t, _) in cases.items()}, mode="eval")
    got = plan.run(q=qv, k=kv, v=vv)
    for name, (_, kw) in cases.items():
        want = ref_mha(sd, qv, kv, vv, HEADS, batch_first, **kw)[0]
        np.testing.assert_allclose(got[name], want, rtol=1e-11, atol=1e-12, err_msg=name)
    # self-attention (one packed projection), causal, and the averaged weights of the plain path
    self_out = mha(q, q, q, is_causal=True)[0]
    out_w, weights = mha(q, k, k, key_padding_mask=kpm, need_weights=True)
    _, per_head_weights = mha(q, k, k, need_weights=True, average_attn_weights=False)
    got = compile_plan({"self": self_out, "out": out_w, "w": weights, "wh": per_head_weights},
                       mode="eval").run(q=qv, k=kv)
    np.testing.assert_allclose(got["self"], ref_mha(sd, qv, qv, qv, HEADS, batch_first, is_causal=True)[0],
                               rtol=1e-11, atol=1e-12)
    want_out, want_w = ref_mha(sd, qv, kv, kv, HEADS, batch_first, key_padding_mask=kpm)
    np.testing.assert_allclose(got["out"], want_out, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(got["w"], want_w, rtol=1e-11, atol=1e-12)
    assert got["wh"].shape == (N, HEADS, L, S)
    np.testing.assert_allclose(got["wh"].mean(1), ref_mha(sd, qv, kv, kv, HEADS, batch_first)[1], rtol=1e-11)


@covers("scaled_dot_product_attention")
def test_multihead_attention_other_key_sizes_unbatched_and_symbolic_dims() -> None:
    mha = gn.nn.MultiheadAttention(E, HEADS, kdim=3, vdim=5, dtype="float64")
    sd = _randomize(mha)
    assert {k: v.shape for k, v in sd.items()} == {
        "q_proj_weight": (8, 8), "k_proj_weight": (8, 3), "v_proj_weight": (8, 5), "in_proj_bias": (24,),
        "out_proj.weight": (8, 8), "out_proj.bias": (8,)}
    qv, kv, vv = _seq(L, False), _seq(S, False, 3), _seq(S, False, 5)
    q = gn.placeholder("q", (None, None, E), "float64")  # length and batch unknown until run time
    k = gn.placeholder("k", (None, None, 3), "float64")
    v = gn.placeholder("v", (None, None, 5), "float64")
    out = mha(q, k, v)[0]
    assert out.shape == (None, None, E)
    np.testing.assert_allclose(_eval(out, q=qv, k=kv, v=vv), ref_mha(sd, qv, kv, vv, HEADS)[0], rtol=1e-11,
                               atol=1e-12)
    # unbatched (L, E)
    mha = gn.nn.MultiheadAttention(E, HEADS, batch_first=True, dtype="float64")
    sd = _randomize(mha)
    xv = R.standard_normal((L, E))
    x = gn.placeholder("x", xv.shape, "float64")
    kpm = np.arange(L) == 3
    got = _eval(mha(x, x, x, key_padding_mask=kpm)[0], x=xv)
    want = ref_mha(sd, xv[None], xv[None], xv[None], HEADS, True, key_padding_mask=kpm[None])[0][0]
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)
    with pytest.raises(gn.ShapeError, match="must be"):
        mha(gn.placeholder("bad", (2, 3, 4), "float64"), x, x)
    with pytest.raises(gn.ShapeError, match="divisible"):
        gn.nn.MultiheadAttention(6, 4)


@covers("scaled_dot_product_attention")
def test_multihead_attention_dropout_in_training_only() -> None:
    mha = gn.nn.MultiheadAttention(E, HEADS, dropout=0.5, batch_first=True, dtype="float64")
    sd = _randomize(mha)
    xv = _seq(L, True)
    x = gn.placeholder("x", xv.shape, "float64")
    out = mha(x, x, x)[0]
    train = compile_plan({"y": out}, mode="train", seed=0)
    first, second = train.run(x=xv)["y"], train.run(x=xv)["y"]
    want = ref_mha(sd, xv, xv, xv, HEADS, True)[0]
    assert not np.allclose(first, want) and not np.allclose(first, second)
    np.testing.assert_allclose(_eval(out, x=xv), want, rtol=1e-11, atol=1e-12)


@covers("scaled_dot_product_attention")
@pytest.mark.parametrize("batch_first, norm_first, activation", [(False, False, "relu"), (True, True, "gelu"),
                                                                  (True, False, "gelu")])
def test_transformer_encoder_layer_against_numpy(batch_first: bool, norm_first: bool, activation: str) -> None:
    layer = gn.nn.TransformerEncoderLayer(E, HEADS, 16, activation=activation, batch_first=batch_first,
                                          norm_first=norm_first, dtype="float64")
    sd = _randomize(layer)
    xv = _seq(L, batch_first)
    x = gn.placeholder("x", xv.shape, "float64")
    kpm = R.random((N, L)) < 0.3
    kpm[:, 0] = False
    mask = R.standard_normal((L, L))
    got = compile_plan({"padded": layer(x, src_key_padding_mask=kpm), "masked": layer(x, src_mask=mask),
                        "causal": layer(x, is_causal=True)}, mode="eval").run(x=xv)
    kw = {"batch_first": batch_first, "norm_first": norm_first, "activation": activation}
    np.testing.assert_allclose(got["padded"], ref_encoder_layer(sd, xv, HEADS, key_padding_mask=kpm, **kw),
                               rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(got["masked"], ref_encoder_layer(sd, xv, HEADS, mask=mask, **kw), rtol=1e-10,
                               atol=1e-11)
    np.testing.assert_allclose(got["causal"], ref_encoder_layer(sd, xv, HEADS, is_causal=True, **kw), rtol=1e-10,
                               atol=1e-11)


@covers("scaled_dot_product_attention")
@pytest.mark.parametrize("batch_first, norm_first", [(False, False), (True, True)])
def test_transformer_decoder_layer_against_numpy(batch_first: bool, norm_first: bool) -> None:
    layer = gn.nn.TransformerDecoderLayer(E, HEADS, 16, batch_first=batch_first, norm_first=norm_first,
                                          dtype="float64")
    sd = _randomize(layer)
    xv, mv = _seq(L, batch_first), _seq(S, batch_first)
    x, m = gn.placeholder("x", xv.shape, "float64"), gn.placeholder("m", mv.shape, "float64")
    causal = np.triu(np.full((L, L), -np.inf), 1)  # torch.nn.Transformer.generate_square_subsequent_mask
    mkpm = R.random((N, S)) < 0.3
    mkpm[:, 0] = False
    memory_mask = R.random((L, S)) < 0.2
    memory_mask[:, 1] = False
    got = compile_plan({
        "masks": layer(x, m, tgt_mask=causal, memory_key_padding_mask=mkpm, memory_mask=memory_mask),
        "causal": layer(x, m, tgt_is_causal=True)}, mode="eval").run(x=xv, m=mv)
    kw = {"batch_first": batch_first, "norm_first": norm_first}
    np.testing.assert_allclose(got["masks"], ref_decoder_layer(sd, xv, mv, HEADS, tgt_mask=causal,
                                                               memory_key_padding_mask=mkpm,
                                                               memory_mask=memory_mask, **kw), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(got["causal"], ref_decoder_layer(sd, xv, mv, HEADS, tgt_is_causal=True, **kw),
                               rtol=1e-10, atol=1e-11)


@covers("scaled_dot_product_attention")
def test_transformer_encoder_and_decoder_stack_copies_of_the_layer() -> None:
    layer = gn.nn.TransformerEncoderLayer(E, HEADS, 16, dtype="float64")
    encoder = gn.nn.TransformerEncoder(layer, 2, norm=gn.nn.LayerNorm(E, dtype="float64"))
    first, second = encoder.layers[0], encoder.layers[1]
    # copies with parameters of their own, starting from the layer's values (PyTorch deep-copies it)
    assert first.self_attn.in_proj_weight is not second.self_attn.in_proj_weight
    assert first.self_attn.in_proj_weight is not layer.self_attn.in_proj_weight
    np.testing.assert_array_equal(first.linear1.weight.data, layer.linear1.weight.data)
    sd = _randomize(encoder)
    xv = _seq(L, False)
    x = gn.placeholder("x", xv.shape, "float64")
    mask = R.standard_normal((L, L))
    want = xv
    for i in range(2):
        want = ref_encoder_layer(_sub(sd, f"layers.{i}."), want, HEADS, mask=mask)
    want = _layer_norm(want, sd["norm.weight"], sd["norm.bias"])
    np.testing.assert_allclose(_eval(encoder(x, mask=mask), x=xv), want, rtol=1e-10, atol=1e-11)

    decoder = gn.nn.TransformerDecoder(gn.nn.TransformerDecoderLayer(E, HEADS, 16, batch_first=True,
                                                                     dtype="float64"), 2)
    sd = _randomize(decoder)
    xv, mv = _seq(L, True), _seq(S, True)
    x, m = gn.placeholder("x", xv.shape, "float64"), gn.placeholder("m", mv.shape, "float64")
    want = xv
    for i in range(2):
        want = ref_decoder_layer(_sub(sd, f"layers.{i}."), want, mv, HEADS, batch_first=True, tgt_is_causal=True)
    np.testing.assert_allclose(_eval(decoder(x, m, tgt_is_causal=True), x=xv, m=mv), want, rtol=1e-10, atol=1e-11)


# --- layer gradients (tiny instances, float64 finite differences) ----------------------------------------


def _params(module: gn.nn.Module) -> tuple:
    return tuple(module.named_parameters())


@covers("scaled_dot_product_attention", "scaled_dot_product_attention_grad")
def test_multihead_attention_gradients() -> None:
    mha = gn.nn.MultiheadAttention(4, 2, batch_first=True, dtype="float64")
    _randomize(mha)
    kpm = np.array([[False, False, True], [False, False, False]])
    _check_gradients(lambda q, kv: mha(q, kv, kv, key_padding_mask=kpm, attn_mask=np.full((2, 3), 0.3))[0],
                     {"q": R.standard_normal((2, 2, 4)), "kv": R.standard_normal((2, 3, 4))}, _params(mha))


@covers("scaled_dot_product_attention", "scaled_dot_product_attention_grad")
def test_transformer_encoder_layer_gradients() -> None:
    layer = gn.nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, activation="gelu", dtype="float64")
    _randomize(layer)
    _check_gradients(lambda x: layer(x, is_causal=True), {"x": R.standard_normal((3, 2, 4))}, _params(layer))


@covers("scaled_dot_product_attention", "scaled_dot_product_attention_grad")
def test_transformer_decoder_layer_gradients() -> None:
    layer = gn.nn.TransformerDecoderLayer(4, 2, 5, dropout=0.0, batch_first=True, norm_first=True, dtype="float64")
    _randomize(layer)
    _check_gradients(lambda x, m: layer(x, m, tgt_is_causal=True),
                     {"x": R.standard_normal((2, 3, 4)), "m": R.standard_normal((2, 2, 4))}, _params(layer))


# --- state dicts: PyTorch 2.13's keys and shapes ------------------------------------------------------


#: ``{k: tuple(v.shape) for k, v in torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16), 2,
#: norm=torch.nn.LayerNorm(8)).state_dict().items()}``, in PyTorch 2.13's order
TORCH_ENCODER = [(f"layers.{i}.{name}", shape) for i in range(2) for name, shape in (
    ("self_attn.in_proj_weight", (24, 8)), ("self_attn.in_proj_bias", (24,)), ("self_attn.out_proj.weight", (8, 8)),
    ("self_attn.out_proj.bias", (8,)), ("linear1.weight", (16, 8)), ("linear1.bias", (16,)),
    ("linear2.weight", (8, 16)), ("linear2.bias", (8,)), ("norm1.weight", (8,)), ("norm1.bias", (8,)),
    ("norm2.weight", (8,)), ("norm2.bias", (8,)))] + [("norm.weight", (8,)), ("norm.bias", (8,))]
#: the same of ``torch.nn.TransformerDecoderLayer(8, 2, 16)``
TORCH_DECODER_LAYER = [
    ("self_attn.in_proj_weight", (24, 8)), ("self_attn.in_proj_bias", (24,)), ("self_attn.out_proj.weight", (8, 8)),
    ("self_attn.out_proj.bias", (8,)), ("multihead_attn.in_proj_weight", (24, 8)),
    ("multihead_attn.in_proj_bias", (24,)), ("multihead_attn.out_proj.weight", (8, 8)),
    ("multihead_attn.out_proj.bias", (8,)), ("linear1.weight", (16, 8)), ("linear1.bias", (16,)),
    ("linear2.weight", (8, 16)), ("linear2.bias", (8,)), ("norm1.weight", (8,)), ("norm1.bias", (8,)),
    ("norm2.weight", (8,)), ("norm2.bias", (8,)), ("norm3.weight", (8,)), ("norm3.bias", (8,))]
#: ``torch.nn.MultiheadAttention(8, 2, bias=False)`` and ``torch.nn.TransformerEncoderLayer(8, 2, 16, bias=False)``
TORCH_NO_BIAS = ([("in_proj_weight", (24, 8)), ("out_proj.weight", (8, 8))],
                 [("self_attn.in_proj_weight", (24, 8)), ("self_attn.out_proj.weight", (8, 8)),
                  ("linear1.weight", (16, 8)), ("linear2.weight", (8, 16)), ("norm1.weight", (8,)),
                  ("norm2.weight", (8,))])


@pytest.mark.parametrize("build, keys", [
    (lambda: gn.nn.TransformerEncoder(gn.nn.TransformerEncoderLayer(8, 2, 16), 2, norm=gn.nn.LayerNorm(8)),
     TORCH_ENCODER),
    (lambda: gn.nn.TransformerDecoderLayer(8, 2, 16), TORCH_DECODER_LAYER),
    (lambda: gn.nn.TransformerDecoder(gn.nn.TransformerDecoderLayer(8, 2, 16), 1),
     [(f"layers.0.{k}", s) for k, s in TORCH_DECODER_LAYER]),
    (lambda: gn.nn.MultiheadAttention(8, 2, bias=False), TORCH_NO_BIAS[0]),
    (lambda: gn.nn.TransformerEncoderLayer(8, 2, 16, bias=False), TORCH_NO_BIAS[1]),
], ids=["encoder", "decoder-layer", "decoder", "mha-no-bias", "encoder-layer-no-bias"])
def test_state_dicts_have_pytorchs_keys_and_round_trip(build: Callable[[], gn.nn.Module], keys: list) -> None:
    model = build()
    assert [(k, v.shape) for k, v in model.state_dict().items()] == keys
    state = {k: R.standard_normal(s).astype("float32") for k, s in keys}  # as a PyTorch state dict in NumPy
    assert model.load_state_dict(state) == ([], [])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    again = build()
    again.load_state_dict(model.state_dict())
    for (k, a), (_, b) in zip(again.state_dict().items(), model.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_initialisation_follows_pytorch() -> None:
    """Xavier-uniform packed projections with zero biases; the output projection as a Linear's weight."""
    mha = gn.nn.MultiheadAttention(64, 4)
    w = mha.in_proj_weight.data
    bound = math.sqrt(6.0 / (64 + 192))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert not mha.in_proj_bias.data.any() and not mha.out_proj.bias.data.any()
    assert np.abs(mha.out_proj.weight.data).max() <= 1 / 8


def test_a_small_transformer_trains() -> None:
    """An encoder over symbolic batch and length, dropout on, Adam: the loss of a fixed batch falls."""
    gn.manual_seed(5)
    encoder = gn.nn.TransformerEncoder(gn.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True), 2)
    head = gn.nn.Linear(16, 3)
    x = gn.placeholder("x", (None, None, 16))
    y = gn.placeholder("y", (None,), "int64")
    logits = head(gn.mean(encoder(x, is_causal=True), 1))
    train = compile_plan({"loss": gn.losses.cross_entropy(logits, y)}, optimizer=gn.optim.Adam(lr=3e-3), seed=0)
    xv = R.standard_normal((8, 10, 16)).astype("float32")
    yv = np.arange(8) % 3
    losses = [float(train.run(x=xv, y=yv)["loss"]) for _ in range(25)]
    assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_hand_written_attention_compiles_to_the_attention_op_with_equal_values_and_gradients():
    """softmax(q k^T * c + mask) v written with plain ops (as a PyTorch user writes it) trains as
    the blocked attention op (fuse_attention runs before autodiff), with the same loss and the
    same parameter updates as when the pass is off."""
    import graphnet as gn

    rng = np.random.default_rng(5)
    start = {name: rng.standard_normal((4, 4)) * 0.5 for name in ("wq", "wk", "wv")}
    mask = np.where(rng.random((6, 6)) < 0.3, -1e9, 0.0)
    xv = rng.standard_normal((2, 6, 4))
    results = {}
    for disabled in (set(), {"fuse_attention"}):
        params = {name: gn.nn.Parameter(value.copy()) for name, value in start.items()}
        x = gn.placeholder("x", (2, 6, 4), "float64")
        q, k, v = (x @ params[name] for name in ("wq", "wk", "wv"))
        out = gn.softmax(q @ gn.swapaxes(k, -1, -2) * 0.5 + gn.constant(mask), axis=-1) @ v
        with gn.config.options(disabled_passes=disabled):
            train = gn.compile(gn.sum(out * out), optimizer=gn.optim.SGD(lr=1.0))
        fused = any(s.op == "scaled_dot_product_attention" for s in train.plan.steps)
        assert fused == (not disabled) and (fused != any(s.op == "softmax" for s in train.plan.steps))
        loss = float(train.run(x=xv)["loss"])
        results[bool(disabled)] = (loss, {name: start[name] - p.data for name, p in params.items()})
    (loss_a, grads_a), (loss_b, grads_b) = results[False], results[True]
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-12)
    for name in grads_a:
        np.testing.assert_allclose(grads_a[name], grads_b[name], rtol=1e-9, atol=1e-12, err_msg=name)
