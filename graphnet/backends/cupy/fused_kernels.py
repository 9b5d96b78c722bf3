"""Fused groups as generated CUDA kernels (source: graphnet.codegen.cuda), compiled by CuPy's
NVRTC path once per distinct source in a process and launched over the collapsed loop.

A group ending in a reduction writes its last elementwise value in double over the whole
loop, and CuPy's reduction (a fixed order, no atomics) sums it: results are the same run
to run. Groups the generator cannot render run through the fused op's reference kernel on
CuPy arrays (the compile report says why).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np

from ... import dtypes
from ...codegen import cuda
from ...codegen.fused_body import fused_layout
from ...codegen.plan_kernels import GeneratedStep
from .nvrtc import OPTIONS

THREADS_PER_BLOCK = 256
BLOCKS_PER_SM = 32  # grid-strided: enough blocks to fill the GPU, no more

_lock = threading.Lock()
_modules: dict[str, Any] = {}  # source -> compiled function (one per distinct source)


def step_source(generated: GeneratedStep) -> str:
    """The CUDA source of a generated step at its listed shapes (UnsupportedKernel if none)."""
    layout = _layout_or_unsupported(generated.body, generated.shapes, generated.results)
    return cuda.kernel_source(generated.body, generated.dtypes, layout.spans, generated.out_dtype,
                              generated.results, layout.accumulate)


def _layout_or_unsupported(body: tuple, shapes: Sequence[tuple[int, ...]], results: Any) -> Any:
    try:
        return fused_layout(body, shapes, results)
    except ValueError as exc:  # a fused_assign whose variables do not span its loop
        raise cuda.UnsupportedKernel(str(exc)) from None


def _function(cupy: Any, source: str) -> Any:
    with _lock:
        found = _modules.get(source)
        if found is None:
            name = source.split('extern "C" __global__ void ', 1)[1].split("(", 1)[0]
            module = cupy.RawModule(code=source, options=OPTIONS, backend="nvrtc")
            found = _modules[source] = module.get_function(name)
        return found


class CudaFusedKernel:
    """A fused step's generated kernel; call it like the reference kernel ``(*arrays, out=None)``."""

    def __init__(self, cupy: Any, body: tuple, out_dtype: str | None, fallback: Callable[..., Any],
                 results: tuple[int, ...] | None = None) -> None:
        self.cupy = cupy
        self.body = body
        self.out_dtype = out_dtype
        self.fallback = fallback
        self.results = results
        self._by_shapes: dict[tuple, Any] = {}
        self._blocks = BLOCKS_PER_SM * cupy.cuda.Device().attributes["MultiProcessorCount"]

    def prepare(self, shapes: Sequence[tuple[int, ...]], input_dtypes: Sequence[str]) -> None:
        """Compile now the kernel for inputs of these shapes and dtypes (UnsupportedKernel if the
        generator has no exact form for the group)."""
        key = tuple(zip(map(tuple, shapes), (np.dtype(dtypes.DTYPES[d]) for d in input_dtypes)))
        self._by_shapes[key] = self._layout(tuple(map(tuple, shapes)), tuple(input_dtypes))

    def _layout(self, shapes: tuple, input_dtypes: tuple[str, ...]) -> tuple:
        layout = _layout_or_unsupported(self.body, shapes, self.results)
        source = cuda.kernel_source(self.body, input_dtypes, layout.spans, self.out_dtype, self.results,
                                    layout.accumulate)
        return layout, _function(self.cupy, source)

    def __call__(self, *arrays: Any, out: Any = None) -> Any:
        cp = self.cupy
        key = tuple([(a.shape, a.dtype) for a in arrays])
        found = self._by_shapes.get(key)
        if found is None:
            try:
                found = self._layout(tuple(a.shape for a in arrays), tuple(a.dtype.name for a in arrays))
            except cuda.UnsupportedKernel:
                found = (None, None)
            self._by_shapes[key] = found
        layout, function = found
        if function is None:
            return self.fallback(*arrays) if self.results is not None else self.fallback(*arrays, out=out)
        views = [a.reshape(v) if a.flags.c_contiguous else cp.ascontiguousarray(a).reshape(v)
                 for a, v in zip(arrays, layout.views)]
        extents = [np.int64(n) for n in layout.extents]
        total = int(np.prod(layout.extents))
        grid = (max(1, min(self._blocks, -(-total // THREADS_PER_BLOCK))),)
        if self.results is not None:  # variables: contiguous device arrays, written in place
            if total:
                function(grid, (THREADS_PER_BLOCK,), (*views, *extents))
            return None
        if layout.accumulate is not None:
            values = cp.empty(layout.extents, cp.float64)
            if total:
                function(grid, (THREADS_PER_BLOCK,), (values, *views, *extents))
            axes = tuple(d for d, runs in enumerate(layout.accumulate) if not runs)
            summed = values.sum(axis=axes, keepdims=True)
            if layout.scale != 1.0:
                summed *= layout.scale
            result = summed.reshape(layout.out_shape).astype(self.out_dtype)
            if out is not None:
                out[...] = result
                return out
            return result
        target = out if out is not None and out.flags.c_contiguous else cp.empty(layout.out_shape, self.out_dtype)
        if total:
            function(grid, (THREADS_PER_BLOCK,), (target.reshape(layout.extents), *views, *extents))
        if out is not None and target is not out:
            out[...] = target
            return out
        return target
