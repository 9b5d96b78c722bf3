"""Where results are written: into a dying input, or into a recycled array of the right size.

An elementwise step whose input is a temporary that owns its memory (no view of
anything), that nothing reads afterwards (neither the buffer nor any view of it), that is
not an output, and that has the step's exact type, computes into that input with ``out=``.
Other elementwise steps take an array of their size from a pool of temporaries that died
earlier (in this run or the last), instead of asking the allocator for fresh pages. This
is the executor's cheap stand-in for a memory plan: it changes no result, only where
results are written.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.registry import get_op
from ..plan import Plan, view_roots


def _static_or_named(shape: tuple) -> bool:
    return all(isinstance(d, (int, str)) for d in shape)


@dataclass(frozen=True)
class Placement:
    """For one step: the input it overwrites (or None); how to size a pooled output (a static
    shape, the index of an input of the same type, or None: allocate); and the temporaries
    whose memory dies after it (release them, and recycle those that own their memory)."""

    inplace: int | None
    pooled_shape: tuple[int, ...] | int | None
    release: tuple[str, ...]
    recycle: tuple[str, ...]


def placements(plan: Plan) -> list[Placement]:
    """One Placement per step of ``plan``."""
    roots = view_roots(plan.steps, plan.buffers, lambda op: get_op(op).views)
    last_read: dict[str, int] = {}  # buffer -> the last step reading it or a view of it
    for i, step in enumerate(plan.steps):
        for name in step.inputs:
            for root in roots[name] | {name}:
                last_read[root] = i
    kept = {root for name in plan.outputs.values() for root in roots[name]}
    owned = {name for name, r in roots.items() if r == frozenset({name}) and plan.buffers[name].kind == "temp"}
    release: list[list[str]] = [[] for _ in plan.steps]
    recycle: list[list[str]] = [[] for _ in plan.steps]
    for name, i in last_read.items():
        if plan.buffers[name].kind == "temp" and name not in kept:
            release[i].append(name)
            if name in owned and _static_or_named(plan.buffers[name].shape):
                recycle[i].append(name)
    result = []
    for i, step in enumerate(plan.steps):
        inplace, pooled = None, None
        if get_op(step.op).accepts_out and len(step.outputs) == 1:
            out = plan.buffers[step.outputs[0]]
            for j, name in enumerate(step.inputs):
                buf = plan.buffers[name]
                if name in owned and name not in kept and last_read.get(name) == i \
                        and (buf.shape, buf.dtype) == (out.shape, out.dtype) and _static_or_named(buf.shape):
                    inplace = j
                    break
            if inplace is None:
                if all(isinstance(d, int) for d in out.shape):
                    pooled = tuple(out.shape)
                else:
                    pooled = next((j for j, name in enumerate(step.inputs)
                                   if (plan.buffers[name].shape, plan.buffers[name].dtype) == (out.shape, out.dtype)
                                   and _static_or_named(out.shape)), None)
        result.append(Placement(inplace, pooled, tuple(sorted(release[i])), tuple(sorted(recycle[i]))))
    return result
