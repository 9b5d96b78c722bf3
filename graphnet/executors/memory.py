"""How much memory a run's temporaries need, from the plan and the feeds' shapes, before it runs."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..ops.registry import get_op
from ..plan import Plan


def dim_values(plan: Plan, shapes: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, int], int]:
    """Named dims bound by the feeds, and the largest fed dim (what an unknown dim is taken to be)."""
    named: dict[str, int] = {}
    largest = 1
    for feed, buffer in plan.feeds.items():
        for d, size in zip(plan.buffers[buffer].shape, shapes.get(feed, ())):
            if isinstance(d, str):
                named.setdefault(d, int(size))
            if d is None or isinstance(d, str):
                largest = max(largest, int(size))
    return named, largest


def peak_bytes(plan: Plan, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """The most bytes the run's temporaries hold at once: each step's results (none for a view)
    stay until their release. Unknown dims count as the largest fed dim, so this bounds
    the usual case (a batch dim) from above."""
    named, largest = dim_values(plan, shapes)

    def size(name: str) -> int:
        buf = plan.buffers[name]
        count = 1
        for d in buf.shape:
            count *= d if isinstance(d, int) else named.get(d, largest) if isinstance(d, str) else largest
        return count * np.dtype(buf.dtype).itemsize

    live = peak = 0
    for step, released in zip(plan.steps, plan.release):
        viewed = {o for o, _ in get_op(step.op).views}
        for k, out in enumerate(step.outputs):
            if k not in viewed:
                live += size(out)
        peak = max(peak, live)
        for name in released:
            if plan.buffers[name].kind == "temp":
                live -= size(name)
    return peak


def describe_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
