"""Shape ops: reshape, flatten, transpose, concat, slicing, pad."""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import ShapeError
from ..ir import Dim, Shape, TensorType
from ..tensor import Tensor
from .common import declare, dims_equal, normalize_axis, prod
from .registry import defop


# --- reshape ----------------------------------------------------------------------------

def _element_count(shape: Shape) -> tuple[int, tuple[str, ...]] | None:
    """A shape's element count as (static product, sorted names), or None with an unknown dim."""
    static, names = 1, []
    for d in shape:
        if d is None:
            return None
        if isinstance(d, str):
            names.append(d)
        else:
            static *= d
    return static, tuple(sorted(names))


def _reshape_infer(t: TensorType, *, shape: Shape) -> TensorType:
    """Target dims are ints, at most one -1 (inferred) or one name (a symbolic dim).

    The inferred dim is an int when the input's size is static, the input's one symbolic
    dim when the static parts cancel (``("batch", 2, 4)`` -> ``(-1, 8)`` gives ``"batch"``),
    and unknown otherwise.
    """
    if not isinstance(shape, tuple) or not all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool)
                                                                      and d >= -1) for d in shape):
        raise ShapeError(f"reshape target {shape!r}: use ints >= 0, one -1 or one name")
    free = [i for i, d in enumerate(shape) if d == -1 or isinstance(d, str)]
    if len(free) > 1:
        raise ShapeError(f"reshape to {shape}: at most one unknown dim (-1 or a name)")
    counted = _element_count(t.shape)
    known = prod([d for d in shape if isinstance(d, int) and d != -1])
    out: list[Dim] = list(shape)
    if not free:
        if counted is not None and not counted[1] and counted[0] != known:
            raise ShapeError(f"cannot reshape {t.shape} ({counted[0]} elements) to {shape} ({known} elements)")
        return TensorType(shape, t.dtype)
    i = free[0]
    if counted is None:
        out[i] = None if shape[i] == -1 else shape[i]
    elif not counted[1]:
        if known == 0 or counted[0] % known:
            raise ShapeError(f"cannot reshape {t.shape} ({counted[0]} elements) to {shape}")
        out[i] = counted[0] // known if shape[i] == -1 else shape[i]
    else:
        static, names = counted
        if shape[i] == -1:
            out[i] = names[0] if len(names) == 1 and static == known else None
        elif names == (shape[i],) and static != known:
            raise ShapeError(f"cannot reshape {t.shape} to {shape}: the static sizes {static} and {known} differ")
    return TensorType(tuple(out), t.dtype)


def _reshape_kernel(xp: Any, x: Any, shape: Shape) -> Any:
    return x.reshape(tuple(-1 if isinstance(d, str) else d for d in shape))


defop("reshape", attrs={"shape": "shape"}, category="layout", views=((0, 0),), infer=_reshape_infer, kernel=_reshape_kernel,
      grad=lambda g, out, ins, shape: (reshape_like(g, ins[0]),))
defop("reshape_like", attrs={}, shape_only=(1,), category="layout", views=((0, 0),), infer=lambda t, like: TensorType(like.shape, t.dtype),
      kernel=lambda xp, x, like: x.reshape(like.shape),
      grad=lambda g, out, ins: (reshape_like(g, ins[0]), None))


def reshape(x: Tensor, shape: Sequence[Any]) -> Tensor:
    """``x`` with a new shape; one entry may be unknown: -1, None, or a name such as ``"batch"``.

    A name stays on the result's type, so ``reshape(x, ("batch", 8))`` has shape ("batch", 8).
    """
    target = tuple(-1 if d is None else d if isinstance(d, str) else int(d) for d in shape)
    return declare("reshape", [x], {"shape": target})


def reshape_like(x: Tensor, like: Tensor) -> Tensor:
    """``x`` reshaped to ``like``'s run-time shape."""
    if tuple(x.shape) == tuple(like.shape) and all(isinstance(d, int) for d in x.shape):
        return x
    return declare("reshape_like", [x, like])


def _flatten_infer(t: TensorType, *, start: int, end: int) -> TensorType:
    if t.ndim == 0:
        return TensorType((1,), t.dtype)
    return TensorType(t.shape[:start] + (prod(t.shape[start:end + 1]),) + t.shape[end + 1:], t.dtype)


def _flatten_kernel(xp: Any, x: Any, start: int, end: int) -> Any:
    merged = 1
    for d in x.shape[start:end + 1]:
        merged *= d
    return x.reshape(x.shape[:start] + (merged,) + x.shape[end + 1:])  # (not -1: ambiguous for an empty batch)


defop("flatten", attrs={"start": "int", "end": "int"}, category="layout", views=((0, 0),), infer=_flatten_infer, kernel=_flatten_kernel,
      grad=lambda g, out, ins, start, end: (reshape_like(g, ins[0]),))


