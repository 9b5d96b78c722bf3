"""Issue 24's sequence ops beyond the op tables (tests/test_op_forward.py, tests/test_op_gradients.py):
einsum's subscripts (implicit, ellipsis, lists, broadcasting) and its matrix-product kernel against
np.einsum, an attention block built from them, the masks' conventions (PyTorch's bool and float
causal masks), cumsum's reverse kernel and dtypes, argmax's and topk's tie and NaN rules, topk's
gradient, sin and cos fused, plan files, and the typed errors at declaration."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphnet as gn
from graphnet.ops import REGISTRY, sequence
from graphnet.ops.common import declare

from helpers import compile_plan, covers, finite_difference, rel_error, run, step_ops

R = np.random.default_rng(24)


def _ph(name: str, value: np.ndarray, shape: tuple | None = None) -> gn.Tensor:
    return gn.placeholder(name, np.shape(value) if shape is None else shape, np.asarray(value).dtype.name)


# --- einsum -------------------------------------------------------------------------------------------


def _random_pair_spec(rng: np.random.Generator) -> tuple[str, dict[str, int]]:
    labels = "abcdefg"
    sizes = {c: int(rng.integers(0 if rng.random() < 0.05 else 1, 4)) for c in labels}
    a = "".join(rng.permutation(list(labels))[: rng.integers(0, 5)])
    b = "".join(rng.permutation(list(labels))[: rng.integers(0, 5)])
    both = sorted(set(a) | set(b))
    out = "".join(rng.permutation(both)[: rng.integers(0, len(both) + 1)]) if both else ""
    return f"{a},{b}->{out}", sizes


def test_the_pair_kernel_is_np_einsum_on_random_specs() -> None:
    """Batch, row, column, contracted and one-sided labels in every mix, scalars and empty dims."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        spec, sizes = _random_pair_spec(rng)
        (ta, tb), out = sequence._split(spec)
        a = rng.standard_normal([sizes[c] for c in ta])
        b = rng.standard_normal([sizes[c] for c in tb])
        got = sequence._pair_product(np, ta, tb, out, a, b)
        assert got is not None, spec
        np.testing.assert_allclose(got, np.einsum(spec, a, b), rtol=1e-12, atol=1e-12, err_msg=spec)
    # a repeated label or a broadcast size-1 dim is left to np.einsum
    assert sequence._pair_product(np, "ii", "i", "i", np.eye(3), np.ones(3)) is None
    assert sequence._pair_product(np, "ij", "jk", "ik", np.ones((2, 1)), np.ones((3, 4))) is None


@covers("einsum")
def test_einsum_forms_match_numpy() -> None:
    av, bv, cv = R.standard_normal((2, 3, 4)), R.standard_normal((4, 5)), R.standard_normal((2, 1, 5))
    a, b, c = _ph("a", av), _ph("b", bv), _ph("c", cv)
    forms = {
        "implicit": (gn.einsum("bij,jk", a, b), np.einsum("bij,jk", av, bv)),
        "spaces": (gn.einsum(" bij , jk -> bik ", a, b), np.einsum("bij,jk->bik", av, bv)),
        "list": (gn.einsum("bij,jk->bik", [a, b]), np.einsum("bij,jk->bik", av, bv)),
        "ellipsis": (gn.einsum("...j,jk->...k", a, b), np.einsum("...j,jk->...k", av, bv)),
        "ellipsis-implicit": (gn.einsum("...ij,jk", a, b), np.einsum("...ij,jk", av, bv)),
        "ellipsis-broadcast": (gn.einsum("...ik,...jk->...ij", c, c), np.einsum("...ik,...jk->...ij", cv, cv)),
        "uppercase-first": (gn.einsum("bAj,jc", a, b), np.einsum("bAj,jc", av, bv)),
        "three": (gn.einsum("bij,jk,bqk->biq", a, b, c), np.einsum("bij,jk,bqk->biq", av, bv, cv)),
        "array-operand": (gn.einsum("bij,jk->bk", a, bv), np.einsum("bij,jk->bk", av, bv)),
        "scalar-operand": (gn.einsum("bij,->bji", a, 2.0), 2.0 * np.einsum("bij->bji", av)),
        "diagonal-view": (gn.einsum("ii->i", a[0, :, :3]), np.einsum("ii->i", av[0, :, :3]).copy()),
    }
    got = run({k: t for k, (t, _) in forms.items()}, {"a": av, "b": bv, "c": cv})
    for key, (tensor, want) in forms.items():
        assert tuple(tensor.shape) == want.shape, key
        np.testing.assert_allclose(got[key], want, rtol=1e-12, atol=1e-12, err_msg=key)


