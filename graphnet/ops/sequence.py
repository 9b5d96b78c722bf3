"""Ops for sequence models: einsum, masking (masked_fill, triu, tril, causal_mask), cumsum,
argmax and topk (with the gather/scatter pair along an axis that topk's gradient needs).

NumPy's names and meanings, and PyTorch's where NumPy has no such function (``masked_fill``,
``topk``); every kernel works on whole arrays (no loop over elements or batch items).
"""

from __future__ import annotations

import string
from typing import Any, NamedTuple, Sequence

import numpy as np

from .. import dtypes
from ..errors import DTypeError, FeedError, ShapeError
from ..ir import Dim, TensorType, TupleType
from ..tensor import Tensor, as_tensor, constant
from .common import broadcast_dims, declare, dims_equal, normalize_axis, sum_to
from .elementwise import cast, where
from .reduce import broadcast_like, expand_dims
from .registry import defop
from .shape import reshape, transpose
from .tuples import tuple_get

#: the letters einsum subscripts may use (NumPy's and PyTorch's: a-z and A-Z)
_LABELS = string.ascii_letters


# --- einsum -----------------------------------------------------------------------------------

def _split(subscripts: str) -> tuple[list[str], str]:
    """A normalised spec ``"ab,bc->ac"`` as (the operands' labels, the output's labels)."""
    lhs, arrow, out = subscripts.partition("->")
    if not arrow:
        raise ShapeError(f"einsum: the op takes explicit subscripts with '->', got {subscripts!r}")
    return lhs.split(","), out


def _label_sizes(terms: Sequence[str], types: Sequence[TensorType]) -> dict[str, Dim]:
    """Each label's size: equal within an operand (a diagonal), broadcast across operands (a
    size-1 dim stretches, as NumPy's and PyTorch's einsum do)."""
    met: dict[str, list[Dim]] = {}
    for k, (term, t) in enumerate(zip(terms, types)):
        own: dict[str, Dim] = {}
        for label, d in zip(term, t.shape):
            if label in own:
                if not dims_equal(own[label], d):
                    raise ShapeError(f"einsum: label {label!r} repeated in operand {k} has sizes {own[label]} and {d}")
                continue
            own[label] = d
            met.setdefault(label, []).append(d)
    sizes = {}
    for label, dims in met.items():
        try:
            sizes[label] = broadcast_dims(dims)
        except ShapeError:
            raise ShapeError(f"einsum: label {label!r} has sizes {dims} in different operands, which do not "
                             f"broadcast") from None
    return sizes


def _einsum_infer(*types: TensorType, subscripts: str) -> TensorType:
    terms, out = _split(subscripts)
    if not types or len(terms) != len(types):
        raise ShapeError(f"einsum: subscripts {subscripts!r} name {len(terms)} operands, got {len(types)}")
    for k, (term, t) in enumerate(zip(terms, types)):
        if any(c not in _LABELS for c in term):
            raise ShapeError(f"einsum: labels are letters, got {term!r}")
        if len(term) != t.ndim:
            raise ShapeError(f"einsum: operand {k} has {t.ndim} dims, but its subscripts {term!r} name {len(term)}")
    if any(c not in _LABELS for c in out) or len(set(out)) != len(out):
        raise ShapeError(f"einsum: the output's labels must be distinct letters, got {out!r}")
    unknown = sorted(set(out) - set("".join(terms)))
    if unknown:
        raise ShapeError(f"einsum: output labels {unknown} appear in no operand")
    sizes = _label_sizes(terms, types)
    dtype = types[0].dtype
    for t in types[1:]:
        dtype = dtypes.promote(dtype, t.dtype)
    return TensorType(tuple(sizes[label] for label in out), dtype)


