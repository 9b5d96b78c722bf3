"""The NumPy backend's kernel table: which kernel runs each op, when, and what memory it needs.

Read top to bottom, an op's entries are tried in order and the first that applies runs the
step; an op with no entry that applies runs its reference kernel (the op's own ``xp``
kernel). The peak-memory formula reads the same entries (``workspace=``, rules in
workspace.py), so what ``compile`` and ``inspect`` predict is what the chosen kernels hold.

* hand-written numba loops (graphnet/kernels/cpu): training batch norm and its gradient,
  the max-pool forward of 2x2 windows at stride 2 and the gradient from a saved arg-max,
  softmax cross-entropy; where numba is installed, ``GRAPHNET_CODEGEN`` is ``numba`` and
  the first input is a float;
* the max-pool forward otherwise, and the average pools: the reference kernel with its
  temporaries from the executor's workspace (the max pool over chunks of images);
* matrix products: split among graphnet's threads (kernels/cpu/matmul.py);
* attention and its gradient: the op's blocked xp kernel, with its block's temporaries counted
  (graphnet.ops.attention.scratch_bytes);
* convolutions: the algorithm the chooser picks (kernels/cpu/conv/chooser.py), split among
  threads by images;
* fused groups: a numba loop generated from the members' scalar forms (fused_kernels.py),
  else the fused op's reference kernel (the compile report says why); a lone ``gelu`` or
  ``erf`` likewise, as a group of one (its reference kernel's erf is some seventy array passes).
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from ... import config
from ...errors import GraphnetError
from ...codegen.fused_body import unsupported_member
from ...codegen.plan_kernels import lone_body, usual_shape
from ...executors.kernel_table import KernelEntry, KernelTable, reference_kernel
from ...kernels.cpu import batch_norm, losses, matmul, pooling
from ...kernels.cpu.conv.chooser import ConvKernel, preload_loops
from ...plan import Plan, Step
from . import fused_kernels, workspace
from .fused_kernels import numba_available


def numba_on() -> bool:
    """Whether numba kernels run: numba installed and ``GRAPHNET_CODEGEN`` not ``numpy``."""
    return config.flags.codegen == "numba" and numba_available()


def _float_input(plan: Plan, step: Step) -> bool:
    return bool(step.inputs) and plan.buffers[step.inputs[0]].dtype in ("float32", "float64")


def numba_loop(kernel: Callable[..., Any], takes: Callable[..., bool] | None = None) -> KernelEntry:
    """An entry for a hand-written numba loop over float inputs (``takes(**attrs)``: whether it
    handles the step's attributes). It is compiled (or loaded from numba's cache) when the
    executor binds the plan, on tiny inputs, so the first run times only the work."""
    def applies(plan: Plan, step: Step) -> bool:
        return numba_on() and _float_input(plan, step) and (takes is None or takes(**dict(step.attrs)))

    def make(executor: Any, step: Step) -> Callable[..., Any]:
        bound = functools.partial(kernel, **dict(step.attrs))
        if step.op not in executor.library_seconds:
            start = time.perf_counter()
            probes = []
            for name in step.inputs:
                buffer = executor.plan.buffers[name]
                shape = tuple(d if isinstance(d, int) else 2 for d in buffer.shape)
                probes.append((np.ones if np.dtype(buffer.dtype).kind == "f" else np.zeros)(shape, buffer.dtype))
            try:
                bound(*probes)
            except GraphnetError:  # shapes the probe made up disagree (a fixed dim beside a
                pass               # symbolic one): compiled all the same, and the real run checks
            executor.library_seconds[step.op] = time.perf_counter() - start
        return bound
    return KernelEntry(f"numba {kernel.__name__}", make, applies)


def _with_scratch(executor: Any, step: Step) -> Callable[..., Any]:
    """The reference kernel with its temporaries from the executor's workspace (the same memory
    every run)."""
    kernel, space = reference_kernel(executor, step), executor.workspaces[0]

    def run(*arrays: Any, out: Any = None) -> Any:
        return kernel(*arrays, out=out, scratch=space.bump())
    return run


def _pool_in_chunks(executor: Any, step: Step) -> Callable[..., Any]:
    return pool_in_chunks(reference_kernel(executor, step), executor.workspaces[0], dict(step.attrs))


def pool_in_chunks(kernel: Callable[..., Any], space: Any, attrs: dict[str, Any]) -> Callable[..., Any]:
    """The max-pool reference ``kernel`` over chunks of images (workspace.pool_chunk_images),
    each chunk's temporaries from the workspace ``space``: they are a few times the input's
    size, so the whole batch at once would hold more scratch than the step's activations."""
    def run(x: Any, out: Any = None) -> Any:
        targets = out if out is not None else (None,) * 3
        step_images = workspace.pool_chunk_images(x.shape, attrs, x.dtype.itemsize)
        parts = [kernel(x[start:start + step_images],
                        out=tuple(None if t is None else t[start:start + step_images] for t in targets),
                        scratch=space.bump()) for start in range(0, x.shape[0], step_images)]
        if len(parts) == 1:
            return parts[0]
        return tuple(t if t is not None else np.concatenate([part[k] for part in parts])
                     for k, t in enumerate(targets))
    return run