@covers("einsum")
def test_a_pair_einsum_is_one_step_and_runs_with_any_batch_size() -> None:
    x = gn.placeholder("x", (None, 3, 4), "float32")
    w = gn.placeholder("w", (4, 5), "float32")
    y = gn.einsum("bij,jk->bik", x, w)
    assert y.shape == (None, 3, 5) and y.dtype == "float32"
    plan = compile_plan({"y": y})
    assert plan.plan.op_counts() == {"einsum": 1}
    wv = R.standard_normal((4, 5)).astype("float32")
    for n in (0, 1, 3):
        xv = R.standard_normal((n, 3, 4)).astype("float32")
        out = plan.run(x=xv, w=wv)["y"]
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, np.einsum("bij,jk->bik", xv, wv), rtol=1e-5, atol=1e-5)


def test_einsum_errors_are_typed_and_raised_when_declared() -> None:
    a, b = gn.placeholder("a", (3, 4)), gn.placeholder("b", (5, 6))
    bad = [lambda: gn.einsum("ij,jk->ik", a),  # one operand for two
           lambda: gn.einsum("ijk->i", a),  # 3 labels for 2 dims
           lambda: gn.einsum("i1->i", a),
           lambda: gn.einsum("ij,jk->ik", a, b),  # j: 4 vs 5
           lambda: gn.einsum("ij->iz", a),  # z in no operand
           lambda: gn.einsum("ij->ii", a),
           lambda: gn.einsum("...j->j", gn.placeholder("c", (2, 3, 4))),  # NumPy refuses this too
           lambda: gn.einsum("i..j->ij", a),
           lambda: gn.einsum("ij->i->j", a),
           lambda: gn.einsum(3, a),
           lambda: gn.einsum("ii->i", gn.placeholder("d", (3, 4))),  # a diagonal of a non-square
           lambda: gn.einsum("ij")]
    for make in bad:
        with pytest.raises(gn.ShapeError):
            make()
    with pytest.raises(gn.ShapeError, match="einsum"):
        gn.einsum("ij,jk->ik", a, b)


def test_einsum_gradients_through_broadcast_and_diagonal_labels() -> None:
    """d/dx of each operand, with a size-1 dim stretched, a diagonal, a label summed away and a
    symbolic batch, against central differences."""
    feeds = {"x": R.standard_normal((3, 3, 1)), "y": R.standard_normal((2, 4)), "z": R.standard_normal((2, 3))}
    x = gn.placeholder("x", (3, 3, 1), "float64")
    y = gn.placeholder("y", (None, 4), "float64")
    z = gn.placeholder("z", (2, 3), "float64")
    loss = gn.sum(gn.tanh(gn.einsum("iij,bj,bi->bi", x, y, z)) * np.linspace(-1, 1, 6).reshape(2, 3))
    grads = gn.grad(loss, [x, y, z])
    got = gn.compile({str(k): g for k, g in enumerate(grads)}).run(feeds)
    forward = gn.compile({"loss": loss})
    for k, name in enumerate("xyz"):
        numeric = finite_difference(forward, "loss", feeds, name)
        assert got[str(k)].shape == feeds[name].shape
        assert rel_error(got[str(k)], numeric) < 1e-6, name


# --- an attention block ---------------------------------------------------------------------------------


def _attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    length = q.shape[-2]
    scores = np.where(np.triu(np.ones((length, length), bool), 1), -np.inf, scores)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)) @ v