def _pair_product(xp: Any, ta: str, tb: str, out: str, a: Any, b: Any) -> Any:
    """``einsum(f"{ta},{tb}->{out}", a, b)`` as one (batched) matrix product: the labels both
    operands and the output share are the batch, those of one operand and the output its rows
    (columns), those of both operands only the contraction; a label of one operand only is summed
    first. None where that does not apply (a repeated label, a size-1 dim broadcast): NumPy's
    einsum then computes it."""
    if len(set(ta)) != len(ta) or len(set(tb)) != len(tb):
        return None
    lone_a = tuple(i for i, label in enumerate(ta) if label not in tb and label not in out)
    if lone_a:
        a, ta = a.sum(axis=lone_a), "".join(label for i, label in enumerate(ta) if i not in lone_a)
    lone_b = tuple(i for i, label in enumerate(tb) if label not in ta and label not in out)
    if lone_b:
        b, tb = b.sum(axis=lone_b), "".join(label for i, label in enumerate(tb) if i not in lone_b)
    size: dict[str, int] = {}
    for term, array in ((ta, a), (tb, b)):
        for label, d in zip(term, array.shape):
            if size.setdefault(label, d) != d:
                return None
    batch = [label for label in out if label in ta and label in tb]
    rows = [label for label in out if label in ta and label not in tb]
    cols = [label for label in out if label in tb and label not in ta]
    inner = [label for label in ta if label in tb and label not in out]

    def count(labels: list[str]) -> int:
        total = 1
        for label in labels:
            total *= size[label]
        return total

    nb, nr, nc, ni = count(batch), count(rows), count(cols), count(inner)
    lhs = a.transpose([ta.index(label) for label in batch + rows + inner]).reshape(nb, nr, ni)
    if inner:
        rhs = b.transpose([tb.index(label) for label in batch + inner + cols]).reshape(nb, ni, nc)
        product = xp.matmul(lhs, rhs)
    else:  # no contraction: a broadcast product, (nb, nr, 1) * (nb, 1, nc)
        product = lhs * b.transpose([tb.index(label) for label in batch + cols]).reshape(nb, 1, nc)
    order = batch + rows + cols
    product = product.reshape(tuple(size[label] for label in order))
    return product.transpose([order.index(label) for label in out])


def _einsum_kernel(xp: Any, *arrays: Any, subscripts: str) -> Any:
    terms, out = _split(subscripts)
    dtype = xp.result_type(*arrays)
    if len(arrays) == 2:
        result = _pair_product(xp, terms[0], terms[1], out, *arrays)
        if result is not None:
            return result.astype(dtype, copy=False)
    if len(arrays) == 1:
        result = xp.einsum(subscripts, arrays[0])
        # a transpose or a diagonal is a view of the input: the op owns its result
        return result.copy() if xp.may_share_memory(result, arrays[0]) else xp.asarray(result)
    return xp.asarray(xp.einsum(subscripts, *arrays, optimize=True))


def _contract(terms: list[str], out: str, operands: list[Tensor]) -> Tensor:
    """``einsum`` of already normalised terms; a transpose (or nothing) where that is all it is."""
    if len(operands) == 1 and len(set(terms[0])) == len(terms[0]) and sorted(terms[0]) == sorted(out):
        if terms[0] == out:
            return operands[0]
        return transpose(operands[0], [terms[0].index(label) for label in out])
    return declare("einsum", operands, {"subscripts": ",".join(terms) + "->" + out})


def _diagonal_mask(label: str, size: Dim, positions: list[int], ndim: int, dtype: str) -> Tensor:
    """Ones where every axis in ``positions`` has the same index, shaped to broadcast over ``ndim`` dims."""
    if not isinstance(size, int):
        raise ShapeError(f"einsum: the gradient through the repeated label {label!r} needs its size to be static, "
                         f"got {size!r}")
    index = np.arange(size)
    mask = np.zeros((size,) * len(positions), dtype=dtype)
    mask[(index,) * len(positions)] = 1
    shape = [1] * ndim
    for p in positions:
        shape[p] = size
    return constant(mask.reshape(shape), dtype)


