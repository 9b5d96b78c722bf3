"""Shape-rule helpers shared by the op definitions, and the one unbroadcast helper."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .. import dtypes
from ..dims import record_broadcast, record_equal
from ..errors import DTypeError, ShapeError
from ..ir import Dim, Shape, TensorType
from ..tensor import Tensor, as_tensor
from .registry import make_node


def broadcast_dims(dims: Iterable[Dim]) -> Dim:
    """One output dim from aligned input dims.

    Static sizes other than 1 must agree and win over symbolic dims (a symbolic dim that
    is not 1 at run time then fails loudly in the kernel). Symbolic dims give a symbolic
    result only when they are all the same name; two different symbols, or a name and an
    unknown dim, give an unknown dim: either may be 1 at run time, so neither can be
    assumed to be the result (gradients reduce to the run-time shape, see ``sum_to``).
    """
    met = [d for d in dims if d != 1]
    return record_broadcast(met, _broadcast_result(met))


def _broadcast_result(met: list[Dim]) -> Dim:
    known = set(met)
    if not known:
        return 1
    ints = {d for d in known if isinstance(d, int)}
    if len(ints) > 1:
        raise ShapeError(f"dims {sorted(ints)} cannot broadcast")
    if ints:
        return ints.pop()
    if len(known) == 1:
        return known.pop()
    return None


def broadcast_shapes(*shapes: Shape) -> Shape:
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for axis in range(ndim):
        try:
            out.append(broadcast_dims(p[axis] for p in padded))
        except ShapeError:
            raise ShapeError(
                f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast (axis {axis - ndim})"
            ) from None
    return tuple(out)


def normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ShapeError(f"axis {axis} is out of range for a {ndim}-d input")
    return axis % ndim if ndim else 0


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """None -> all axes; int or sequence -> sorted unique non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    axes = tuple(sorted({normalize_axis(int(a), ndim) for a in axis}))
    return axes


def require_float(t: TensorType, what: str = "input") -> None:
    if not dtypes.is_float(t.dtype):
        raise DTypeError(f"{what} must be a floating dtype, got {t.dtype}")


def dims_equal(a: Dim, b: Dim) -> bool:
    """True unless two dims are known to differ (symbolic dims may match at run time; while
    the compiler records dim constraints, a placeholder's unknown dim is unified here)."""
    if record_equal(a, b):
        return True
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return True


def prod(dims: Sequence[Dim]) -> Dim:
    total = 1
    for d in dims:
        if not isinstance(d, int):
            return None
        total *= d
    return total


def unary_same(t: TensorType, **_: Any) -> TensorType:
    return t


def unary_float(t: TensorType, **_: Any) -> TensorType:
    require_float(t)
    return t


def into_each(xp: Any, results: tuple, out: Any) -> tuple:
    """A multi-result kernel's ``results``, each copied into its given ``out`` array unless it
    was computed there (``out`` is None, or a tuple with an array or None per result)."""
    if out is None:
        return tuple(results)
    placed = []
    for value, target in zip(results, out):
        if target is not None:
            if value is not target:
                xp.copyto(target, value)
            value = target
        placed.append(value)
    return tuple(placed)


def declare(op: str, inputs: Sequence[Any], attrs: dict[str, Any] | None = None) -> Tensor:
    """Declare ``op`` on tensors (non-tensor inputs become constants of a matching dtype)."""
    like = next((i for i in inputs if isinstance(i, Tensor)), None)
    tensors = [as_tensor(i, like) for i in inputs]
    return Tensor(make_node(op, [t.node for t in tensors], attrs))


def sum_to(g: Tensor, target: "Tensor | Shape") -> Tensor:
    """Sum ``g`` down to the shape of ``target`` (a tensor or a static shape): undoes NumPy
    broadcasting in gradient rules. A target with any symbolic dim (a name or None) is
    reduced to its run-time shape, since a symbolic dim may be 1 when the graph runs."""
    shape = tuple(target.shape) if isinstance(target, Tensor) else tuple(target)
    if isinstance(target, Tensor) and not all(isinstance(d, int) for d in shape):
        if tuple(g.shape) == shape and all(isinstance(d, str) for d in shape if not isinstance(d, int)) \
                and _same_symbols(g, target):
            return g
        return declare("sum_like", [g, target])
    if not all(isinstance(d, int) for d in shape):
        raise ShapeError(f"sum_to needs a static shape, got {shape}; pass the tensor to sum down to")
    if tuple(g.shape) == shape:
        return g
    return declare("sum_to", [g], {"shape": shape})


def _same_symbols(g: Tensor, target: Tensor) -> bool:
    """``g`` has ``target``'s shape exactly, named dims included (so no dim was broadcast)."""
    return all(isinstance(a, int) or (isinstance(a, str) and a == b) for a, b in zip(g.shape, target.shape))
