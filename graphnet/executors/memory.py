"""How much memory a run's temporaries need, from the plan and the feeds' shapes, before it runs."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..ops.conv_kernels import _ConvGeom, _out_size
from ..ops.registry import get_op
from ..plan import Plan, last_reads
from . import conv_nhwc, library
from .conv_algorithms import _geometry, chunk_images, xp_chunk_images
from .numba_conv import parts, rule


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


def _conv_sizes(shapes: list[tuple[int, ...]], attrs: Mapping[str, Any], x_at: int, w_at: int
                ) -> tuple[tuple[int, ...], tuple[int, ...], int, int, int, int]:
    """(input shape, weight shape, elements of the im2col matrix (N, C*kh*kw, Ho*Wo), of the
    output (N, O, Ho, Wo), of the per-image weight gradients (N, O, C/groups*kh*kw), and of
    the zero-padded input (0 without padding))."""
    n, c, h, w = shapes[x_at]
    o, cg, kh, kw = shapes[w_at]
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    p = max(_out_size(h, kh, sh, ph, dh), 0) * max(_out_size(w, kw, sw, pw, dw), 0)
    padded = n * c * (h + 2 * ph) * (w + 2 * pw) if ph or pw else 0
    return shapes[x_at], shapes[w_at], n * c * kh * kw * p, n * o * p, n * o * cg * kh * kw, padded


#: where each convolution op finds its input and weight among its inputs
_CONV_OPERANDS = {"conv2d": (0, 1), "conv2d_grad_weight": (0, 2), "conv2d_grad_input": (2, 1)}


def _conv_scratch(op: str, shapes: list[tuple[int, ...]], attrs: Mapping[str, Any], itemsize: int
                  ) -> tuple[int, int]:
    """(bytes held in the executor's convolution workspaces, bytes allocated and freed while
    the step runs). A convolution split among threads (numba_conv.parts) runs each part's
    images in a workspace of its own; its weight gradient also keeps one
    sum per extra part."""
    x_at, w_at = _CONV_OPERANDS[op]
    count = parts(op, tuple(shapes[x_at]), tuple(shapes[w_at]), dict(attrs), inside=True)  # plans with convolutions split
    if count == 1:
        return _conv_part_scratch(op, shapes, attrs, itemsize)
    part_shapes = list(shapes)
    part_shapes[x_at] = (-(-int(shapes[x_at][0]) // count), *shapes[x_at][1:])
    held, extra = _conv_part_scratch(op, part_shapes, attrs, itemsize)
    sums = (count - 1) * int(np.prod(shapes[w_at])) * itemsize if op == "conv2d_grad_weight" else 0
    return held * count + sums, extra * count


def _conv_part_scratch(op: str, shapes: list[tuple[int, ...]], attrs: Mapping[str, Any],
                       itemsize: int) -> tuple[int, int]:
    """``_conv_scratch`` of one part, for the algorithm the cost rule picks (numba_conv.rule;
    with autotuning on, a layer may run another one). Per-image products keep their columns
    (and the weight gradient its per-image products) in the workspace and write the result
    in place; the shared kernel's padded input, columns and product come from the workspace
    too, one chunk of images at a time."""
    x_at, w_at = _CONV_OPERANDS[op]
    x_shape, w_shape, cols, output, per_image, padded = _conv_sizes(shapes, attrs, x_at, w_at)
    algorithm = rule(op, tuple(x_shape), tuple(w_shape), dict(attrs))
    if algorithm == "pointwise":  # the strided input's copy and the per-image weight gradients, held
        strided = tuple(attrs["stride"]) != (1, 1)
        weight_sum = x_shape[1] * w_shape[0] * 8 // itemsize if op == "conv2d_grad_weight" else 0  # float64
        return ((cols if strided else 0) + (per_image + weight_sum if op == "conv2d_grad_weight" else 0)) \
            * itemsize + 3 * ALIGNMENT, 0
    if algorithm == "nhwc":
        geo = _geometry(tuple(x_shape), tuple(w_shape), dict(attrs))
        return conv_nhwc.scratch_bytes(op, geo, itemsize), 0
    if algorithm == "batched_gemm":
        n, groups = max(int(x_shape[0]), 1), int(attrs["groups"])
        o, cg, kh, kw = w_shape
        p = output // n // max(o, 1)
        chunk = chunk_images(n, groups, cg * kh * kw, p, itemsize)  # images per chunk of columns
        held = chunk * groups * cg * kh * kw * p
        if op == "conv2d_grad_weight":  # the per-image products, and the float64 sum and chunk sum
            held += chunk * o * cg * kh * kw + 2 * o * cg * kh * kw * 8 // itemsize
        return held * itemsize + 4 * ALIGNMENT, 0
    n, groups = max(int(x_shape[0]), 1), int(attrs["groups"])
    o, cg, kh, kw = w_shape
    chunk = xp_chunk_images(n, groups, cg * kh * kw, output // n // max(o, 1), itemsize)
    # the padded (or channels-last) input, columns and product of one chunk of images, taken
    # from the workspace (the input gradient's kernel also keeps the gradient's transposed copy)
    layout = _ConvGeom(x_shape, w_shape, attrs["stride"], attrs["padding"], attrs["dilation"], groups).layout
    copied = padded or (int(np.prod(x_shape)) if layout == "nhwc" else 0)
    scratch = (cols + output * (2 if op == "conv2d_grad_input" else 1) + copied) // n * chunk
    weights = o * cg * kh * kw
    if op == "conv2d" and layout == "nhwc":  # the weights' channels-last copy
        scratch += weights
    if op == "conv2d_grad_weight":  # the product, and over chunks the float64 sum and each chunk's result
        scratch += weights * (1 + (8 // itemsize + 1 if chunk < n else 0))
    return scratch * itemsize + 6 * ALIGNMENT, 0


def _pool_saving_scratch(x_shape: tuple[int, ...], attrs: Mapping[str, Any], itemsize: int) -> int:
    """The max-pool kernel's temporaries, from the executor's workspace: the padded input,
    the row maxima along W with their comparison mask and arg-max, and the window pass's mask
    and arg-max (the output and the saved arg-max go straight to their blocks)."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel_size"], attrs["stride"], attrs["padding"]
    ho, wo = max(_out_size(h, kh, sh, ph, 1), 0), max(_out_size(w, kw, sw, pw, 1), 0)
    rows = sh * max(ho - 1, 0) + kh
    padded = (h + 2 * ph) * (w + 2 * pw) * itemsize if ph or pw else 0
    return n * c * (padded + rows * wo * (itemsize + 2) + ho * wo * 2) + 6 * ALIGNMENT


