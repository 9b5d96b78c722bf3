"""The reference executor: NumPy arrays on the host; variables are updated in place."""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Callable

import numpy as np

from .. import config
from ..errors import GraphnetError
from ..plan import Step
from . import conv_algorithms, library, memory, numba_codegen, numba_conv, parallel, threads
from .base import ArrayExecutor


def _with_scratch(kernel: Callable[..., Any], workspace: conv_algorithms.Workspace, attrs: dict[str, Any]
                  ) -> Callable[..., Any]:
    """A kernel with its temporaries from the workspace."""
    def run(*arrays: Any, out: Any = None) -> Any:
        return kernel(*arrays, out=out, scratch=workspace.bump())
    return run


def _pool_in_chunks(kernel: Callable[..., Any], workspace: conv_algorithms.Workspace, attrs: dict[str, Any]
                  ) -> Callable[..., Any]:
    """The max-pool kernel over chunks of images (memory.pool_chunk_images), each chunk's
    temporaries from the workspace: they are a few times the input's size, so the whole
    batch at once would hold more scratch than the step's activations."""
    def run(x: Any, out: Any = None) -> Any:
        targets = out if out is not None else (None,) * 3
        step = memory.pool_chunk_images(x.shape, attrs, x.dtype.itemsize)
        parts = [kernel(x[start:start + step], out=tuple(None if t is None else t[start:start + step] for t in targets),
                        scratch=workspace.bump()) for start in range(0, x.shape[0], step)]
        if len(parts) == 1:
            return parts[0]
        return tuple(t if t is not None else np.concatenate([part[k] for part in parts])
                     for k, t in enumerate(targets))
    return run


#: ops whose xp kernel takes ``scratch=``, and how the executor runs it with its workspace (so
#: that their temporaries are the same memory every run)
SCRATCH_OPS: dict[str, Callable[..., Callable[..., Any]]] = {
    "max_pool2d_saving": _pool_in_chunks, "avg_pool2d": _with_scratch, "avg_pool2d_grad": _with_scratch}