@covers("einsum", "softmax")
def test_causal_attention_from_einsum_masked_fill_and_causal_mask() -> None:
    shape = (2, 3, 5, 4)  # batch, heads, length, head dim
    feeds = {n: R.standard_normal(shape) for n in "qkv"}
    q, k, v = (gn.placeholder(n, shape, "float64") for n in "qkv")
    scores = gn.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(4)
    by_bool = gn.einsum("bhqk,bhkd->bhqd", gn.softmax(gn.masked_fill(scores, gn.causal_mask(5), -np.inf)), v)
    by_float = gn.einsum("bhqk,bhkd->bhqd", gn.softmax(scores + gn.causal_mask(5, "float64")), v)
    w = np.cos(np.arange(np.prod(shape))).reshape(shape)
    loss = gn.sum(by_bool * w)
    grads = gn.grad(loss, [q, k, v])
    got = compile_plan({"bool": by_bool, "float": by_float, "gq": grads[0], "gk": grads[1], "gv": grads[2]}).run(feeds)
    want = _attention_ref(feeds["q"], feeds["k"], feeds["v"])
    np.testing.assert_allclose(got["bool"], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["float"], want, rtol=1e-12, atol=1e-12)
    forward = gn.compile({"loss": loss})
    for name in "qkv":
        numeric = finite_difference(forward, "loss", feeds, name)
        assert rel_error(got[f"g{name}"], numeric) < 1e-6, name
    # the first query sees only the first key: its output is v's first row
    np.testing.assert_allclose(got["bool"][:, :, 0], feeds["v"][:, :, 0], rtol=1e-12)


# --- masks ----------------------------------------------------------------------------------------------


def test_causal_mask_follows_pytorchs_conventions() -> None:
    for size in (0, 1, 4):
        out = gn.compile({"b": gn.causal_mask(size), "f": gn.causal_mask(size, "float32")}).run()
        i, j = np.indices((size, size))
        assert out["b"].dtype == np.bool_ and out["f"].dtype == np.float32
        np.testing.assert_array_equal(out["b"], j > i)  # True: may not attend (a later key)
        # torch.nn.Transformer.generate_square_subsequent_mask: -inf above the diagonal, 0 elsewhere
        np.testing.assert_array_equal(out["f"], np.triu(np.full((size, size), -np.inf, np.float32), 1))
    for size in (-1, 2.5, True):
        with pytest.raises(gn.ShapeError):
            gn.causal_mask(size)
    with pytest.raises(gn.DTypeError):
        gn.causal_mask(3, "int32")


@covers("where")
def test_masked_fill_broadcasts_and_zeroes_the_gradient_where_filled() -> None:
    xv, mv = R.standard_normal(4), R.random((3, 1)) > 0.5
    mv[0, 0], mv[1, 0] = True, False
    x = _ph("x", xv)
    m = _ph("m", mv)
    y = gn.masked_fill(x, m, 7.0)  # PyTorch's out-of-place form: the broadcast shape
    assert y.shape == (3, 4) and y.dtype == "float64"
    w = R.standard_normal((3, 4))
    got = run({"y": y, "g": gn.grad(gn.sum(y * w), x)}, {"x": xv, "m": mv})
    np.testing.assert_array_equal(got["y"], np.where(mv, 7.0, xv))
    np.testing.assert_allclose(got["g"], np.where(mv, 0.0, w).sum(0), rtol=1e-12)
    labels = gn.placeholder("labels", (5,), "int64")
    got = run({"y": gn.masked_fill(labels, labels < 0, 0)}, {"labels": np.array([3, -1, 2, -7, 0])})["y"]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [3, 0, 2, 0, 0])


def test_masked_fill_errors() -> None:
    x = gn.placeholder("x", (3, 4))
    with pytest.raises(gn.DTypeError):
        gn.masked_fill(x, gn.cast(x > 0.0, "uint8"), 1.0)
    with pytest.raises(gn.DTypeError):
        gn.masked_fill(gn.placeholder("i", (3,), "int64"), gn.placeholder("m", (3,), "bool"), -np.inf)
    with pytest.raises(gn.DTypeError):
        gn.masked_fill(gn.placeholder("j", (3,), "int32"), gn.placeholder("n", (3,), "bool"), 0.5)
    with pytest.raises(gn.DTypeError):
        gn.masked_fill(gn.placeholder("h", (3,), "float16"), gn.placeholder("o", (3,), "bool"), 1e10)
    assert gn.masked_fill(x, x > 0.0, 0.1).dtype == "float32"  # rounded into float32, as PyTorch does
    with pytest.raises(gn.ShapeError):
        gn.masked_fill(x, x > 0.0, gn.placeholder("v", (4,)))
    with pytest.raises(gn.ShapeError):
        gn.masked_fill(x, gn.placeholder("k", (2,), "bool"), 0.0)  # (3, 4) and (2,) do not broadcast


@covers("triu", "tril")
def test_triu_and_tril_take_any_dtype_and_need_two_dims() -> None:
    mv = R.random((2, 3, 3)) > 0.3
    m = _ph("m", mv)
    got = run({"u": gn.triu(m, 1), "l": gn.tril(m, -1)}, {"m": mv})
    assert got["u"].dtype == np.bool_
    np.testing.assert_array_equal(got["u"], np.triu(mv, 1))
    np.testing.assert_array_equal(got["l"], np.tril(mv, -1))
    with pytest.raises(gn.ShapeError):
        gn.triu(gn.placeholder("v", (4,)))


