"""A fused group's body as every kernel generator sees it: member dtypes, operand typing,
the collapsed iteration space and the reduction that may end the group.

A ``fused`` step's ``body`` is a tuple of members ``(op, args, attrs)``; an arg ``a >= 0``
is member ``a``'s value, ``a < 0`` the step's input ``-a - 1`` (graphnet.ops.fused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .. import dtypes
from ..ir import TensorType
from ..ops.fused import reduces
from ..ops.registry import get_op


def unsupported_member(body: Sequence[tuple[str, tuple[int, ...], tuple]]) -> str | None:
    """The first member op without a scalar form (such a group runs through NumPy), or None;
    a final reduction is the loop's accumulation, not a scalar form."""
    for i, (op, _, _) in enumerate(body):
        if get_op(op).scalar is None and not (i == len(body) - 1 and i > 0 and reduces(op)):
            return op
    return None


def reduced_shape(body: Sequence[tuple], loop_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """For a group ending in a reduction, the result's shape with the reduced dims kept as 1
    (aligned with ``loop_shape``); None for a group without one."""
    op, _, attrs = body[-1]
    if not reduces(op) or len(body) < 2:
        return None
    named = dict(attrs)
    if get_op(op).reduction == "sum_to":  # onto a shape; the others over axes
        target = tuple(named["shape"])
        return (1,) * (len(loop_shape) - len(target)) + target
    return tuple(1 if d in named["axes"] else size for d, size in enumerate(loop_shape))


def member_dtypes(body: Sequence[tuple[str, tuple[int, ...], tuple]], input_dtypes: Sequence[str]) -> list[str]:
    """The dtype of each member's result, by the members' own rules."""
    values: list[str] = []
    for op, args, attrs in body:
        types = [TensorType((), input_dtypes[-a - 1] if a < 0 else values[a]) for a in args]
        values.append(get_op(op).infer(*types, **dict(attrs)).dtype)
    return values


def collapse(out_shape: tuple[int, ...], in_shapes: Sequence[tuple[int, ...]]
             ) -> tuple[tuple[int, ...], tuple[tuple[bool, ...], ...]]:
    """The collapsed iteration space for a result of ``out_shape``: its extents and, per
    input, which of them the input spans (False: broadcast along that dim)."""
    rank = len(out_shape)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in in_shapes]
    extents: list[int] = []
    spans: list[list[bool]] = [[] for _ in in_shapes]
    for d, size in enumerate(out_shape):
        if size == 1:
            continue
        span = [p[d] == size for p in padded]
        if extents and all(s[-1] == f for s, f in zip(spans, span)):
            extents[-1] *= size
        else:
            extents.append(size)
            for s, f in zip(spans, span):
                s.append(f)
    if not extents:  # a single element
        return (1,), tuple((True,) for _ in in_shapes)
    return tuple(extents), tuple(tuple(s) for s in spans)


@dataclass(frozen=True)
class FusedLayout:
    """How a generated kernel walks a fused step for inputs of given shapes (every generator
    shares it: the numba loops and the CUDA kernels).

    ``out_shape``: the step's result. ``extents``: the collapsed loop. ``spans[k]``: the dims
    input k runs along (False: broadcast). ``views[k]``: input k reshaped to the loop.
    A group ending in a reduction has ``accumulate`` (the loop dims its result runs along),
    ``acc_view`` (the accumulator's shape over the loop) and ``scale`` (1/count for a mean)."""

    out_shape: tuple[int, ...]
    extents: tuple[int, ...]
    spans: tuple[tuple[bool, ...], ...]
    views: tuple[tuple[int, ...], ...]
    accumulate: tuple[bool, ...] | None = None
    acc_view: tuple[int, ...] | None = None
    scale: float = 1.0


def fused_layout(body: Sequence[tuple], shapes: Sequence[tuple[int, ...]],
                 results: Sequence[int] | None = None) -> FusedLayout:
    """The layout of a fused step (``results``: a fused_assign's written members) over inputs
    of ``shapes``. Raises ValueError for a fused_assign whose variables do not span the loop."""
    shapes = tuple(tuple(s) for s in shapes)
    loop = _broadcast(shapes)
    if results is not None and any(shapes[j] != loop for j in range(len(results))):
        raise ValueError("a fused_assign's variables must span its whole loop")
    keep = reduced_shape(body, loop) if results is None else None
    extents, spans = collapse(loop, shapes + ((keep,) if keep is not None else ()))
    views = tuple(tuple(e if s else 1 for e, s in zip(extents, span)) for span in spans)
    if keep is None:
        return FusedLayout(loop, extents, spans, views)
    op, _, attrs = body[-1]
    named = dict(attrs)
    kind = get_op(op).reduction
    count = math.prod(loop) // max(1, math.prod(keep))
    scale = (1.0 / count if count else math.nan) if kind == "mean" else 1.0
    if kind == "sum_to":
        out_shape = tuple(named["shape"])
    elif named["keepdims"]:
        out_shape = keep
    else:
        out_shape = tuple(s for d, s in enumerate(loop) if d not in named["axes"])
    return FusedLayout(out_shape, extents, spans[:-1], views[:-1], spans[-1], views[-1], scale)


def _broadcast(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    rank = max((len(s) for s in shapes), default=0)
    result = [1] * rank
    for shape in shapes:
        for d, size in enumerate((1,) * (rank - len(shape)) + tuple(shape)):
            if size != 1:
                if result[d] not in (1, size):
                    raise ValueError(f"shapes {list(shapes)} do not broadcast")
                result[d] = size
    return tuple(result)



def operand_dtypes(op: str, operands: Sequence[str], result: str) -> list[str | None]:
    """The dtype each operand is cast to before ``op``'s scalar form reads it (None: read as it
    is), by the op's ``operands`` rule (``OpDef.operands``): "result" (the default) casts
    every operand to the result's dtype, "common" to the operands' promoted dtype
    (comparisons), "condition" leaves the first (a bool) and casts the rest to the result's
    (``where``), "as_is" leaves them all (``cast``)."""
    rule = get_op(op).operands
    if rule == "common":
        common = dtypes.promote(*operands)
        return [common] * len(operands)
    if rule == "condition":
        return [None] + [result] * (len(operands) - 1)
    if rule == "as_is":
        return [None] * len(operands)
    return [result] * len(operands)