def _avg_pool_scratch(op: str, shapes: list[tuple[int, ...]], attrs: Mapping[str, Any], itemsize: int) -> int:
    """The average-pool kernels' temporaries, from the executor's workspace: the forward's
    padded input and row sums; the gradient's scaled gradient, its spread along W, and its
    padded result (the result itself goes to its block)."""
    n, c, h, w = shapes[0] if op == "avg_pool2d" else shapes[1]
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel_size"], attrs["stride"], attrs["padding"]
    ho, wo = max(_out_size(h, kh, sh, ph, 1), 0), max(_out_size(w, kw, sw, pw, 1), 0)
    padded = n * c * (h + 2 * ph) * (w + 2 * pw) if ph or pw else 0
    cols = sw * max(wo - 1, 0) + kw
    if op == "avg_pool2d":
        rows = n * c * (sh * max(ho - 1, 0) + 1) * cols if kh > 1 else 0
        return (padded + rows) * itemsize + 4 * ALIGNMENT
    spread = n * c * ho * cols if (kw, sw) != (1, 1) else 0
    return (n * c * ho * wo + spread + padded) * itemsize + 6 * ALIGNMENT


#: the max-pool kernel runs over chunks of images whose temporaries take about this many bytes
POOL_CHUNK_BYTES = 512 * 1024