# --- cumsum, argmax, topk -------------------------------------------------------------------------------


@covers("cumsum")
def test_cumsum_reverse_dtypes_and_its_gradient() -> None:
    xv = R.standard_normal((3, 4))
    x = _ph("x", xv)
    b = gn.placeholder("b", (5,), "bool")
    u = gn.placeholder("u", (2, 2), "uint8")
    w = R.standard_normal((3, 4))
    outs = {"rev": declare("cumsum", [x], {"axis": 1, "reverse": True}), "flat": gn.cumsum(x),
            "bool": gn.cumsum(b, 0), "uint8": gn.cumsum(u, 1), "g": gn.grad(gn.sum(gn.cumsum(x, 1) * w), x)}
    bv, uv = np.array([True, False, True, True, False]), np.array([[200, 100], [1, 255]], np.uint8)
    got = run(outs, {"x": xv, "b": bv, "u": uv})
    np.testing.assert_allclose(got["rev"], np.flip(np.cumsum(np.flip(xv, 1), 1), 1), rtol=1e-12)
    assert got["rev"].flags.c_contiguous
    np.testing.assert_allclose(got["flat"], np.cumsum(xv), rtol=1e-12)
    assert outs["flat"].shape == (12,)
    assert got["bool"].dtype == np.int64 and got["uint8"].dtype == np.int64  # PyTorch's rule: no wrap-around
    np.testing.assert_array_equal(got["bool"], [1, 1, 2, 3, 3])
    np.testing.assert_array_equal(got["uint8"], [[200, 300], [1, 256]])
    np.testing.assert_allclose(got["g"], np.flip(np.cumsum(np.flip(w, 1), 1), 1), rtol=1e-12)
    with pytest.raises(gn.ShapeError):
        gn.cumsum(x, 2)


@covers("argmax")
def test_argmax_first_index_on_ties_nan_and_keepdims() -> None:
    xv = np.array([[1.0, 3.0, 3.0], [np.nan, 5.0, np.nan], [2.0, 2.0, 2.0], [-1.0, -np.inf, 4.0]])
    x = _ph("x", xv)
    outs = {"rows": gn.argmax(x, 1), "cols": gn.argmax(x, 0, keepdims=True), "flat": gn.argmax(x),
            "flat_keep": gn.argmax(x, keepdims=True), "scalar": gn.argmax(x[0, 0])}
    got = run(outs, {"x": xv})
    np.testing.assert_array_equal(got["rows"], [1, 0, 0, 2])  # the first maximum; NaN is the largest
    np.testing.assert_array_equal(got["cols"], np.argmax(xv, 0, keepdims=True))
    assert got["flat"] == 3 and got["flat"].shape == () and got["flat_keep"].shape == (1, 1)
    assert got["scalar"] == 0
    for key, value in got.items():
        assert value.dtype == np.int64 and outs[key].dtype == "int64", key
    assert REGISTRY["argmax"].grad is None  # an index: no gradient (as torch.argmax)
    # a gradient through a cast index reaches only the float path beside it
    g = gn.grad(gn.sum(gn.cast(gn.argmax(x, 1), "float64") * gn.sum(x, 1)), x)
    np.testing.assert_array_equal(run({"g": g}, {"x": np.arange(12.0).reshape(4, 3)})["g"],
                                  np.full((4, 3), 2.0))
    with pytest.raises(gn.ShapeError):
        gn.argmax(gn.placeholder("e", (3, 0)), 1)
    with pytest.raises(gn.ShapeError):
        gn.argmax(x, 2)