class NumpyExecutor(ArrayExecutor):
    """Interprets plans with NumPy. Parameters are the Variables' own arrays, so every
    plan compiled from the same parameters shares their values. Fused groups run as
    numba kernels generated from their members' scalar forms (graphnet.executors.numba_codegen)
    unless numba is missing or ``GRAPHNET_CODEGEN=numpy``."""

    name = "numpy"
    xp = np

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._generated: list[numba_codegen.FusedKernel] = []
        self._fallbacks: dict[str, int] = {}
        self._library: dict[str, float] = {}  # op -> seconds its numba kernel took to compile or load
        self._convolutions: list[numba_conv.ConvKernel] = []
        # scratch the convolutions and pools share (their column matrices), one workspace per
        # part of a convolution split among threads; the first also serves unsplit kernels
        self._workspaces = [conv_algorithms.Workspace()]
        threads.apply_once()
        super().__init__(*args, **kwargs)
        self._splits = any(step.op in conv_algorithms.CONV_OPS for step in self.plan.steps)

    def running(self) -> Any:
        # plans with convolutions split their kernels' work among graphnet's threads, BLAS
        # products included; the others leave the threads to BLAS (threads.py says why)
        return threads.splitting() if self._splits else contextlib.nullcontext()

    def held_bytes(self) -> int:
        return super().held_bytes() + sum(w.nbytes for w in self._workspaces) \
            + sum(kernel.held_bytes() for kernel in self._convolutions)

    def codegen_summary(self) -> dict[str, Any]:
        """How this executor runs its fused groups: numba kernels (compiled now, loaded from the
        disk cache, or shared with a plan compiled earlier in this process, and the seconds
        that took) or the NumPy fallback (and why)."""
        loads = [load for kernel in self._generated for load in kernel.loads]
        return {"codegen": config.flags.codegen if numba_codegen.numba_available() else "numpy (numba missing)",
                "numba_groups": len(self._generated),
                "threads": threads.current(),
                "compiled": sum(1 for origin, _ in loads if origin == "compiled"),
                "loaded_from_disk_cache": sum(1 for origin, _ in loads if origin == "disk"),
                "shared_in_process": sum(1 for origin, _ in loads if origin == "memory"),
                "seconds": round(sum(seconds for _, seconds in loads), 4),
                "numpy_groups": dict(self._fallbacks),
                "numba_library": {op: round(seconds, 4) for op, seconds in self._library.items()},
                "conv_algorithms": {shape: f"{name} ({how})" for kernel in self._convolutions
                                    for shape, (name, how) in kernel.decisions.items()}}

    def _library_kernel(self, step: Step) -> Callable[..., Any]:
        """A hand-written numba kernel for ``step``'s op, compiled (or loaded) now on tiny inputs
        (ones, and zeros for integer inputs such as a saved arg-max)."""
        kernel = functools.partial(library.LIBRARY[step.op], **dict(step.attrs))
        if step.op not in self._library:
            start = time.perf_counter()
            probes = []
            for name in step.inputs:
                buffer = self.plan.buffers[name]
                shape = tuple(d if isinstance(d, int) else 2 for d in buffer.shape)
                probes.append((np.ones if np.dtype(buffer.dtype).kind == "f" else np.zeros)(shape, buffer.dtype))
            try:
                kernel(*probes)
            except GraphnetError:  # shapes the probe made up disagree (a fixed dim beside a
                pass               # symbolic one): compiled all the same, and the real run checks
            self._library[step.op] = time.perf_counter() - start
        return kernel

    def _fall_back(self, reason: str, fallback: Callable[..., Any]) -> Callable[..., Any]:
        self._fallbacks[reason] = self._fallbacks.get(reason, 0) + 1
        numba_codegen.stats.fell_back(reason)
        return fallback

    def kernel_for(self, step: Step) -> Callable[..., Any]:
        fallback = super().kernel_for(step)
        if library.applies(step.op, dict(step.attrs)) \
                and all(self.plan.buffers[name].dtype in ("float32", "float64") for name in step.inputs[:1]):
            return self._library_kernel(step)
        if step.op == "matmul":
            return parallel.matmul
        if step.op in SCRATCH_OPS:
            return SCRATCH_OPS[step.op](fallback, self._workspaces[0], dict(step.attrs))
        if step.op in conv_algorithms.CONV_OPS and config.flags.codegen == "numba" and numba_codegen.numba_available():
            kernel = numba_conv.ConvKernel(step.op, dict(step.attrs), config.flags.autotune, self._workspaces)
            self._convolutions.append(kernel)
            return kernel
        if step.op not in ("fused", "fused_assign"):
            return fallback
        if config.flags.codegen != "numba":
            return self._fall_back("GRAPHNET_CODEGEN=numpy", fallback)
        body = dict(step.attrs)["body"]
        missing = numba_codegen.unsupported_member(body)
        if missing is not None:
            return self._fall_back(f"{missing} has no scalar form", fallback)
        if not numba_codegen.numba_available():
            return self._fall_back("numba is not installed", fallback)
        if step.op == "fused":
            kernel = numba_codegen.FusedKernel(body, self.plan.buffers[step.outputs[0]].dtype, fallback)
        else:
            kernel = numba_codegen.FusedKernel(body, None, fallback, results=dict(step.attrs)["results"])
        self._generated.append(kernel)
        shapes = [self.plan.buffers[name].shape for name in step.inputs]
        if all(isinstance(d, (int, str)) or d is None for shape in shapes for d in shape):
            # compile now, for the shapes seen when symbolic dims are above 1 (the usual batch)
            concrete = [tuple(d if isinstance(d, int) else 2 for d in shape) for shape in shapes]
            try:
                kernel.prepare(concrete, [self.plan.buffers[name].dtype for name in step.inputs],
                               [self.plan.buffers[name].kind == "constant" for name in step.inputs])
            except Exception as exc:  # tried again at the first run, and computed by NumPy if it fails
                self._fall_back(f"{type(exc).__name__}: {exc}"[:200], fallback)
        return kernel
