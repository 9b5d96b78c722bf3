"""Which steps may write their result into an input buffer that dies there.

An elementwise step whose input is a temporary that owns its memory (no view of
anything), that nothing reads afterwards (neither the buffer nor any view of it), that is
not an output, and that has the step's exact type, can compute into that input with
``out=`` instead of allocating. This is the executor's cheap stand-in for a memory plan:
it changes no result, only where results are written.
"""

from __future__ import annotations

from ..ops.registry import get_op
from ..plan import Plan


def _static_or_named(shape: tuple) -> bool:
    return all(isinstance(d, (int, str)) for d in shape)


def inplace_inputs(plan: Plan) -> list[int | None]:
    """For each step, the position of the input it may overwrite with its result, or None."""
    roots: dict[str, frozenset[str]] = {name: frozenset({name}) for name in plan.buffers}
    for step in plan.steps:
        for out_index, in_index in get_op(step.op).views:
            if out_index < len(step.outputs):
                roots[step.outputs[out_index]] = roots[step.outputs[out_index]] | roots[step.inputs[in_index]]
    last_read: dict[str, int] = {}  # root buffer -> the last step reading it or a view of it
    for i, step in enumerate(plan.steps):
        for name in step.inputs:
            for root in roots[name]:
                last_read[root] = i
    kept = {root for name in plan.outputs.values() for root in roots[name]}
    owned = {name for name, r in roots.items() if r == frozenset({name})}
    choice: list[int | None] = []
    for i, step in enumerate(plan.steps):
        chosen = None
        if get_op(step.op).accepts_out and len(step.outputs) == 1:
            out = plan.buffers[step.outputs[0]]
            for j, name in enumerate(step.inputs):
                buf = plan.buffers[name]
                if (buf.kind == "temp" and name in owned and name not in kept and last_read.get(name) == i
                        and (buf.shape, buf.dtype) == (out.shape, out.dtype) and _static_or_named(buf.shape)):
                    chosen = j
                    break
        choice.append(chosen)
    return choice