def _einsum_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...], subscripts: str) -> tuple:
    """Each operand's gradient is the einsum of the output's gradient with the other operands,
    onto the labels the operand shares with them; labels it alone has (summed away) broadcast
    back, a repeated label (a diagonal) is masked to its diagonal, and a broadcast size-1 dim is
    summed back."""
    terms, output = _split(subscripts)
    sizes = _label_sizes(terms, [x.node.type for x in ins])
    grads: list[Tensor | None] = []
    for k, x in enumerate(ins):
        if not dtypes.is_float(x.dtype):
            grads.append(None)
            continue
        term = terms[k]
        others = [j for j in range(len(ins)) if j != k]
        reachable = set(output).union(*(terms[j] for j in others))
        kept = "".join(dict.fromkeys(label for label in term if label in reachable))
        r = _contract([output] + [terms[j] for j in others], kept, [g] + [ins[j] for j in others])
        firsts = {term.index(label) for label in kept}
        inserted = [i for i in range(len(term)) if i not in firsts]
        if inserted:
            r = expand_dims(r, inserted)
        r = broadcast_like(r, x)
        for label in dict.fromkeys(term):
            positions = [i for i, other in enumerate(term) if other == label]
            if len(positions) > 1:
                r = r * _diagonal_mask(label, sizes[label], positions, len(term), r.dtype)
        if r.dtype != x.dtype:
            r = cast(r, x.dtype)
        grads.append(sum_to(r, x))
    return tuple(grads)


defop("einsum", attrs={"subscripts": "str"}, category="blas", infer=_einsum_infer, kernel=_einsum_kernel,
      grad=_einsum_grad,
      doc="Einstein summation over explicit subscripts ('ij,jk->ik'); a pair of operands runs as one batched "
          "matrix product.")


def _normalize_subscripts(subscripts: str, ndims: Sequence[int]) -> str:
    """Explicit subscripts without spaces or ellipses: ``"...ij,jk"`` for (2, 3, 4) and (4, 5)
    operands is ``"aij,jk->aik"`` (the ellipsis' dims take unused letters, right-aligned as
    NumPy broadcasts them; the implicit output is the ellipsis' dims, then the labels that appear
    once, in alphabetical order, uppercase first, as NumPy and PyTorch order them)."""
    if not isinstance(subscripts, str):
        raise ShapeError(f"einsum: subscripts must be a string such as 'ij,jk->ik', got {subscripts!r}")
    spec = "".join(subscripts.split())
    if spec.count("->") > 1:
        raise ShapeError(f"einsum: subscripts {subscripts!r} have more than one '->'")
    lhs, arrow, rhs = spec.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        raise ShapeError(f"einsum: subscripts {subscripts!r} name {len(terms)} operands, got {len(ndims)}")
    for term in terms + [rhs]:
        if any(c not in _LABELS and c != "." for c in term) or term.replace("...", "").count(".") \
                or term.count("...") > 1:
            raise ShapeError(f"einsum: subscripts are letters and at most one '...' per operand, got {term!r}")
    letters = set(spec) - {".", ",", "-", ">"}
    spare = [c for c in _LABELS if c not in letters]
    widths = []
    for term, ndim in zip(terms, ndims):
        named = len(term.replace("...", ""))
        if "..." in term:
            if named > ndim:
                raise ShapeError(f"einsum: subscripts {term!r} name {named} dims of a {ndim}-d operand")
            widths.append(ndim - named)
        elif named != ndim:
            raise ShapeError(f"einsum: operand of {ndim} dims, but its subscripts {term!r} name {named}")
    width = max(widths, default=0)
    if width > len(spare):
        raise ShapeError("einsum: too many dims under '...' for the letters left")
    ellipsis = "".join(spare[:width])
    terms = [term.replace("...", ellipsis[width - (ndim - len(term.replace("...", ""))):]) for term, ndim in
             zip(terms, ndims)]
    if arrow:
        if "..." not in rhs and width and any("..." in t for t in lhs.split(",")):
            # NumPy refuses to sum the ellipsis' dims away silently; so do we (only when it stands for dims)
            raise ShapeError(f"einsum: the output {rhs!r} has no '...' for the operands' '...' dims")
        out = rhs.replace("...", ellipsis)
    else:
        counts = {c: "".join(terms).count(c) for c in "".join(terms) if c not in ellipsis}
        out = ellipsis + "".join(sorted(c for c, n in counts.items() if n == 1))
    return ",".join(terms) + "->" + out


