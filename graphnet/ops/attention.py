"""Scaled dot-product attention as one op, its gradient as one more.

``scaled_dot_product_attention`` computes ``softmax(q @ k^T * scale + mask) @ v`` (PyTorch's
``F.scaled_dot_product_attention``) without ever holding the (L, S) matrix of scores when the
sequences are long: its kernel runs over blocks of query rows and key columns, keeping per row
the running maximum and sum of the exponentials (the "online softmax" of flash attention), and
rescales what it has added up whenever a block raises a row's maximum. Every product of a
block is one batched BLAS call over batch and heads. Short sequences (the whole score matrix,
batch and heads included, at most PLAIN_ELEMENTS scores) take the plain path: one block.

The op has three results: the output, each row's log-sum-exp of its scores (what the
gradient needs to recompute the probabilities of a block: ``p = exp(s - lse)``) and the seed
of its dropout mask. The gradient, ``scaled_dot_product_attention_grad``, goes over the same
blocks again, recomputing the scores instead of keeping them (flash attention's backward). Its
own gradient (a gradient penalty) is the first gradient written with plain ops and differentiated
through them: second derivatives do hold the (L, S) probabilities.

Dropout inside the kernel: the mask is a counter-based hash (SplitMix64) of the seed and each
element's position (batch, row, column), so any block of it can be computed again, in any
order, by the gradient; the seed of each run is drawn from the plan's random source
(``rng=``, as ``dropout`` draws its masks), so a plan compiled with ``seed=`` repeats its masks.

Masks: any number of them, each broadcast against (..., L, S): a bool mask keeps the scores
where it is True (PyTorch SDPA's convention), a float mask is added to the scores. A float
mask that depends on a placeholder or a variable gets a gradient (the gradient op then has one
more result per such mask), others are constants to it. ``causal``: row i sees columns j <= i
(PyTorch's top-left alignment when L != S), built per block, never as an (L, S) array.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import dtypes
from ..errors import DTypeError, GradientError, ShapeError
from ..ir import Node, TensorType, TupleType
from ..modes import ModeSwitch
from ..tensor import Tensor, as_tensor, constant
from .common import broadcast_shapes, declare, dims_equal, into_each, require_float, sum_to
from .registry import defop, get_op

#: score elements (batch x query rows x key columns) of one block of the blocked kernels: 8 MB in
#: float64 (blocks of 2**18 to 2**21 elements took about the same time at 512 to 4096 keys, one thread)
BLOCK_ELEMENTS = 1 << 20
#: the plain path (one block, all keys at once) while the whole score matrix has at most this many
#: elements (at (32 x 8 heads, 128, 128) the plain path took 19 ms, blocks of 16 x 64 scores 31 ms)
PLAIN_ELEMENTS = 1 << 22
#: key columns of a block (narrower blocks made the per-row reductions slower: 2048 keys in blocks
#: of 64 took 1.3 times as long as in blocks of 256); fewest query rows of a block
BLOCK_KEYS, MIN_ROWS = 256, 16


def block_sizes(batch: int, rows: int, keys: int) -> tuple[int, int]:
    """(query rows, key columns) per block of a kernel over ``batch`` (the product of the batch dims)
    matrices of ``rows`` x ``keys`` scores: the whole matrix when it is small (the plain path),
    else BLOCK_KEYS columns and as many rows as keep the block near BLOCK_ELEMENTS scores (at least
    MIN_ROWS: a block never holds more than batch x max(rows, MIN_ROWS) x BLOCK_KEYS scores)."""
    batch, rows, keys = max(batch, 1), max(rows, 1), max(keys, 1)
    if batch * rows * keys <= PLAIN_ELEMENTS:
        return rows, keys
    cols = min(keys, BLOCK_KEYS)
    return min(rows, max(MIN_ROWS, BLOCK_ELEMENTS // (batch * cols))), cols


# --- shape rules ------------------------------------------------------------------------------


def _check(q: TensorType, k: TensorType, v: TensorType, masks: Sequence[TensorType]) -> tuple:
    """The batch dims (q, k and v's broadcast) after checking every input."""
    for t, what in ((q, "query"), (k, "key"), (v, "value")):
        require_float(t, what)
        if t.ndim < 2:
            raise ShapeError(f"{what} must have at least 2 dims (..., length, features), got {t.shape}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise DTypeError(f"query, key and value must have one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    if not dims_equal(q.shape[-1], k.shape[-1]):
        raise ShapeError(f"query and key must have the same last dim (E), got {q.shape[-1]} and {k.shape[-1]}")
    if not dims_equal(k.shape[-2], v.shape[-2]):
        raise ShapeError(f"key and value must have the same length (S), got {k.shape[-2]} and {v.shape[-2]}")
    batch = broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scores = batch + (q.shape[-2], k.shape[-2])
    for m in masks:
        if m.dtype != "bool" and m.dtype != q.dtype:
            raise DTypeError(f"an attention mask must be bool or {q.dtype} (the query's dtype), got {m.dtype}")
        if m.ndim > len(scores):
            raise ShapeError(f"the mask {m.shape} has more dims than the scores {scores}")
        try:
            merged = broadcast_shapes(m.shape, scores)
        except ShapeError:
            merged = ()
        if len(merged) != len(scores) or not all(dims_equal(a, b) for a, b in zip(merged, scores)):
            raise ShapeError(f"the mask {m.shape} does not broadcast to the scores (..., L, S) = {scores}")
    return batch


def _infer(q: TensorType, k: TensorType, v: TensorType, *masks: TensorType, scale: float, causal: bool,
           dropout_p: float, training: Any) -> TupleType:
    batch = _check(q, k, v, masks)
    if not 0.0 <= dropout_p < 1.0:
        raise ShapeError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if not isinstance(training, (bool, ModeSwitch)):
        raise ShapeError(f"training must be a bool or a module's mode, got {training!r}")
    return TupleType((TensorType(batch + (q.shape[-2], v.shape[-1]), q.dtype),
                      TensorType(batch + (q.shape[-2],), q.dtype), TensorType((), "int64")))


def _grad_infer(*types: TensorType, scale: float, causal: bool, dropout_p: float, training: Any,
                mask_grads: tuple[bool, ...]) -> TupleType:
    n = len(types) - 7
    if n < 0 or len(mask_grads) != n:
        raise ShapeError(f"scaled_dot_product_attention_grad takes q, k, v, {len(mask_grads)} masks, the output, "
                         f"its log-sum-exp, the seed and the output's gradient; got {len(types)} inputs")
    q, k, v, masks = types[0], types[1], types[2], types[3:3 + n]
    out, lse, seed, g = types[3 + n:]
    batch = _check(q, k, v, masks)
    want = TensorType(batch + (q.shape[-2], v.shape[-1]), q.dtype)
    for what, t, shape in (("output", out, want.shape), ("gradient", g, want.shape),
                           ("log-sum-exp", lse, batch + (q.shape[-2],))):
        if t.dtype != q.dtype or len(t.shape) != len(shape) \
                or not all(dims_equal(a, b) for a, b in zip(t.shape, shape)):
            raise ShapeError(f"scaled_dot_product_attention_grad: the {what} must be {q.dtype}{shape}, got {t}")
    if seed.dtype != "int64" or seed.shape != ():
        raise ShapeError(f"scaled_dot_product_attention_grad: the seed must be int64 (), got {seed}")
    grads = [TensorType(batch + tuple(t.shape[-2:]), q.dtype) for t in (q, k, v)]
    for m, wanted in zip(masks, mask_grads):
        if wanted:
            if m.dtype == "bool":
                raise ShapeError("a bool mask has no gradient")
            grads.append(m)
    return TupleType(tuple(grads))


# --- kernels ---------------------------------------------------------------------------------

_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


class _DropoutMask:
    """Dropout's scaled keep-mask of any block of the (..., L, S) scores, from the run's seed alone:
    element (b, i, j) is kept when SplitMix64(seed + (counter + 1) * golden) >= p * 2**64, with
    counter = (b * L + i) * S + j, and then scaled by 1 / (1 - p)."""

    def __init__(self, xp: Any, p: float, seed: int, batch: tuple[int, ...], rows: int, keys: int) -> None:
        self.xp, self.keys = xp, np.uint64(keys)
        self.threshold = np.uint64(min(int(p * 2.0 ** 64), 2 ** 64 - 1))
        self.scale = 1.0 / (1.0 - p)
        self.seed = np.uint64(seed % 2 ** 64)
        count = int(np.prod(batch, dtype=np.int64))
        self.rows0 = (xp.arange(count, dtype=np.uint64) * np.uint64(rows)).reshape(batch + (1, 1))

    def block(self, lo: int, hi: int, a: int, b: int, dtype: Any) -> Any:
        xp = self.xp
        z = (self.rows0 + xp.arange(lo, hi, dtype=np.uint64)[:, None]) * self.keys
        z = z + xp.arange(a + 1, b + 1, dtype=np.uint64)
        z *= _GOLDEN
        z += self.seed
        z ^= z >> np.uint64(30)
        z *= _MIX1
        z ^= z >> np.uint64(27)
        z *= _MIX2
        z ^= z >> np.uint64(31)
        mask = (z >= self.threshold).astype(dtype)
        mask *= dtype.type(self.scale)
        return mask


def _lift(xp: Any, m: Any, ndim: int) -> Any:
    """``m`` with leading dims of size 1 up to ``ndim`` dims (a view)."""
    return m.reshape((1,) * (ndim - m.ndim) + tuple(m.shape))


def _window(m: Any, lo: int, hi: int, a: int, b: int) -> tuple:
    """The index of the block (rows lo:hi, columns a:b) in a mask that may broadcast along either."""
    return (Ellipsis, slice(lo, hi) if m.shape[-2] != 1 else slice(None),
            slice(a, b) if m.shape[-1] != 1 else slice(None))


def _scores(xp: Any, q: Any, k: Any, scale: float, masks: Sequence[Any], lo: int, hi: int, a: int, b: int,
            causal: bool) -> Any:
    """Rows lo:hi, columns a:b of ``q @ k^T * scale`` (the block's keys scaled, a small copy) with
    the masks applied (a hidden score is -inf)."""
    s = xp.matmul(q[..., lo:hi, :], xp.swapaxes(k[..., a:b, :] * k.dtype.type(scale), -1, -2))
    hidden = s.dtype.type(-np.inf)
    for m in masks:
        block = m[_window(m, lo, hi, a, b)]
        if block.dtype == np.bool_:
            xp.copyto(s, hidden, where=xp.logical_not(block))
        else:
            s += block
    if causal and b - 1 > lo:  # rows lo .. b-2 do not see every column of the block
        rows = xp.arange(lo, min(hi, b - 1))
        xp.copyto(s[..., :rows.shape[0], :], hidden, where=xp.arange(a, b)[None, :] > rows[:, None])
    return s


def _batch(q: Any, k: Any, v: Any) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]))


