"""The CuPy backend's kernel table.

* fused groups and fused updates: one generated CUDA kernel each (fused_kernels.py), else
  the fused op's reference kernel on CuPy arrays (the compile report says why); a lone
  ``gelu`` or ``erf`` likewise, as a group of one;
* everything else: the op's reference ``xp`` kernel with ``xp = cupy`` (matrix products go
  to cuBLAS through ``cupy.matmul``; convolutions are the reference im2col kernels, whose
  products are batched cuBLAS calls).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable, Mapping

from ...codegen import cuda
from ...codegen.plan_kernels import lone_body, usual_shape
from ...executors.kernel_table import KernelEntry, KernelTable, reference_kernel
from ...ops.fused import reduces
from ...plan import Plan, Step
from ..numpy import workspace
from .fused_kernels import CudaFusedKernel


def _fused(executor: Any, step: Step) -> Callable[..., Any]:
    fallback = reference_kernel(executor, step)
    buffers = executor.plan.buffers
    body = step.attrs["body"]
    results = tuple(step.attrs["results"]) if step.op == "fused_assign" else None
    out_dtype = buffers[step.outputs[0]].dtype if step.op == "fused" else None
    kernel = CudaFusedKernel(executor.xp, body, out_dtype, fallback, results)
    shapes = [usual_shape(buffers[name].shape) for name in step.inputs]
    try:  # compiled now for the usual shapes (symbolic dims above 1)
        kernel.prepare(shapes, [buffers[name].dtype for name in step.inputs])
    except cuda.UnsupportedKernel as exc:
        return executor.fall_back(str(exc), fallback)
    executor.generated.append(kernel)
    return kernel


def _alone(executor: Any, step: Step) -> Callable[..., Any]:
    return _fused(executor, replace(step, op="fused", attrs={"body": lone_body(step)}))


def _float_step(plan: Plan, step: Step) -> bool:
    return plan.buffers[step.inputs[0]].dtype.startswith("float")


def _fused_scratch(shapes: list[tuple[int, ...]], attrs: Mapping[str, Any], itemsize: int) -> tuple[int, int]:
    """A group ending in a reduction writes its last value in double over the whole loop (see
    fused_kernels.py) while the step runs; the others need nothing besides their result."""
    body = attrs["body"]
    if len(body) < 2 or not reduces(body[-1][0]):
        return 0, 0
    loop = [max(sizes) for sizes in zip(*[(1,) * (max(map(len, shapes)) - len(s)) + tuple(s) for s in shapes])]
    return 0, 8 * math.prod(loop)


_generated = KernelEntry("generated CUDA kernel", _fused, workspace=_fused_scratch)
_generated_alone = KernelEntry("generated CUDA kernel of one op", _alone, _float_step)

# The reference convolution and attention kernels are the ones the NumPy backend falls back to,
# so their temporaries are the same rules (graphnet/backends/numpy/workspace.py).
TABLE = KernelTable({
    "fused": [_generated],
    "fused_assign": [_generated],
    "gelu": [_generated_alone],
    "erf": [_generated_alone],
    **{op: [KernelEntry("xp im2col + cuBLAS", reference_kernel, workspace=workspace.reference_convolution(op))]
       for op in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")},
    **{op: [KernelEntry("xp blocked attention (online softmax)", reference_kernel, workspace=workspace.attention(op))]
       for op in ("scaled_dot_product_attention", "scaled_dot_product_attention_grad")},
})