def einsum(subscripts: str, *operands: Any) -> Tensor:
    """Einstein summation, as ``np.einsum`` and ``torch.einsum``: ``einsum("bij,bjk->bik", a, b)``.

    ``subscripts`` name each operand's dims with letters (a-z, A-Z), comma-separated; ``->``
    names the output's, else (the implicit form) the output has the labels that appear once, in
    alphabetical order. ``...`` stands for the leading dims NumPy broadcasts. A label repeated
    in one operand takes its diagonal (``"ii->"`` is the trace); a dim of size 1 broadcasts
    against the same label's size in another operand. Operands may also come as one list
    (``torch.einsum("ij,jk", [a, b])``).

    Two operands run as one batched matrix product (transposes, reshapes and ``matmul``), more
    through NumPy's einsum with its contraction order optimised. The gradient of each operand
    is an einsum of the output's gradient with the other operands. Result dtype: the operands'
    promoted dtype; shape: the output labels' sizes.
    """
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise ShapeError("einsum needs at least one operand")
    like = next((o for o in operands if isinstance(o, Tensor)), None)
    tensors = [as_tensor(o, like) for o in operands]
    spec = _normalize_subscripts(subscripts, [t.ndim for t in tensors])
    return declare("einsum", tensors, {"subscripts": spec})


# --- masking -----------------------------------------------------------------------------------

def masked_fill(x: Any, mask: Any, value: Any) -> Tensor:
    """``x`` with ``value`` wherever ``mask`` is True, as PyTorch's ``torch.masked_fill``.

    ``mask`` is bool (a DTypeError otherwise) and broadcasts against ``x`` (the result has their
    broadcast shape, as PyTorch's out-of-place form). ``value`` is a Python number in ``x``'s
    dtype (rounded to a float dtype; one that overflows it, or one an integer or bool dtype cannot
    hold exactly, such as ``-inf`` or 0.5 into int64, is a DTypeError), or a 0-d tensor (cast to
    ``x``'s dtype; it gets the gradient summed over the filled positions). ``x``'s gradient is
    zero where filled. It is ``where(mask, value, x)``, so it fuses with its neighbours.
    """
    x = as_tensor(x)
    mask = as_tensor(mask)
    if mask.dtype != "bool":
        raise DTypeError(f"masked_fill: the mask must be bool, got {mask.dtype} (compare, e.g. mask == 0, or cast)")
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ShapeError(f"masked_fill: a tensor value must be 0-d, got shape {value.shape}")
        fill = value if value.dtype == x.dtype else cast(value, x.dtype)
    else:
        given = np.asarray(value)
        if given.ndim != 0 or given.dtype.kind not in "biuf":
            raise ShapeError(f"masked_fill: value must be a number or a 0-d tensor, got {value!r}")
        with np.errstate(all="ignore"):
            converted = given.astype(x.dtype)
        if dtypes.is_float(x.dtype):  # rounded, as PyTorch rounds it; overflow to inf is an error, as there
            fits = bool(np.isfinite(converted) or not np.isfinite(given))
        else:
            fits = bool(converted == given)
        if not fits:
            raise DTypeError(f"masked_fill: value {value!r} does not fit the input's dtype {x.dtype}")
        fill = constant(converted, x.dtype)
    return where(mask, fill, x)


def _triangle_infer(t: TensorType, *, diagonal: int) -> TensorType:
    if t.ndim < 2:
        raise ShapeError(f"needs an input of 2 or more dims (..., M, N), got {t.ndim}")
    return t