def _row_blocks(batch: tuple[int, ...], rows: int, keys: int, causal: bool):
    """(lo, hi, a, b) of each block in order: query rows lo:hi against key columns a:b, the
    blocks that causal masking hides entirely left out (row i sees columns j <= i)."""
    per_rows, per_keys = block_sizes(int(np.prod(batch, dtype=np.int64)), rows, keys)
    for r0 in range(0, rows, per_rows):
        r1 = min(rows, r0 + per_rows)
        for a in range(0, keys, per_keys):
            lo = max(r0, a) if causal else r0
            if lo >= r1:
                break
            yield lo, r1, a, min(keys, a + per_keys)


def attention_forward(xp: Any, q: Any, k: Any, v: Any, masks: Sequence[Any], scale: float, causal: bool,
                      dropout_p: float = 0.0, seed: int = 0, out: Any = None) -> tuple[Any, Any]:
    """(output, log-sum-exp of each row's scores): the blocked online-softmax kernel (one block:
    the plain path). A row that sees no key gives 0 (and a log-sum-exp of 0). ``out``: arrays for
    the two results, or None."""
    batch = _batch(q, k, v)
    rows, keys, dtype = q.shape[-2], k.shape[-2], q.dtype
    masks = [_lift(xp, m, len(batch) + 2) for m in masks]
    q = xp.broadcast_to(q, batch + q.shape[-2:])  # a view: every block's scores have all batch dims
    targets = out if out is not None else (None, None)
    acc = targets[0] if targets[0] is not None else xp.empty(batch + (rows, v.shape[-1]), dtype)
    lse = targets[1] if targets[1] is not None else xp.empty(batch + (rows,), dtype)
    total = xp.empty(batch + (rows,), dtype)  # each row's sum of exp(s - its maximum so far)
    if keys == 0:
        acc[...] = 0
        lse[...] = -np.inf
        return acc, lse
    drop = _DropoutMask(xp, dropout_p, seed, batch, rows, keys) if dropout_p > 0.0 else None
    top = lse  # each row's maximum so far (the log-sum-exp is written over it at the end)
    for lo, hi, a, b in _row_blocks(batch, rows, keys, causal):
        s = _scores(xp, q, k, scale, masks, lo, hi, a, b, causal)
        new = s.max(axis=-1)
        row_top, row_total, row_acc = top[..., lo:hi], total[..., lo:hi], acc[..., lo:hi, :]
        first = a == 0  # every row of lo:hi meets its first block here
        if not first:
            xp.maximum(new, row_top, out=new)
        shift = xp.where(xp.isneginf(new), dtype.type(0), new)  # a row that sees nothing yet stays at 0
        s -= shift[..., None]
        xp.exp(s, out=s)
        if first:
            row_total[...] = s.sum(axis=-1)
        else:
            rescale = xp.exp(row_top - shift)
            row_total *= rescale
            row_total += s.sum(axis=-1)
        if drop is not None:
            s *= drop.block(lo, hi, a, b, dtype)
        part = xp.matmul(s, v[..., a:b, :])
        if first:
            row_acc[...] = part
        else:
            row_acc *= rescale[..., None]
            row_acc += part
        row_top[...] = new
        del s, part  # before the next block's scores exist: one block's temporaries at a time
    seen = total > 0
    xp.divide(acc, total[..., None], out=acc, where=seen[..., None])
    with np.errstate(divide="ignore"):
        lse += xp.log(total)
    # a row that sees nothing: every score -inf, so exp(s - lse) is 0 for any finite lse; 0 keeps
    # the result finite (check_numerics)
    xp.copyto(lse, dtype.type(0), where=xp.logical_not(seen))
    return acc, lse