def pool_chunk_images(x_shape: tuple[int, ...], attrs: Mapping[str, Any], itemsize: int) -> int:
    """How many images one chunk of the max-pool kernel takes (its temporaries are per image):
    as few chunks as keep each under POOL_CHUNK_BYTES, of equal size."""
    n = max(int(x_shape[0]), 1)
    per_image = _pool_saving_scratch((1, *x_shape[1:]), attrs, itemsize) - 6 * ALIGNMENT
    chunks = -(-n * per_image // POOL_CHUNK_BYTES)
    return max(1, -(-n // max(chunks, 1)))


def _pool_saving_held(x_shape: tuple[int, ...], attrs: Mapping[str, Any], itemsize: int) -> int:
    """The max-pool forward's workspace: none for the numba loop of 2x2 windows at stride 2
    (it writes straight into its results), else a chunk of images' temporaries."""
    if library.applies("max_pool2d_saving", dict(attrs)):
        return 0
    return _pool_saving_scratch((pool_chunk_images(x_shape, attrs, itemsize), *x_shape[1:]), attrs, itemsize)


#: op -> (bytes held across runs in a shared workspace, bytes of scratch while it runs), from
#: its inputs' shapes, its attributes and the itemsize
WORKSPACE: dict[str, Callable[[list[tuple[int, ...]], Mapping[str, Any], int], tuple[int, int]]] = {
    **{op: (lambda s, a, i, op=op: _conv_scratch(op, s, a, i)) for op in _CONV_OPERANDS},
    "max_pool2d_saving": lambda s, a, i: (_pool_saving_held(s[0], a, i), 0),
    **{op: (lambda s, a, i, op=op: (_avg_pool_scratch(op, s, a, i), 0)) for op in ("avg_pool2d", "avg_pool2d_grad")},
}


ALIGNMENT = 64  # bytes: every block in an arena starts on a cache line


def pack_blocks(sizes: Sequence[int], spans: Sequence[tuple[int, int]]) -> tuple[list[int], int]:
    """Offsets of blocks in one arena, and its size: blocks whose step spans meet never
    overlap in memory, blocks that are never alive together may. Greedy by size (the
    largest first, each at the lowest offset free throughout its span), as TFLite's arena
    planner does; within a few percent of the most bytes alive at any step on the
    reference networks."""
    order = sorted(range(len(sizes)), key=lambda b: (-sizes[b], spans[b][0], b))
    offsets = [0] * len(sizes)
    placed: list[tuple[int, int, tuple[int, int]]] = []  # (offset, end, span)
    for block in order:
        size = -(-sizes[block] // ALIGNMENT) * ALIGNMENT
        lo, hi = spans[block]
        busy = sorted((o, e) for o, e, (a, b) in placed if a <= hi and lo <= b)
        offset = 0
        for start, end in busy:
            if offset + size <= start:
                break
            offset = max(offset, end)
        offsets[block] = offset
        placed.append((offset, offset + size, spans[block]))
    return offsets, max((end for _, end, _ in placed), default=0)


def peak_bytes(plan: Plan, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """The most bytes a run holds at once besides variables, feeds and constants: the memory
    plan's arena (its storage blocks packed by their spans) and the convolutions' shared
    workspace, both held across runs, plus each unplanned result (none for a view) until its
    release, plus the scratch of the kernel running (``WORKSPACE``). Unknown dims
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
        scratch = WORKSPACE.get(step.op)
        extra = 0
        if scratch is not None:
            ins = [plan.buffers[n] for n in step.inputs]
            kept, extra = scratch([resolve(b.shape) for b in ins], step.attrs, np.dtype(ins[0].dtype).itemsize)
            held = max(held, kept)
        for k, out in enumerate(step.outputs):
            if k not in viewed and out not in storage:
                live += size(plan.buffers[out].shape, plan.buffers[out].dtype)
        peak = max(peak, live + extra)
        for name in released:
            if name not in view_outputs:  # a view's bytes were never counted
                live -= size(plan.buffers[name].shape, plan.buffers[name].dtype)
    return blocks + held + peak


def peak_formula(plan: Plan, low: int = 32, high: int = 128) -> tuple[int, int]:
    """Peak bytes as ``a + b * batch`` (every named or unknown feed dim taken as the batch),
    the line through the peaks at batch ``low`` and ``high``: exact where the peak grows
    linearly between them (every reference network over the usual batch sizes). Packing the
    arena makes the peak piecewise linear, so far outside that range (a batch of thousands)
    ``peak_bytes`` at the actual shapes is the figure to use."""
    def at(batch: int) -> int:
        shapes = {feed: tuple(d if isinstance(d, int) else batch for d in plan.buffers[name].shape)
                  for feed, name in plan.feeds.items()}
        return peak_bytes(plan, shapes)

    per_item = (at(high) - at(low)) // (high - low)
    return at(low) - per_item * low, per_item


def describe_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