for _name in ("triu", "tril"):
    defop(_name, attrs={"diagonal": "int"}, category="other", infer=_triangle_infer,
          kernel=(lambda name: lambda xp, x, diagonal: getattr(xp, name)(x, diagonal))(_name),
          # keeping a triangle is linear and self-adjoint: the gradient keeps the same triangle
          grad=(lambda name: lambda g, out, ins, diagonal: (declare(name, [g], {"diagonal": diagonal}),))(_name),
          doc=f"np.{_name}: the {'upper' if _name == 'triu' else 'lower'} triangle of the last two dims, "
              "zeros elsewhere.")


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """The upper triangle of the last two dims of x (..., M, N): ``x[..., i, j]`` where
    ``j - i >= diagonal``, zero elsewhere (``np.triu``'s ``k``, ``torch.triu``'s ``diagonal``)."""
    return declare("triu", [x], {"diagonal": int(diagonal)})


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """The lower triangle of the last two dims of x (..., M, N): ``x[..., i, j]`` where
    ``j - i <= diagonal``, zero elsewhere (``np.tril``'s ``k``, ``torch.tril``'s ``diagonal``)."""
    return declare("tril", [x], {"diagonal": int(diagonal)})


def causal_mask(size: int, dtype: Any = "bool") -> Tensor:
    """A constant (size, size) mask of the positions a causal (autoregressive) attention must not
    see: those above the diagonal (key j after query i).

    ``dtype="bool"``: True above the diagonal, PyTorch's bool ``attn_mask`` convention (True = not
    allowed to attend); use it as ``masked_fill(scores, causal_mask(L), -inf)``. A float dtype:
    ``-inf`` above the diagonal and 0 elsewhere, what
    ``torch.nn.Transformer.generate_square_subsequent_mask(L)`` returns, to add to the scores.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 0:
        raise ShapeError(f"causal_mask: size must be an int >= 0, got {size!r}")
    name = dtypes.canonical(dtype)
    above = np.triu(np.ones((int(size), int(size)), dtype=bool), 1)
    if name == "bool":
        return constant(above)
    if not dtypes.is_float(name):
        raise DTypeError(f"causal_mask: dtype must be bool or a float dtype, got {name}")
    return constant(np.where(above, -np.inf, 0.0).astype(name))


# --- cumsum ------------------------------------------------------------------------------------

def _cumsum_infer(t: TensorType, *, axis: int, reverse: bool) -> TensorType:
    if not 0 <= axis < t.ndim:
        raise ShapeError(f"axis {axis} is out of range for a {t.ndim}-d input")
    return TensorType(t.shape, t.dtype if dtypes.is_float(t.dtype) else "int64")


def _cumsum_kernel(xp: Any, x: Any, axis: int, reverse: bool) -> Any:
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype("int64")
    if not reverse:
        return xp.cumsum(x, axis=axis, dtype=dtype)
    out = xp.empty(x.shape, dtype=dtype)
    xp.cumsum(xp.flip(x, axis), axis=axis, dtype=dtype, out=xp.flip(out, axis))  # written back to front
    return out


defop("cumsum", attrs={"axis": "int", "reverse": "bool"}, category="other", infer=_cumsum_infer,
      kernel=_cumsum_kernel,
      # d out[j] / d x[i] = 1 for j >= i: the gradient is the cumulative sum taken the other way
      grad=lambda g, out, ins, axis, reverse: (declare("cumsum", [g], {"axis": axis, "reverse": not reverse}),),
      doc="Cumulative sum along axis (reverse: from the end); integers and bools sum in int64.")


def cumsum(x: Tensor, axis: int | None = None) -> Tensor:
    """Cumulative sum along ``axis``, as ``np.cumsum`` (``axis=None``: over the flattened input,
    a 1-d result) and ``torch.cumsum``: same shape; floats keep their dtype, integers and bools
    sum in int64 (PyTorch's rule; NumPy's also for signed integers and bools, while NumPy sums
    uint8 in uint64, which graphnet does not have). The gradient is the reverse cumulative sum."""
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    return declare("cumsum", [x], {"axis": normalize_axis(axis, x.ndim), "reverse": False})


# --- argmax ------------------------------------------------------------------------------------

def _argmax_infer(t: TensorType, *, axis: tuple[int, ...], keepdims: bool) -> TensorType:
    if len(axis) > 1:
        raise ShapeError(f"argmax takes one axis or None, got {axis}")
    if not axis:
        if any(d == 0 for d in t.shape):
            raise ShapeError("argmax of an empty input")
        return TensorType((1,) * t.ndim if keepdims else (), "int64")
    a = axis[0]
    if not 0 <= a < t.ndim:
        raise ShapeError(f"axis {a} is out of range for a {t.ndim}-d input")
    if t.shape[a] == 0:
        raise ShapeError(f"argmax over axis {a} of size 0")
    shape = tuple(1 if i == a else d for i, d in enumerate(t.shape)) if keepdims else t.shape[:a] + t.shape[a + 1:]
    return TensorType(shape, "int64")


def _argmax_kernel(xp: Any, x: Any, axis: tuple[int, ...], keepdims: bool) -> Any:
    return xp.asarray(xp.argmax(x, axis=axis[0] if axis else None, keepdims=keepdims), dtype=np.int64)


# grad=None: the result is an integer index, on no gradient's path (as torch.argmax)
defop("argmax", attrs={"axis": "ints", "keepdims": "bool"}, category="reduction", infer=_argmax_infer,
      kernel=_argmax_kernel,
      doc="Index of the largest element along axis (axis=(): of the flattened input), int64; the first on ties.")


def argmax(x: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the largest element along ``axis`` (None: into the flattened input), as
    ``np.argmax``: int64, the first index among ties, NaN counted as the largest (NumPy's and
    PyTorch's rule). No gradient flows through it (an integer result)."""
    if axis is None or x.ndim == 0:
        axes: tuple[int, ...] = ()
    else:
        axes = (normalize_axis(axis, x.ndim),)
    return declare("argmax", [x], {"axis": axes, "keepdims": bool(keepdims)})


