"""A fused group: a chain of elementwise ops run as one step, described by a small expression graph.

The ``fused`` node's ``body`` lists its member ops in order, each as (op, arguments,
attributes): an argument ``-k - 1`` is the group's k-th input, ``j >= 0`` the result of
member ``j``; the last member is the group's result. The shape rule re-runs every member's
rule (so ``verify`` and the plan loader check a group like any node), and the kernel runs
the members' own kernels, writing each result into a dying intermediate where it can, so
a group computes exactly what its members would, one step instead of many. Code
generators (numba, CuPy) compile the same description into one loop.
"""

from __future__ import annotations

import functools
from typing import Any

from ..errors import ShapeError
from ..ir import TensorType
from .attrs import check_attrs
from .registry import defop, get_op

Instruction = tuple[str, tuple[int, ...], tuple[tuple[str, Any], ...]]


def _members(body: Any) -> list[Instruction]:
    if not isinstance(body, tuple) or len(body) < 2:
        raise ShapeError("a fused group holds two or more members")
    for i, item in enumerate(body):
        if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], tuple) and isinstance(item[2], tuple)):
            raise ShapeError(f"fused member {i} must be (op, arguments, attributes)")
    return list(body)


def _infer(*types: TensorType, body: Any) -> TensorType:
    values: list[TensorType] = []
    for i, (op, args, attrs) in enumerate(_members(body)):
        opdef = get_op(op)
        if opdef.category != "elementwise":
            raise ShapeError(f"fused member {i} is {op!r}, not an elementwise op")
        if not all(isinstance(a, int) and not isinstance(a, bool) and -len(types) <= a < i for a in args):
            raise ShapeError(f"fused member {i} ({op}) reads {args}: an input or an earlier member only")
        if not all(isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str) for kv in attrs):
            raise ShapeError(f"fused member {i} ({op}) has malformed attributes")
        named = dict(attrs)
        check_attrs(op, opdef.attrs, named)
        values.append(opdef.infer(*[types[-a - 1] if a < 0 else values[a] for a in args], **named))
    return values[-1]


@functools.lru_cache(maxsize=4096)
def plan_body(body: tuple[Instruction, ...]) -> tuple[int | None, ...]:
    """For each member, the argument position whose intermediate it may overwrite (it dies
    there, owns its memory and has the member's type), or None."""
    last_use: dict[int, int] = {}
    for i, (_, args, _) in enumerate(body):
        for a in args:
            if a >= 0:
                last_use[a] = i
    return tuple(next((p for p, a in enumerate(args) if a >= 0 and last_use.get(a) == i and last_use[a] == i
                       and get_op(op).accepts_out and get_op(body[a][0]).accepts_out
                       and args.count(a) == 1), None)
                 for i, (op, args, _) in enumerate(body))


_MASKS = frozenset({"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"})


def _kernel(xp: Any, *inputs: Any, body: Any, out: Any = None) -> Any:
    """Run the members in order. With ``out`` (an array of the group's result type), the first
    member that can write there does, and the chain of dying intermediates continues in it."""
    values: list[Any] = []
    # an output that is one of the inputs (the executor reuses a dying input) is written last
    early = out is not None and not any(out is i for i in inputs)
    for (op, args, attrs), reuse in zip(body, plan_body(body)):
        arrays = [inputs[-a - 1] if a < 0 else values[a] for a in args]
        opdef = get_op(op)
        target = None
        if op not in _MASKS and _same_float(arrays):
            if reuse is not None and getattr(getattr(arrays[reuse], "flags", None), "writeable", False):
                target = arrays[reuse]  # the intermediate dies here with the result's shape and dtype
            elif early and opdef.accepts_out and not any(v is out for v in values) \
                    and arrays[0].shape == out.shape and arrays[0].dtype == out.dtype:
                target = out
        if target is not None:
            values.append(opdef.kernel(xp, *arrays, out=target, **dict(attrs)))
        else:
            values.append(opdef.kernel(xp, *arrays, **dict(attrs)))
    result = values[-1]
    if out is None or result is out:
        return result
    xp.copyto(out, result)
    return out


def _same_float(arrays: list[Any]) -> bool:
    first = arrays[0]
    kind = getattr(getattr(first, "dtype", None), "kind", "")
    return kind == "f" and all(getattr(a, "shape", None) == first.shape and a.dtype == first.dtype for a in arrays)


defop("fused", category="elementwise", attrs={"body": "any"}, infer=_infer, kernel=_kernel, accepts_out=True,
      doc="Elementwise ops run as one step (see graphnet.ops.fused).")