def attention_backward(xp: Any, q: Any, k: Any, v: Any, masks: Sequence[Any], o: Any, lse: Any, g: Any,
                       scale: float, causal: bool, dropout_p: float = 0.0, seed: int = 0,
                       mask_grads: Sequence[bool] = (), out: Any = None) -> tuple[Any, ...]:
    """(dq, dk, dv, then d mask for each mask flagged in ``mask_grads``), over the blocks of
    ``attention_forward``, recomputing each block's probabilities from the log-sum-exp:
    ds = p * (dp - rowsum(g * o)) with dp = g @ v^T (times the dropout mask)."""
    batch = _batch(q, k, v)
    rows, keys, dtype = q.shape[-2], k.shape[-2], q.dtype
    nd = len(batch) + 2
    lifted = [_lift(xp, m, nd) for m in masks]
    q = xp.broadcast_to(q, batch + q.shape[-2:])
    targets = list(out) if out is not None else [None] * (3 + sum(mask_grads))
    shapes = [batch + q.shape[-2:], batch + k.shape[-2:], batch + v.shape[-2:]] + \
        [m.shape for m, w in zip(masks, mask_grads) if w]
    grads = []
    for target, shape in zip(targets, shapes):
        if target is None:
            target = xp.zeros(shape, dtype)
        else:
            target[...] = 0
        grads.append(target)
    dq, dk, dv = grads[:3]
    dmasks = iter(grads[3:])
    flagged = [(m, _lift(xp, next(dmasks), nd)) for m, w in zip(lifted, mask_grads) if w]
    drop = _DropoutMask(xp, dropout_p, seed, batch, rows, keys) if dropout_p > 0.0 else None
    delta = xp.sum(g * o, axis=-1)  # rowsum(g * o) = rowsum(p * dp), dropout or not
    for lo, hi, a, b in _row_blocks(batch, rows, keys, causal):
        s = _scores(xp, q, k, scale, lifted, lo, hi, a, b, causal)
        s -= lse[..., lo:hi, None]
        p = xp.exp(s, out=s)
        g_rows = g[..., lo:hi, :]
        dp = xp.matmul(g_rows, xp.swapaxes(v[..., a:b, :], -1, -2))
        if drop is not None:
            keep = drop.block(lo, hi, a, b, dtype)
            dv[..., a:b, :] += xp.matmul(xp.swapaxes(p * keep, -1, -2), g_rows)
            dp *= keep
        else:
            dv[..., a:b, :] += xp.matmul(xp.swapaxes(p, -1, -2), g_rows)
        dp -= delta[..., lo:hi, None]
        dp *= p  # the gradient of the block's scores
        for m, dm in flagged:
            target = dm[_window(m, lo, hi, a, b)]
            target += _reduce_to(xp, dp, target.shape)
        dq[..., lo:hi, :] += xp.matmul(dp, k[..., a:b, :])
        dk[..., a:b, :] += xp.matmul(xp.swapaxes(dp, -1, -2), q[..., lo:hi, :])
        s = p = dp = keep = None  # freed before the next block's scores exist
    dq *= dtype.type(scale)
    dk *= dtype.type(scale)
    return tuple(grads)