# --- topk, and the gather/scatter pair along an axis its gradient needs ------------------------

def _axis_index_infer(x: TensorType, indices: TensorType, axis: int, what: str) -> None:
    if not dtypes.is_int(indices.dtype):
        raise DTypeError(f"indices must be integers, got {indices.dtype}")
    if indices.ndim != x.ndim or not 0 <= axis < x.ndim:
        raise ShapeError(f"indices of {indices.ndim} dims for {what} of {x.ndim} dims along axis {axis}")
    for i, (a, b) in enumerate(zip(x.shape, indices.shape)):
        if i != axis and not dims_equal(a, b):
            raise ShapeError(f"indices and {what} differ on axis {i} ({b} vs {a}); only axis {axis} may")


def _take_infer(x: TensorType, indices: TensorType, *, axis: int) -> TensorType:
    _axis_index_infer(x, indices, axis, "the input")
    return TensorType(tuple(b if i == axis or not isinstance(a, int) else a
                            for i, (a, b) in enumerate(zip(x.shape, indices.shape))), x.dtype)


def _scatter_infer(g: TensorType, indices: TensorType, like: TensorType, *, axis: int) -> TensorType:
    _axis_index_infer(like, indices, axis, "the target")
    if g.ndim != indices.ndim or not all(dims_equal(a, b) for a, b in zip(g.shape, indices.shape)):
        raise ShapeError(f"values {g.shape} and indices {indices.shape} differ")
    return TensorType(like.shape, g.dtype)


def _scatter_kernel(xp: Any, g: Any, indices: Any, like: Any, axis: int) -> Any:
    out = xp.zeros(like.shape, dtype=g.dtype)
    where_ = list(xp.indices(indices.shape, sparse=True))
    where_[axis] = indices
    xp.add.at(out, tuple(where_), g)  # repeated indices add up
    return out


defop("take_along_axis", attrs={"axis": "int"}, category="other", infer=_take_infer,
      kernel=lambda xp, x, indices, axis: xp.take_along_axis(x, indices, axis=axis),
      grad=lambda g, out, ins, axis: (_scatter_along_axis(g, ins[1], ins[0], axis), None),
      doc="np.take_along_axis: x's elements at indices along axis.")