@covers("topk", "scatter_along_axis")
def test_topk_ties_nan_order_and_gradient() -> None:
    xv = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [np.nan, 1.0, np.nan, 4.0, 4.0], [0.0, -0.0, 5.0, 0.0, -1.0]])
    x = _ph("x", xv)
    top, low, unsorted = gn.topk(x, 3), gn.topk(x, 2, largest=False), gn.topk(x, 3, sorted=False)
    assert isinstance(top, gn.ops.sequence.TopK) and top.values.shape == (3, 3) and top.indices.dtype == "int64"
    w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    finite = gn.placeholder("f", (2, 5), "float64")
    fv = np.array([[3.0, 1.0, 3.0, 0.5, 2.0], [-1.0, -1.0, -2.0, 0.0, 0.0]])
    outs = {"v": top.values, "i": top.indices, "lv": low.values, "li": low.indices, "ui": unsorted.indices,
            "g": gn.grad(gn.sum(gn.topk(finite, 3).values * w[:2]), finite),
            "none": gn.topk(x, 0, axis=0).values}
    got = run(outs, {"x": xv, "f": fv})
    # ties: the lower index first; NaN counts as the largest, in index order among NaNs
    np.testing.assert_array_equal(got["i"], [[1, 2, 4], [0, 2, 3], [2, 0, 1]])
    np.testing.assert_array_equal(got["v"], [[3.0, 3.0, 3.0], [np.nan, np.nan, 4.0], [5.0, 0.0, -0.0]])
    np.testing.assert_array_equal(got["li"], [[0, 3], [1, 3], [4, 0]])  # NaN is never among the smallest
    np.testing.assert_array_equal(got["ui"], got["i"])  # sorted=False returns the same, sorted order
    assert got["i"].dtype == np.int64 and got["none"].shape == (0, 5)
    # each value's gradient goes to the position it was picked from
    np.testing.assert_array_equal(got["g"], [[1.0, 0.0, 2.0, 0.0, 3.0], [6.0, 0.0, 0.0, 4.0, 5.0]])


def test_topk_sizes_are_checked_when_declared_and_at_run_time() -> None:
    x = gn.placeholder("x", (3, 4))
    for make in (lambda: gn.topk(x, 5), lambda: gn.topk(x, -1), lambda: gn.topk(x, 2, axis=2),
                 lambda: gn.topk(gn.placeholder("s", ()), 1), lambda: gn.topk(x, 1.5)):
        with pytest.raises(gn.ShapeError):
            make()
    n = gn.placeholder("n", (None,), "float32")
    plan = gn.compile({"v": gn.topk(n, 3).values})
    np.testing.assert_array_equal(plan.run(n=np.array([1, 5, 2, 4], np.float32))["v"], [5, 4, 2])
    with pytest.raises(gn.FeedError):
        plan.run(n=np.array([1, 2], np.float32))


# --- sin and cos fuse, plans with the new ops save and load ---------------------------------------------


@covers("fused", "sin", "cos")
def test_sin_and_cos_fuse_into_one_generated_loop() -> None:
    x = gn.placeholder("x", (None, 8))
    y = gn.sin(x * 2.0) * gn.cos(x) + 1.0
    with gn.config.options(fuse=True):
        plan = compile_plan({"y": y})
    fused = [s for s in plan.plan.steps if s.op == "fused"]
    assert len(fused) == 1 and {"sin", "cos"} <= {m[0] for m in fused[0].attrs["body"]}
    xv = R.uniform(-4, 4, (5, 8)).astype("float32")
    want = np.sin(xv.astype(np.float64) * 2) * np.cos(xv.astype(np.float64)) + 1
    np.testing.assert_allclose(plan.run(x=xv)["y"], want, rtol=1e-5, atol=1e-5)
    with gn.config.options(disabled_passes={"fuse"}):
        plain = compile_plan({"y": y})
    assert {"sin", "cos"} <= step_ops(plain)
    np.testing.assert_allclose(plan.run(x=xv)["y"], plain.run(x=xv)["y"], rtol=1e-6, atol=1e-6)
    with pytest.raises(gn.DTypeError):
        gn.sin(gn.placeholder("i", (3,), "int64"))


def test_a_plan_with_the_sequence_ops_saves_and_loads(tmp_path) -> None:
    x = gn.placeholder("x", (None, 4, 4), "float64")
    top = gn.topk(gn.cumsum(x, -1), 2)
    outs = {"e": gn.einsum("bij,bkj->bik", gn.tril(x), gn.masked_fill(x, gn.causal_mask(4), 0.0)),
            "v": top.values, "i": top.indices, "a": gn.argmax(x), "s": gn.sin(x) + gn.cos(x)}
    plan = gn.compile(outs)
    plan.save(str(tmp_path / "seq.gnp"))
    loaded = gn.load(str(tmp_path / "seq.gnp"))
    xv = R.standard_normal((2, 4, 4))
    first, again = plan.run(x=xv), loaded.run(x=xv)
    for key in outs:
        np.testing.assert_array_equal(again[key], first[key], err_msg=key)
