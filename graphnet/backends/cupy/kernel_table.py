"""The CuPy backend's kernel table.

* fused groups and fused updates: one generated CUDA kernel each (fused_kernels.py), else
  the fused op's reference kernel on CuPy arrays (the compile report says why); a lone
  ``gelu`` or ``erf`` likewise, as a group of one;
* everything else: the op's reference ``xp`` kernel with ``xp = cupy`` (matrix products go
  to cuBLAS through ``cupy.matmul``; convolutions are the reference im2col kernels, whose
  products are batched cuBLAS calls).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from ...codegen import cuda
from ...codegen.plan_kernels import lone_body
from ...executors.kernel_table import KernelEntry, KernelTable, reference_kernel
from ...plan import Plan, Step
from .fused_kernels import CudaFusedKernel


def _fused(executor: Any, step: Step) -> Callable[..., Any]:
    fallback = reference_kernel(executor, step)
    buffers = executor.plan.buffers
    body = step.attrs["body"]
    results = tuple(step.attrs["results"]) if step.op == "fused_assign" else None
    out_dtype = buffers[step.outputs[0]].dtype if step.op == "fused" else None
    kernel = CudaFusedKernel(executor.xp, body, out_dtype, fallback, results)
    shapes = [tuple(d if isinstance(d, int) else 2 for d in buffers[name].shape) for name in step.inputs]
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


_generated = KernelEntry("generated CUDA kernel", _fused)
_generated_alone = KernelEntry("generated CUDA kernel of one op", _alone, _float_step)

TABLE = KernelTable({
    "fused": [_generated],
    "fused_assign": [_generated],
    "gelu": [_generated_alone],
    "erf": [_generated_alone],
})