defop("scatter_along_axis", attrs={"axis": "int"}, category="other", shape_only=(2,), infer=_scatter_infer,
      kernel=_scatter_kernel,
      grad=lambda h, out, ins, axis: (_take_along_axis(h, ins[1], axis), None, None),
      doc="Zeros shaped like `like` with g added at indices along axis: the adjoint of take_along_axis.")


def _take_along_axis(x: Tensor, indices: Tensor, axis: int) -> Tensor:
    return declare("take_along_axis", [x, indices], {"axis": axis})


def _scatter_along_axis(g: Tensor, indices: Tensor, like: Tensor, axis: int) -> Tensor:
    return declare("scatter_along_axis", [g, indices, like], {"axis": axis})


def _topk_infer(t: TensorType, *, k: int, axis: int, largest: bool) -> TupleType:
    if not 0 <= axis < t.ndim:
        raise ShapeError(f"axis {axis} is out of range for a {t.ndim}-d input")
    n = t.shape[axis]
    if k < 0 or (isinstance(n, int) and k > n):
        raise ShapeError(f"k={k} must lie in [0, {n}] (the size of axis {axis})")
    shape = t.shape[:axis] + (k,) + t.shape[axis + 1:]
    return TupleType((TensorType(shape, t.dtype), TensorType(shape, "int64")))


def _topk_kernel(xp: Any, x: Any, k: int, axis: int, largest: bool) -> tuple[Any, Any]:
    n = x.shape[axis]
    if k > n:
        raise FeedError(f"topk: k={k} is larger than the size {n} of axis {axis}")
    pick = [slice(None)] * x.ndim
    if largest:
        # a stable ascending sort of x reversed, read from its end: the largest first, ties (and
        # NaNs, which NumPy sorts above everything) in the order of their indices
        order = xp.argsort(xp.flip(x, axis), axis=axis, kind="stable")
        pick[axis] = slice(n - k, n)
        indices = (n - 1) - xp.flip(order[tuple(pick)], axis)
    else:
        order = xp.argsort(x, axis=axis, kind="stable")
        pick[axis] = slice(0, k)
        indices = order[tuple(pick)]
    indices = xp.ascontiguousarray(indices, dtype=np.int64)
    return xp.take_along_axis(x, indices, axis=axis), indices


def _topk_grad(gs: tuple, outs: tuple[Tensor, ...], ins: tuple[Tensor, ...], *, k: int, axis: int,
               largest: bool) -> tuple:
    return (None if gs[0] is None else _scatter_along_axis(gs[0], outs[1], ins[0], axis),)


defop("topk", attrs={"k": "int", "axis": "int", "largest": "bool"}, category="other", infer=_topk_infer,
      kernel=_topk_kernel, grad=_topk_grad,
      doc="The k largest (smallest) elements along axis, sorted, and their int64 indices; ties by index.")


class TopK(NamedTuple):
    """``topk``'s result, as PyTorch's: ``values, indices = gn.topk(x, 3)``."""

    values: Tensor
    indices: Tensor


def topk(x: Tensor, k: int, axis: int = -1, largest: bool = True, sorted: bool = True) -> TopK:  # noqa: A002
    """The ``k`` largest (``largest=False``: smallest) elements of x along ``axis`` and their
    indices, as ``torch.topk(x, k, dim, largest, sorted)``: both shaped like x with ``k`` on
    ``axis``, the indices int64.

    Values come sorted (largest first; ascending with ``largest=False``) also for
    ``sorted=False``, whose order PyTorch leaves unspecified. Ties: the lower index first, always
    (a stable sort; PyTorch's CPU kernel gives that order in the common cases but does not
    promise it). NaN counts as larger than every number, as in PyTorch. The values' gradient goes
    to the positions they were picked from (zero elsewhere); the indices have none. The kernel
    sorts the whole axis (O(n log n)).
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ShapeError(f"topk: k must be an int, got {k!r}")
    if x.ndim == 0:
        raise ShapeError("topk needs an input of 1 or more dims")
    node = declare("topk", [x], {"k": int(k), "axis": normalize_axis(axis, x.ndim), "largest": bool(largest)})
    return TopK(tuple_get(node, 0), tuple_get(node, 1))
