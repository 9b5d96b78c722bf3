"""The NumPy backend's memory model: what its kernels hold besides their results.

The kernel table (kernel_table.py) names one of these rules for each kernel that takes a
workspace; the peak-memory formula (graphnet.executors.peak) adds them to the arena and the
unplanned results. Each rule takes the step's input shapes (concrete), its attributes and
the itemsize, and returns (bytes held across runs in the executor's shared workspace, bytes
allocated and freed while the step runs).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ...executors.arena import ALIGNMENT
from ...kernels.cpu.conv import nhwc
from ...kernels.cpu.conv.algorithms import _geometry, chunk_images, xp_chunk_images
from ...kernels.cpu.conv.chooser import parts, rule
from ...ops.attention import scratch_bytes as _attention_scratch
from ...ops.conv_kernels import _ConvGeom, _out_size


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
    the step runs). A convolution split among threads (chooser.parts) runs each part's
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
    """``_conv_scratch`` of one part, for the algorithm the cost rule picks (chooser.rule;
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
        return nhwc.scratch_bytes(op, geo, itemsize), 0
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


def pool_saving(shapes: list[tuple[int, ...]], attrs: Mapping[str, Any], itemsize: int) -> tuple[int, int]:
    """The xp max-pool forward run over chunks of images: one chunk's temporaries, held in the
    workspace. (The numba loop of 2x2 windows at stride 2 writes straight into its results
    and needs none.)"""
    x_shape = shapes[0]
    return _pool_saving_scratch((pool_chunk_images(x_shape, attrs, itemsize), *x_shape[1:]), attrs, itemsize), 0


def avg_pool(op: str) -> Callable[[list[tuple[int, ...]], Mapping[str, Any], int], tuple[int, int]]:
    """The average-pool kernels' workspace rule (held in the workspace, no other scratch)."""
    return lambda shapes, attrs, itemsize: (_avg_pool_scratch(op, shapes, attrs, itemsize), 0)


def reference_convolution(op: str) -> Callable[[list[tuple[int, ...]], Mapping[str, Any], int], tuple[int, int]]:
    """The op's reference convolution kernel (numba off): the whole batch's padded input, columns
    and product allocated while the step runs (the input gradient also its transposed copy)."""
    def rule(shapes: list[tuple[int, ...]], attrs: Mapping[str, Any], itemsize: int) -> tuple[int, int]:
        x_at, w_at = _CONV_OPERANDS[op]
        x_shape, w_shape, cols, output, _, padded = _conv_sizes(shapes, attrs, x_at, w_at)
        layout = _ConvGeom(x_shape, w_shape, attrs["stride"], attrs["padding"], attrs["dilation"],
                           int(attrs["groups"])).layout
        copied = padded or (int(np.prod(x_shape)) if layout == "nhwc" else 0)
        weights = int(np.prod(w_shape))
        return 0, (cols + output * (2 if op == "conv2d_grad_input" else 1) + copied + weights) * itemsize
    return rule


def convolution(op: str) -> Callable[[list[tuple[int, ...]], Mapping[str, Any], int], tuple[int, int]]:
    """A convolution op's workspace rule, for the algorithm the cost rule picks."""
    return lambda shapes, attrs, itemsize: _conv_scratch(op, shapes, attrs, itemsize)


def attention(op: str) -> Callable[[list[tuple[int, ...]], Mapping[str, Any], int], tuple[int, int]]:
    """Blocked attention and its gradient: one block's scores and temporaries, and a few values
    per query row, allocated while the step runs (graphnet.ops.attention.scratch_bytes)."""
    return lambda shapes, attrs, itemsize: (0, _attention_scratch(op, shapes, attrs, itemsize))