def _reduce_to(xp: Any, x: Any, shape: tuple[int, ...]) -> Any:
    axes = tuple(i for i, (d, t) in enumerate(zip(x.shape, shape)) if t == 1 and d != 1)
    return xp.sum(x, axis=axes, keepdims=True) if axes else x


def _kernel(xp: Any, q: Any, k: Any, v: Any, *masks: Any, scale: float, causal: bool, dropout_p: float,
            training: Any, rng: Any = None, out: Any = None) -> tuple[Any, Any, Any]:
    drop = training is True and dropout_p > 0.0  # a mode not resolved to True (no plan): no dropout
    seed = int(rng.integers(0, 2 ** 63)) if drop else 0
    o, lse = attention_forward(xp, q, k, v, masks, scale, causal, dropout_p if drop else 0.0, seed,
                               out=None if out is None else out[:2])
    return into_each(xp, (o, lse, xp.asarray(seed, dtype=np.int64)), out)


def _grad_kernel(xp: Any, *arrays: Any, scale: float, causal: bool, dropout_p: float, training: Any,
                 mask_grads: tuple[bool, ...], out: Any = None) -> tuple[Any, ...]:
    q, k, v = arrays[:3]
    masks = arrays[3:-4]
    o, lse, seed, g = arrays[-4:]
    drop = training is True and dropout_p > 0.0
    return attention_backward(xp, q, k, v, masks, o, lse, g, scale, causal, dropout_p if drop else 0.0,
                              int(seed), mask_grads, out=out)