def _convolution(executor: Any, step: Step) -> Callable[..., Any]:
    preload_loops()  # import the compiled loops' modules now, not inside the first run's helper threads
    kernel = ConvKernel(step.op, dict(step.attrs), config.flags.autotune, executor.workspaces,
                        pinned=executor.pinned_algorithms)
    executor.convolutions.append(kernel)
    return kernel


def _fused(executor: Any, step: Step) -> Callable[..., Any]:
    """A generated numba loop for a fused group, compiled now for the usual shapes; the fused
    op's reference kernel where it cannot be (the reason goes to the compile report)."""
    fallback = reference_kernel(executor, step)
    if config.flags.codegen != "numba":
        return executor.fall_back("GRAPHNET_CODEGEN=numpy", fallback)
    body = dict(step.attrs)["body"]
    missing = unsupported_member(body)
    if missing is not None:
        return executor.fall_back(f"{missing} has no scalar form", fallback)
    if not numba_available():
        return executor.fall_back("numba is not installed", fallback)
    buffers = executor.plan.buffers
    if step.op == "fused":
        kernel = fused_kernels.FusedKernel(body, buffers[step.outputs[0]].dtype, fallback)
    else:
        kernel = fused_kernels.FusedKernel(body, None, fallback, results=dict(step.attrs)["results"])
    executor.generated.append(kernel)
    shapes = [buffers[name].shape for name in step.inputs]
    if all(isinstance(d, (int, str)) or d is None for shape in shapes for d in shape):
        # compile now, for the shapes seen when symbolic dims are above 1 (the usual batch)
        concrete = [usual_shape(shape) for shape in shapes]
        try:
            kernel.prepare(concrete, [buffers[name].dtype for name in step.inputs],
                           [buffers[name].kind == "constant" for name in step.inputs])
        except Exception as exc:  # tried again at the first run, and computed by NumPy if it fails
            executor.fall_back(fused_kernels.reason_of(exc), fallback)
    return kernel


def _numba_on(plan: Plan, step: Step) -> bool:
    return numba_on()


def _alone(executor: Any, step: Step) -> Callable[..., Any]:
    """A costly elementwise op that no fusion group took (a GELU between a product and a
    dropout) as a generated loop of one member: its scalar form calls libm's ``erf`` once per
    element where the reference kernel makes some seventy passes over the array."""
    return _fused(executor, replace(step, op="fused", attrs={"body": lone_body(step)}))


def _float_step(plan: Plan, step: Step) -> bool:
    return numba_on() and plan.buffers[step.inputs[0]].dtype.startswith("float")


_split_matmul = KernelEntry("BLAS products split among threads", lambda executor, step: matmul.matmul)
_generated = KernelEntry("generated numba loop", _fused)
_generated_alone = KernelEntry("generated numba loop of one op", _alone, _float_step)


def _convolution_entries(op: str) -> list[KernelEntry]:
    """The chosen CPU algorithm where numba runs; else the reference kernel, whose temporaries
    the peak formula counts as scratch all the same."""
    return [KernelEntry("chosen CPU convolution algorithm", _convolution, _numba_on, workspace.convolution(op)),
            KernelEntry("xp", reference_kernel, workspace=workspace.reference_convolution(op))]


TABLE = KernelTable({
    "batch_norm_train": [numba_loop(batch_norm.batch_norm_train)],
    "batch_norm_train_grad": [numba_loop(batch_norm.batch_norm_train_grad)],
    "softmax_cross_entropy": [numba_loop(losses.softmax_cross_entropy)],
    "max_pool2d_grad_saved": [numba_loop(pooling.max_pool2d_grad_saved)],
    "max_pool2d_saving": [
        numba_loop(pooling.max_pool2d_saving, pooling.takes_attrs),
        KernelEntry("xp over chunks of images", _pool_in_chunks, workspace=workspace.pool_saving)],
    "avg_pool2d": [KernelEntry("xp with workspace", _with_scratch, workspace=workspace.avg_pool("avg_pool2d"))],
    "avg_pool2d_grad": [KernelEntry("xp with workspace", _with_scratch,
                                    workspace=workspace.avg_pool("avg_pool2d_grad"))],
    "matmul": [_split_matmul],
    **{op: [KernelEntry("xp blocked attention (online softmax)", reference_kernel, workspace=workspace.attention(op))]
       for op in ("scaled_dot_product_attention", "scaled_dot_product_attention_grad")},
    **{op: _convolution_entries(op) for op in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")},
    "fused": [_generated],
    "fused_assign": [_generated],
    "gelu": [_generated_alone],
    "erf": [_generated_alone],
})
