"""How much memory a run's temporaries need, from the plan and the feeds' shapes, before it runs."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ..ops.conv_kernels import _out_size
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


def _resolver(named: Mapping[str, int], largest: int) -> Callable[[tuple], tuple[int, ...]]:
    """Concrete sizes for a buffer's dims: named dims as bound, unknown ones as ``largest``."""
    def resolve(shape: tuple) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else named.get(d, largest) if isinstance(d, str) else largest
                     for d in shape)
    return resolve


def _conv_columns(shapes: list[tuple[int, ...]], attrs: Mapping[str, Any], x_at: int, w_at: int,
                  itemsize: int) -> int:
    """Bytes of a convolution's im2col matrix (N, C * kh * kw, Ho * Wo) and of one array of the
    output's size (the product before its transpose to NCHW, or the gradient's transposed copy)."""
    n, c, h, w = shapes[x_at]
    o, _, kh, kw = shapes[w_at]
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    ho = _out_size(h, kh, sh, ph, dh)
    wo = _out_size(w, kw, sw, pw, dw)
    return n * (c * kh * kw + o) * max(ho, 0) * max(wo, 0) * itemsize


#: op -> bytes a kernel holds besides its result while it runs, from its inputs' shapes, its
#: attributes and the itemsize (the largest scratch array; the CPU algorithms' columns)
WORKSPACE: dict[str, Callable[[list[tuple[int, ...]], Mapping[str, Any], int], int]] = {
    "conv2d": lambda s, a, i: _conv_columns(s, a, 0, 1, i),
    "conv2d_grad_weight": lambda s, a, i: _conv_columns(s, a, 0, 2, i),
    "conv2d_grad_input": lambda s, a, i: _conv_columns(s, a, 2, 1, i),
}


def peak_bytes(plan: Plan, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """The most bytes a run holds at once besides variables, feeds and constants: the memory
    plan's storage blocks (held across runs), plus each unplanned result (none for a view)
    until its release, plus the scratch of the kernel running (``WORKSPACE``). Unknown dims
    count as the largest fed dim, so this bounds the usual case (a batch dim) from above."""
    resolve = _resolver(*dim_values(plan, shapes))

    def size(shape: tuple, dtype: str) -> int:
        return int(np.prod(resolve(shape), dtype=np.int64)) * np.dtype(dtype).itemsize

    storage = set(plan.memory.storage) | set(plan.memory.placed) if plan.memory is not None else set()
    blocks = sum(size(shape, dtype) for shape, dtype in plan.memory.blocks) if plan.memory is not None else 0
    live = peak = 0
    for step, released in zip(plan.steps, plan.release):
        viewed = {o for o, _ in get_op(step.op).views}
        scratch = WORKSPACE.get(step.op)
        extra = 0
        if scratch is not None:
            ins = [plan.buffers[n] for n in step.inputs]
            extra = scratch([resolve(b.shape) for b in ins], step.attrs, np.dtype(ins[0].dtype).itemsize)
        for k, out in enumerate(step.outputs):
            if k not in viewed and out not in storage:
                live += size(plan.buffers[out].shape, plan.buffers[out].dtype)
        peak = max(peak, live + extra)
        for name in released:
            if plan.buffers[name].kind == "temp" and name not in storage:
                live -= size(plan.buffers[name].shape, plan.buffers[name].dtype)
    return blocks + peak


def peak_formula(plan: Plan) -> tuple[int, int]:
    """Peak bytes as ``a + b * batch`` (every named or unknown feed dim taken as the batch):
    fitted at two batch sizes, exact where the peak grows linearly (every reference network)."""
    def at(batch: int) -> int:
        shapes = {feed: tuple(d if isinstance(d, int) else batch for d in plan.buffers[name].shape)
                  for feed, name in plan.feeds.items()}
        return peak_bytes(plan, shapes)

    low, high = at(1024), at(2048)
    per_item = (high - low) // 1024
    return low - per_item * 1024, per_item


def describe_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