def flatten(x: Tensor, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one (PyTorch's defaults keep the batch dim)."""
    start = normalize_axis(start_dim, x.ndim)
    end = normalize_axis(end_dim, x.ndim)
    if end < start:
        raise ShapeError(f"flatten: end_dim {end_dim} comes before start_dim {start_dim}")
    return declare("flatten", [x], {"start": start, "end": end})


# --- copy: a fresh array (the lowering copies outputs that would alias state) --------------

def _copy_kernel(xp: Any, x: Any, out: Any = None) -> Any:
    if out is None:
        return xp.array(x, copy=True)
    xp.copyto(out, x)
    return out


defop("copy", attrs={}, category="layout", infer=lambda t: t, kernel=_copy_kernel, accepts_out=True,
      grad=lambda g, out, ins: (g,), doc="A copy of ``x`` that shares no memory with it.")


# --- stop_gradient: the identity, through which no gradient flows ---------------------------

defop("stop_gradient", attrs={}, category="layout", views=((0, 0),), infer=lambda t: t, kernel=lambda xp, x: x,
      grad=lambda g, out, ins: (None,), doc="``x`` itself; gradients treat it as a constant.")


def stop_gradient(x: Tensor) -> Tensor:
    """``x``, treated as a constant by differentiation (``jax.lax.stop_gradient``)."""
    return declare("stop_gradient", [x])


# --- transpose --------------------------------------------------------------------------

def _transpose_infer(t: TensorType, *, axes: tuple[int, ...]) -> TensorType:
    if sorted(axes) != list(range(t.ndim)):
        raise ShapeError(f"axes {axes} are not a permutation of {t.ndim} dims")
    return TensorType(tuple(t.shape[a] for a in axes), t.dtype)


def _inverse(axes: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(axes)
    for i, a in enumerate(axes):
        inv[a] = i
    return tuple(inv)


defop("transpose", attrs={"axes": "ints"}, category="layout", views=((0, 0),), infer=_transpose_infer, kernel=lambda xp, x, axes: xp.transpose(x, axes),
      grad=lambda g, out, ins, axes: (transpose(g, _inverse(axes)),))


def transpose(x: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    """Permute dims (reverse them when ``axes`` is None)."""
    if axes is None:
        axes = tuple(reversed(range(x.ndim)))
    return declare("transpose", [x], {"axes": tuple(normalize_axis(a, x.ndim) for a in axes)})


def swapaxes(x: Tensor, a: int, b: int) -> Tensor:
    """Exchange two dims."""
    axes = list(range(x.ndim))
    a, b = normalize_axis(a, x.ndim), normalize_axis(b, x.ndim)
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, axes)


# --- concat -------------------------------------------------------------------------------

def _concat_infer(*types: TensorType, axis: int) -> TensorType:
    first = types[0]
    for t in types[1:]:
        if t.ndim != first.ndim:
            raise ShapeError(f"all inputs need {first.ndim} dims")
        if t.dtype != first.dtype:
            raise ShapeError(f"dtypes differ: {first.dtype} and {t.dtype}")
        for i, (a, b) in enumerate(zip(first.shape, t.shape)):
            if i != axis and not dims_equal(a, b):
                raise ShapeError(f"sizes differ on axis {i} ({a} vs {b}); only axis {axis} may differ")
    size = prod([t.shape[axis] for t in types])
    total = None if size is None else sum(t.shape[axis] for t in types)  # type: ignore[misc]
    return TensorType(first.shape[:axis] + (total,) + first.shape[axis + 1:], first.dtype)


def _concat_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...], axis: int) -> tuple:
    grads, start = [], 0
    for x in ins:
        size = x.shape[axis]
        if not isinstance(size, int):
            raise ShapeError("concat gradient needs static sizes along the concatenated axis")
        key = [(None, None, None)] * g.ndim
        key[axis] = (start, start + size, 1)
        grads.append(slice_(g, tuple(key)))
        start += size
    return tuple(grads)


defop("concat", attrs={"axis": "int"}, category="layout", infer=_concat_infer, kernel=lambda xp, *xs, axis: xp.concatenate(xs, axis=axis), grad=_concat_grad)


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along ``axis`` (other dims must match)."""
    tensors = list(tensors)
    if not tensors:
        raise ShapeError("concat needs at least one tensor")
    return declare("concat", tensors, {"axis": normalize_axis(axis, tensors[0].ndim)})


# --- slicing ------------------------------------------------------------------------------

Key = tuple[tuple[int | None, int | None, int | None], ...]


def _slice_infer(t: TensorType, *, key: Key) -> TensorType:
    if len(key) != t.ndim:
        raise ShapeError(f"slice key has {len(key)} entries for a {t.ndim}-d input")
    shape = []
    for d, (start, stop, step) in zip(t.shape, key):
        if isinstance(d, int):
            shape.append(len(range(*slice(start, stop, step).indices(d))))
        elif start is None and stop is None and step in (None, 1):
            shape.append(d)
        else:
            shape.append(None)
    return TensorType(tuple(shape), t.dtype)


def _slices(key: Key) -> tuple[slice, ...]:
    return tuple(slice(*k) for k in key)


def _slice_grad_kernel(xp: Any, g: Any, like: Any, key: Key) -> Any:
    out = xp.zeros(like.shape, dtype=g.dtype)
    out[_slices(key)] = g
    return out


defop("slice", attrs={"key": "key"}, category="layout", views=((0, 0),), infer=_slice_infer, kernel=lambda xp, x, key: x[_slices(key)],
      grad=lambda g, out, ins, key: (slice_grad(g, ins[0], key),))
defop("slice_grad", attrs={"key": "key"}, category="layout", infer=lambda g, like, key: TensorType(like.shape, g.dtype), kernel=_slice_grad_kernel,
      grad=lambda g, out, ins, key: (slice_(g, key), None))


def slice_(x: Tensor, key: Key) -> Tensor:
    """Basic slicing: one (start, stop, step) triple per dim."""
    return declare("slice", [x], {"key": tuple(key)})


def slice_grad(g: Tensor, like: Tensor, key: Key) -> Tensor:
    """Zeros shaped like ``like`` with ``g`` written at ``key``: the adjoint of slicing."""
    return declare("slice_grad", [g, like], {"key": tuple(key)})


def getitem(x: Tensor, index: Any) -> Tensor:
    """``x[index]`` for ints, slices, ``...`` and None (basic indexing)."""
    if not isinstance(index, tuple):
        index = (index,)
    if sum(1 for i in index if i is Ellipsis) > 1:
        raise ShapeError("only one ... allowed in an index")
    explicit = sum(1 for i in index if i is not None and i is not Ellipsis)
    if explicit > x.ndim:
        raise ShapeError(f"too many indices ({explicit}) for a {x.ndim}-d tensor")
    expanded: list[Any] = []
    for i in index:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (x.ndim - explicit))
        else:
            expanded.append(i)
    if Ellipsis not in index:
        expanded.extend([slice(None)] * (x.ndim - explicit))
    key, squeeze_axes, new_axes, dim = [], [], [], 0
    for pos, i in enumerate(expanded):
        if i is None:
            new_axes.append(pos)
            continue
        if isinstance(i, slice):
            key.append((i.start, i.stop, i.step))
        elif isinstance(i, int):
            size = x.shape[dim]
            if isinstance(size, int) and not -size <= i < size:
                raise ShapeError(f"index {i} is out of bounds for axis {dim} with size {size}")
            stop = i + 1 if i != -1 else None
            key.append((i, stop, 1))
            squeeze_axes.append(dim)
        else:
            raise ShapeError(f"unsupported index {i!r}: use ints, slices, ... or None")
        dim += 1
    out = x
    if any(k != (None, None, None) for k in key):
        out = slice_(x, tuple(key))
    from .reduce import expand_dims, squeeze

    if squeeze_axes:
        out = squeeze(out, squeeze_axes)
    if new_axes:
        out = expand_dims(out, new_axes)
    return out


# --- pad ----------------------------------------------------------------------------------

def _pad_infer(t: TensorType, *, pad_width: tuple[tuple[int, int], ...], value: float) -> TensorType:
    if len(pad_width) != t.ndim:
        raise ShapeError(f"pad_width has {len(pad_width)} entries for a {t.ndim}-d input")
    shape = tuple(d + a + b if isinstance(d, int) else d for d, (a, b) in zip(t.shape, pad_width))
    return TensorType(shape, t.dtype)


def _pad_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...], pad_width: Any, value: float) -> tuple:
    key = tuple((a, -b if b else None, 1) for a, b in pad_width)
    return (slice_(g, key),)


defop("pad", attrs={"pad_width": "pairs", "value": "float"}, category="layout", infer=_pad_infer,
      kernel=lambda xp, x, pad_width, value: xp.pad(x, pad_width, mode="constant", constant_values=value),
      grad=_pad_grad)


def pad(x: Tensor, pad_width: Sequence[Any], value: float = 0.0) -> Tensor:
    """Constant padding; ``pad_width`` is one (before, after) pair per dim, as in NumPy."""
    widths = tuple((int(a), int(b)) for a, b in pad_width)
    if any(a < 0 or b < 0 for a, b in widths):
        raise ShapeError(f"negative padding {widths}")
    return declare("pad", [x], {"pad_width": widths, "value": float(value)})


def copy(x: Tensor) -> Tensor:
    """A copy of ``x`` that shares no memory with it."""
    return declare("copy", [x])