def scratch_bytes(op: str, shapes: Sequence[tuple[int, ...]], attrs: Any, itemsize: int) -> int:
    """Bytes the kernels of ``op`` (scaled_dot_product_attention or its gradient) allocate and free
    while they run, besides their results: a few values per row, and one block's scores with
    its temporaries (the dropout mask's hash, the probabilities' gradient,
    the block's products). The backend's peak-memory rule reads it."""
    grad = op.endswith("_grad")
    q, k, v = (tuple(int(d) for d in s) for s in shapes[:3])
    masks = shapes[3:len(shapes) - 4] if grad else shapes[3:]
    batch = int(np.prod(np.broadcast_shapes(q[:-2], k[:-2], v[:-2]), dtype=np.int64))
    (rows, e), keys, ev = q[-2:], k[-2], v[-1]
    per_rows, per_keys = block_sizes(batch, rows, keys)
    n = batch * per_rows * per_keys
    block = n * (itemsize + len(masks)) + per_rows * per_keys + batch * (per_rows * (ev + 3) + per_keys * e) * itemsize
    if attrs["dropout_p"] > 0.0 and attrs["training"] is True:
        block += n * (8 + 8 + 1 + itemsize)
    fixed = batch * rows * itemsize
    if grad:
        block += n * itemsize * (2 if attrs["dropout_p"] > 0.0 else 1) \
            + batch * (per_keys * (e + ev) + per_rows * e) * itemsize
        fixed += batch * rows * (ev + 2) * itemsize
    return fixed + block


# --- gradient rules -----------------------------------------------------------------------------


