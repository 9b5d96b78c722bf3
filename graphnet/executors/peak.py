"""How much memory a run's temporaries need, from the plan and the feeds' shapes, before it runs.

The arena, the unplanned results and their release are the protocol's (every backend binds a
plan the same way); what a kernel holds besides its result (a convolution's column buffers)
is the backend's, read from its kernel table (``KernelTable.workspace``).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ..ops.registry import get_op
from ..plan import Plan, last_reads
from .arena import pack_blocks
from .kernel_table import KernelTable


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


def _resolver(named: Mapping[str, int], largest: int) -> Callable[[tuple], tuple[int, ...]]:
    """Concrete sizes for a buffer's dims: named dims as bound, unknown ones as ``largest``."""
    def resolve(shape: tuple) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else named.get(d, largest) if isinstance(d, str) else largest
                     for d in shape)
    return resolve


def peak_bytes(plan: Plan, shapes: Mapping[str, tuple[int, ...]], table: KernelTable | None = None) -> int:
    """The most bytes a run holds at once besides variables, feeds and constants: the memory
    plan's arena (its storage blocks packed by their spans) and the convolutions' shared
    workspace, both held across runs, plus each unplanned result (none for a view) until its
    release, plus the scratch of the kernel running. What each step's kernel holds and needs
    besides its result is the backend's to say: ``table`` is its kernel table, whose entry for
    the step counts its workspace (None: the reference kernels, which count none). Unknown dims
    count as the largest fed dim, so this bounds the usual case (a batch dim) from above."""
    resolve = _resolver(*dim_values(plan, shapes))

    def size(shape: tuple, dtype: str) -> int:
        return int(np.prod(resolve(shape), dtype=np.int64)) * np.dtype(dtype).itemsize

    memory = plan.memory
    storage = set(memory.storage) | set(memory.placed) if memory is not None else set()
    blocks = pack_blocks([size(shape, dtype) for shape, dtype in memory.blocks], memory.spans)[1] \
        if memory is not None else 0
    # an unplanned value lives until its last reader or the last reader of a view of it
    last, _ = last_reads(plan, get_op)
    dying: list[list[str]] = [[] for _ in plan.steps]
    for name, index in last.items():
        if plan.buffers[name].kind == "temp" and name not in storage:
            dying[index].append(name)
    view_outputs = {step.outputs[k] for step in plan.steps for k, _ in get_op(step.op).views
                    if k < len(step.outputs)}
    live = peak = held = 0
    for step, released in zip(plan.steps, dying):
        viewed = {o for o, _ in get_op(step.op).views}
        extra = 0
        if table is not None:
            ins = [plan.buffers[n] for n in step.inputs]
            kept, extra = table.workspace(plan, step, [resolve(b.shape) for b in ins])
            held = max(held, kept)
        for k, out in enumerate(step.outputs):
            if k not in viewed and out not in storage:
                live += size(plan.buffers[out].shape, plan.buffers[out].dtype)
        peak = max(peak, live + extra)
        for name in released:
            if name not in view_outputs:  # a view's bytes were never counted
                live -= size(plan.buffers[name].shape, plan.buffers[name].dtype)
    return blocks + held + peak


def peak_formula(plan: Plan, table: KernelTable | None = None, low: int = 32, high: int = 128) -> tuple[int, int]:
    """Peak bytes as ``a + b * batch`` (every named or unknown feed dim taken as the batch),
    the line through the peaks at batch ``low`` and ``high``: exact where the peak grows
    linearly between them (every reference network over the usual batch sizes). Packing the
    arena makes the peak piecewise linear, so far outside that range (a batch of thousands)
    ``peak_bytes`` at the actual shapes is the figure to use."""
    def at(batch: int) -> int:
        shapes = {feed: tuple(d if isinstance(d, int) else batch for d in plan.buffers[name].shape)
                  for feed, name in plan.feeds.items()}
        return peak_bytes(plan, shapes, table)

    per_item = (at(high) - at(low)) // (high - low)
    return at(low) - per_item * low, per_item
