"""A fused group: a chain of elementwise ops run as one step, described by a small expression graph.

A group may end in one reduction (``sum``, ``mean`` or ``sum_to``): the loop then
accumulates into the reduced result instead of writing a full-size one.

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
from typing import Any, Callable, Iterator

from ..errors import ShapeError
from ..ir import TensorType
from .attrs import check_attrs
from .registry import REGISTRY, defop, get_op

Instruction = tuple[str, tuple[int, ...], tuple[tuple[str, Any], ...]]


#: The most members a fused group (or a fused update) may hold: twice the largest group the
#: fuse passes make on the reference networks (30: AdamW with clipping). A generated kernel's
#: compile time grows faster than its size (100 members: 2.5 s; 1,000: over 100 s), so a plan
#: file with a larger group is refused at load instead of stalling it; the passes split longer
#: chains into several groups.
MAX_MEMBERS = 64


def _members(body: Any, minimum: int = 2) -> list[Instruction]:
    if not isinstance(body, tuple) or len(body) < minimum:
        raise ShapeError(f"a fused group holds {minimum} or more members")
    if len(body) > MAX_MEMBERS:
        raise ShapeError(f"a fused group holds at most {MAX_MEMBERS} members, this one {len(body)}")
    for i, item in enumerate(body):
        if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], tuple) and isinstance(item[2], tuple)):
            raise ShapeError(f"fused member {i} must be (op, arguments, attributes)")
    return list(body)


def reduces(op: str) -> bool:
    """Whether a fused group may end in ``op`` (``OpDef.reduction``): its loop then accumulates
    into the reduced result."""
    return get_op(op).reduction is not None


def reductions() -> list[str]:
    """The ops a fused group may end in."""
    return sorted(name for name, opdef in REGISTRY.items() if opdef.reduction is not None)


def _infer(*types: TensorType, body: Any) -> TensorType:
    return member_types(types, _members(body), reduction_last=True)[-1]


def member_types(types: tuple[TensorType, ...], body: list[Instruction],
                 reduction_last: bool = False) -> list[TensorType]:
    """Each member's result type, by its own rule (raising ShapeError for a malformed body).
    Members are elementwise; with ``reduction_last`` the last may be a reduction (``reduces``)."""
    values: list[TensorType] = []
    for i, (op, args, attrs) in enumerate(body):
        opdef = get_op(op)
        if opdef.category != "elementwise" and not (reduction_last and i == len(body) - 1 and reduces(op)):
            raise ShapeError(f"fused member {i} is {op!r}, not an elementwise op"
                             + (f" (a group may end in one of {reductions()})" if reduction_last else ""))
        if not all(isinstance(a, int) and not isinstance(a, bool) and -len(types) <= a < i for a in args):
            raise ShapeError(f"fused member {i} ({op}) reads {args}: an input or an earlier member only")
        if not all(isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str) for kv in attrs):
            raise ShapeError(f"fused member {i} ({op}) has malformed attributes")
        named = dict(attrs)
        check_attrs(op, opdef.attrs, named)
        values.append(opdef.infer(*[types[-a - 1] if a < 0 else values[a] for a in args], **named))
    return values


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
                       and _elementwise_out(op) and _elementwise_out(body[a][0])
                       and args.count(a) == 1), None)
                 for i, (op, args, _) in enumerate(body))


def _elementwise_out(op: str) -> bool:
    """Writes its result into an argument of the same shape (a reduction's ``out`` is smaller)."""
    opdef = get_op(op)
    return opdef.accepts_out and opdef.category == "elementwise"


_MASKS = frozenset({"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"})


def _kernel(xp: Any, *inputs: Any, body: Any, out: Any = None) -> Any:
    """Run the members in order. With ``out`` (an array of the group's result type), the first
    member that can write there does, and the chain of dying intermediates continues in it."""
    if out is None:
        return _member_program(xp, body)(*inputs)
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
            elif early and _elementwise_out(op) and not any(v is out for v in values) \
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


@functools.lru_cache(maxsize=4096)
def _member_program(xp: Any, body: Any) -> Callable[..., Any]:
    """``_kernel`` without ``out``, its lookups done once per body (a loop body runs its fused
    groups once per step, where the lookups cost as much as the small arrays' arithmetic)."""
    members = [(get_op(op).kernel, args, dict(attrs), reuse if op not in _MASKS else None)
               for (op, args, attrs), reuse in zip(body, plan_body(body))]

    def run(*inputs: Any) -> Any:
        values: list[Any] = []
        for kernel, args, attrs, reuse in members:
            arrays = [inputs[-a - 1] if a < 0 else values[a] for a in args]
            if reuse is not None and _same_float(arrays) and arrays[reuse].flags.writeable:
                values.append(kernel(xp, *arrays, out=arrays[reuse], **attrs))
            else:
                values.append(kernel(xp, *arrays, **attrs))
        return values[-1]
    return run


def _same_float(arrays: list[Any]) -> bool:
    first = arrays[0]
    kind = getattr(getattr(first, "dtype", None), "kind", "")
    return kind == "f" and all(getattr(a, "shape", None) == first.shape and a.dtype == first.dtype for a in arrays)


defop("fused", category="elementwise", attrs={"body": "any"}, infer=_infer, kernel=_kernel, accepts_out=True,
      doc="Elementwise ops run as one step (see graphnet.ops.fused).")


# --- fused_assign: an optimizer update (or any state write) in one step -------------------------
#
# The effects writing a parameter and its optimizer state (Adam: the parameter, exp_avg and
# exp_avg_sq) each copy a value computed by its own group. ``fused_assign`` computes them all
# in one pass and writes each into its variable in place: its first ``len(results)`` inputs
# are the variables it writes (members may read their old values, and every element is read
# before it is written), ``results[j]`` is the member whose value goes to input j, and
# ``kinds[j]`` that write's effect kind. It runs in the effect phase like ``assign``.

def _assign_infer(*types: TensorType, body: Any, results: Any, kinds: Any) -> TensorType:
    from .nn import EFFECT_KINDS

    members = _members(body, minimum=1)
    values = member_types(types, members)
    if not isinstance(kinds, tuple) or len(kinds) != len(results) or not results \
            or any(k not in EFFECT_KINDS for k in kinds):
        raise ShapeError(f"fused_assign needs one effect kind of {EFFECT_KINDS} per written variable")
    if len(set(results)) != len(results) or not all(0 <= r < len(members) for r in results) \
            or len(results) > len(types):
        raise ShapeError(f"fused_assign results {results} must name distinct members")
    for j, r in enumerate(results):
        if values[r].shape != types[j].shape or values[r].dtype != types[j].dtype:
            raise ShapeError(f"fused_assign writes member {r} ({values[r]}) into input {j} ({types[j]})")
    return types[0]


def _member_values(xp: Any, inputs: Any, body: Any) -> Iterator[Any]:
    """Each member's value in turn, from its own kernel (no intermediate overwritten)."""
    values: list[Any] = []
    for op, args, attrs in body:
        values.append(get_op(op).kernel(xp, *[inputs[-a - 1] if a < 0 else values[a] for a in args], **dict(attrs)))
        yield values[-1]


def _assign_kernel(xp: Any, *inputs: Any, body: Any, results: Any, kinds: Any) -> None:
    """Every member first (from the variables' old values), then each write."""
    values = list(_member_values(xp, inputs, body))
    for target, r in zip(inputs, results):
        xp.copyto(target, values[r])


def first_nonfinite_member(xp: Any, inputs: Any, body: Any) -> int | None:
    """The first member of a fused group whose value holds a NaN or an Inf, run one by one on
    ``inputs`` with the members' own kernels (for check_numerics to name the op), or None."""
    for i, value in enumerate(_member_values(xp, inputs, body)):
        if getattr(getattr(value, "dtype", None), "kind", "") == "f" and not bool(xp.all(xp.isfinite(value))):
            return i
    return None


def written_inputs(op: str, attrs: Any) -> int:
    """How many leading inputs an effect op writes (assign: its target; fused_assign: one per result)."""
    return len(attrs["results"]) if op == "fused_assign" else len(get_op(op).writes)


defop("fused_assign", category="effect", attrs={"body": "any", "results": "ints", "kinds": "any"},
      infer=_assign_infer, kernel=_assign_kernel,
      doc="Writes several variables from one elementwise group, in place (see graphnet.ops.fused).")