def _depends_on_inputs(node: Node) -> bool:
    """Whether ``node`` reads a float placeholder or variable (so a gradient may be asked of it)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n.uid in seen:
            continue
        seen.add(n.uid)
        if n.op in ("placeholder", "variable") and dtypes.is_float(n.type.dtype):
            return True
        stack.extend(n.inputs)
    return False


def _grad(gs: tuple, outs: tuple[Tensor, ...], ins: tuple[Tensor, ...], *, scale: float, causal: bool,
          dropout_p: float, training: Any) -> tuple:
    from .tuples import tuple_get

    g_out, g_lse = gs[0], gs[1]
    if g_lse is not None:
        raise GradientError("the log-sum-exp result of scaled_dot_product_attention is internal to its gradient and "
                            "has no gradient rule of its own")
    if g_out is None:
        return (None,) * len(ins)
    q, k, v = ins[:3]
    masks = ins[3:]
    mask_grads = tuple(dtypes.is_float(m.dtype) and _depends_on_inputs(m.node) for m in masks)
    node = declare("scaled_dot_product_attention_grad", [q, k, v, *masks, outs[0], outs[1], outs[2], g_out],
                   {"scale": scale, "causal": causal, "dropout_p": dropout_p, "training": training,
                    "mask_grads": mask_grads})
    results = iter(tuple_get(node, i) for i in range(len(node.node.types)))
    grads = [sum_to(next(results), t) for t in (q, k, v)]
    grads += [sum_to(next(results), m) if w else None for m, w in zip(masks, mask_grads)]
    return tuple(grads)


def _plain(q: Tensor, k: Tensor, v: Tensor, masks: Sequence[Tensor], scale: float, causal: bool) -> Tensor:
    """softmax(q k^T * scale + masks) with plain ops: the probabilities, (..., L, S)."""
    from .elementwise import where
    from .nn import softmax
    from .linalg import matmul
    from .shape import swapaxes

    s = matmul(q, swapaxes(k, -1, -2)) * scale
    for m in masks:
        s = where(m, s, -np.inf) if m.dtype == "bool" else s + m
    if causal:
        rows, keys = q.shape[-2], k.shape[-2]
        if not isinstance(rows, int) or not isinstance(keys, int):
            raise GradientError("the second derivative of causal attention needs static sequence lengths")
        s = where(constant(np.tril(np.ones((rows, keys), bool))), s, -np.inf)
    return softmax(s, -1)


def _second_order(hs: tuple, outs: tuple[Tensor, ...], ins: tuple[Tensor, ...], *, scale: float, causal: bool,
                  dropout_p: float, training: Any, mask_grads: tuple[bool, ...]) -> tuple:
    """The gradient of the gradient: the first gradient written with plain ops (the full (L, S)
    probabilities) and differentiated through them, here (second derivatives are rare and small)."""
    from .linalg import matmul
    from .reduce import sum as reduce_sum
    from .shape import swapaxes

    if dropout_p > 0.0 and training is not False:
        raise GradientError("second derivatives of attention with dropout are not supported")
    n = len(mask_grads)
    q, k, v, masks = ins[0], ins[1], ins[2], ins[3:3 + n]
    g = ins[-1]
    p = _plain(q, k, v, masks, scale, causal)
    dv = matmul(swapaxes(p, -1, -2), g)
    dp = matmul(g, swapaxes(v, -1, -2))
    ds = p * (dp - reduce_sum(dp * p, -1, keepdims=True))
    results = [matmul(ds, k) * scale, matmul(swapaxes(ds, -1, -2), q) * scale, dv]
    results += [sum_to(ds, m) for m, w in zip(masks, mask_grads) if w]
    wrt = [q, k, v] + [m for m, w in zip(masks, mask_grads) if w] + [g]
    found = _reverse(results, hs, wrt)
    found_masks = iter(found[3:-1])
    return tuple(found[:3]) + tuple(next(found_masks) if w else None for w in mask_grads) + \
        (None, None, None, found[-1])


def _reverse(outputs: Sequence[Tensor], cotangents: Sequence[Tensor | None], wrt: Sequence[Tensor]) -> list:
    """sum_i <cotangents[i], outputs[i]> differentiated with respect to each of ``wrt``, through the
    nodes between them (single-result ops with gradient rules); an input listed twice gets its
    gradient once (autodiff adds up the slots). Not autodiff's vjp: these are partial derivatives
    for the op's input slots, so the walk stops at ``wrt`` (the incoming gradient may itself
    depend on q, and autodiff adds that path through the slot of its own)."""
    stop = {t.node.uid for t in wrt}
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(t.node, False) for t in outputs]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node.uid in seen:
            continue
        seen.add(node.uid)
        stack.append((node, True))
        if node.uid not in stop:
            stack.extend((i, False) for i in node.inputs if i.uid not in seen)
    live = set(stop)
    for node in order:
        if node.uid not in live and any(dtypes.is_float(t.dtype) for t in node.types) \
                and any(i.uid in live for i in node.inputs):
            live.add(node.uid)
    parts: dict[int, list[Tensor]] = {}
    for out, h in zip(outputs, cotangents):
        if h is not None and out.node.uid in live:
            parts.setdefault(out.node.uid, []).append(h)
    for node in reversed(order):
        terms = parts.get(node.uid)
        if node.uid in stop or not terms:
            continue
        del parts[node.uid]
        g = terms[0]
        for extra in terms[1:]:
            g = g + extra
        ins = tuple(Tensor(i) for i in node.inputs)
        for inp, gi in zip(node.inputs, get_op(node.op).grad(g, Tensor(node), ins, **node.attrs)):
            if gi is not None and inp.uid in live:
                parts.setdefault(inp.uid, []).append(gi)
    result, given = [], set()
    for t in wrt:
        terms = parts.get(t.node.uid) if t.node.uid not in given else None
        given.add(t.node.uid)
        total = None
        for term in terms or ():
            total = term if total is None else total + term
        result.append(total)
    return result


_ATTRS = {"scale": "float", "causal": "bool", "dropout_p": "float", "training": "mode"}

# "random": the kernel takes rng= (it draws the seed of its dropout mask), and CSE never merges two of them.
defop("scaled_dot_product_attention", attrs=_ATTRS, category="random", infer=_infer, kernel=_kernel, grad=_grad,
      accepts_out=True,
      doc="softmax(q k^T * scale + masks) v over blocks of keys (online softmax): (output, each row's "
          "log-sum-exp, the dropout seed).")
defop("scaled_dot_product_attention_grad", attrs={**_ATTRS, "mask_grads": "bools"}, category="other",
      infer=_grad_infer, kernel=_grad_kernel, grad=_second_order, accepts_out=True,
      doc="Gradients of scaled_dot_product_attention (q, k, v, then each float mask flagged), over the same "
          "blocks, the probabilities recomputed from the log-sum-exp.")


# --- the functional form ------------------------------------------------------------------------------


def _as_mask(mask: Any, like: Tensor) -> Tensor:
    if isinstance(mask, Tensor):
        return mask
    array = np.asarray(mask)
    return constant(array, "bool" if array.dtype == np.bool_ else like.dtype)


def attention(q: Tensor, k: Tensor, v: Tensor, masks: Sequence[Any] = (), *, causal: bool = False,
              scale: float | None = None, dropout_p: float = 0.0, training: Any = True) -> Tensor:
    """The op itself: any number of ``masks`` (bool: True attends; float: added), ``causal`` beside
    them, dropout of the probabilities with ``dropout_p`` where ``training`` (a bool or a module's mode)."""
    q, k, v = as_tensor(q), as_tensor(k), as_tensor(v)
    if scale is None:
        e = q.shape[-1] if q.ndim else None
        if not isinstance(e, int) or e < 1:
            raise ShapeError(f"scaled_dot_product_attention: the default scale 1/sqrt(E) needs a static E >= 1, "
                             f"got query {q.shape}; pass scale=")
        scale = 1.0 / math.sqrt(e)
    if not 0.0 <= dropout_p < 1.0:
        raise ShapeError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if not isinstance(training, (bool, ModeSwitch)):
        raise ShapeError(f"training must be a bool or a module's mode, got {training!r}")
    if dropout_p == 0.0:
        training = False
    inputs = [q, k, v] + [_as_mask(m, q) for m in masks]
    from .tuples import tuple_get

    node = declare("scaled_dot_product_attention", inputs, {"scale": float(scale), "causal": bool(causal),
                                                            "dropout_p": float(dropout_p), "training": training})
    return tuple_get(node, 0)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 *, training: Any = True) -> Tensor:
    """As PyTorch's ``F.scaled_dot_product_attention``: ``softmax(q k^T * scale + mask) v``.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); the batch dims
    broadcast. ``attn_mask`` broadcasts to (..., L, S): bool keeps the scores where True, float
    is added (a NumPy array becomes a constant). ``is_causal``: row i sees keys j <= i (with
    ``attn_mask`` a ShapeError, as PyTorch refuses both). ``scale`` defaults to 1 / sqrt(E).
    ``dropout_p`` drops probabilities (from the plan's random source) where ``training`` holds:
    True by default, as PyTorch's functional form, or a module's mode. A row that sees no key
    gives zeros. Never holds the (L, S) scores of long sequences (see graphnet.ops.attention).
    """
    if is_causal and attn_mask is not None:
        raise ShapeError("scaled_dot_product_attention: pass attn_mask or is_causal=True, not both (as PyTorch)")
    return attention(query, key, value, () if attn_mask is None else (attn_mask,), causal=is_causal, scale=scale,
                     dropout_p=dropout_p, training=training)
