"""The NumPy backend's runtime: NumPy arrays on the host; variables are updated in place.

Which kernel runs each step is the kernel table's (kernel_table.py); this file holds what
the runtime keeps for those kernels (the shared workspaces, the generated kernels and what
they cost, graphnet's threads while a plan with convolutions runs).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping

import numpy as np

from ... import config
from ...codegen.fused_body import fused_layout
from ...codegen.plan_kernels import generated_steps
from ...errors import ExecutorError
from ...executors.base import ArrayExecutor
from ...kernels.cpu import numba_cache, threads
from ...kernels.cpu.conv.algorithms import ALGORITHMS, CONV_OPS
from ...kernels.cpu.conv.common import Workspace
from . import fused_kernels
from .kernel_table import TABLE


class NumpyExecutor(ArrayExecutor):
    """Interprets plans with NumPy. Parameters are the Variables' own arrays, so every
    plan compiled from the same parameters shares their values. Fused groups run as
    numba kernels generated from their members' scalar forms (fused_kernels.py) unless numba
    is missing or ``GRAPHNET_CODEGEN=numpy``."""

    name = "numpy"
    xp = np
    table = TABLE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.generated: list[fused_kernels.FusedKernel] = []
        self.fallbacks: dict[str, int] = {}
        self.library_seconds: dict[str, float] = {}  # op -> seconds its numba loop took to compile or load
        self.convolutions: list[Any] = []
        # convolution algorithms given by a loaded plan (shape key -> name); the choosers read it
        self.pinned_algorithms: dict[str, str] = {}
        # scratch the convolutions and pools share (their column matrices), one workspace per
        # part of a convolution split among threads; the first also serves unsplit kernels
        self.workspaces = [Workspace()]
        numba_cache.guard()  # numba's cache failing (a full disk) is a warning, not an error
        threads.apply_once()
        super().__init__(*args, **kwargs)
        self._splits = any(step.op in CONV_OPS for step in self.plan.steps)

    def running(self) -> Any:
        # plans with convolutions split their kernels' work among graphnet's threads, BLAS
        # products included; the others leave the threads to BLAS (threads.py says why)
        return threads.splitting() if self._splits else contextlib.nullcontext()

    def held_bytes(self) -> int:
        return super().held_bytes() + sum(w.nbytes for w in self.workspaces) \
            + sum(kernel.held_bytes() for kernel in self.convolutions)

    def fall_back(self, reason: str, fallback: Callable[..., Any]) -> Callable[..., Any]:
        """Run a fused group with its reference kernel, and say why in the compile report."""
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        fused_kernels.stats.fell_back(reason)
        return fallback

    def kernel_choices(self) -> dict[str, str]:
        """The convolution algorithms chosen so far (the first step's wins where two steps share
        a key), and those a loaded plan gave that no run has needed yet."""
        choices = dict(self.pinned_algorithms)
        for kernel in self.convolutions:
            for key, (name, _) in kernel.decisions.items():
                choices.setdefault(key, name)
        return choices

    def use_kernel_choices(self, choices: Mapping[str, str]) -> None:
        """Run each convolution whose key is in ``choices`` with that algorithm (where it
        applies to those shapes; the chooser decides otherwise). Raises ExecutorError for an
        op or algorithm this backend does not have."""
        checked = {}
        for key, name in choices.items():
            if not isinstance(key, str) or not isinstance(name, str) or len(key) > 1024:
                raise ExecutorError(f"bad kernel choice {str(key)[:80]!r}: {str(name)[:40]!r}")
            op = key.split(" ", 1)[0]
            if op not in ALGORITHMS:
                raise ExecutorError(f"kernel choice {key[:80]!r}: {op[:40]!r} is not an op the {self.name} "
                                    f"executor chooses a kernel for")
            if name not in ALGORITHMS[op]:
                raise ExecutorError(f"kernel choice {key[:80]!r}: {name[:40]!r} is not an algorithm for {op} "
                                    f"(those are {sorted(ALGORITHMS[op])})")
            checked[key] = name
        self.pinned_algorithms.update(checked)

    @staticmethod
    def kernel_sources(plan: Any) -> list[tuple[str, str, str]]:
        """(label, file stem, numba source) of every generated kernel of ``plan``."""
        found = []
        for g in generated_steps(plan):
            try:
                layout = fused_layout(g.body, g.shapes, g.results)
            except ValueError as exc:  # runs through the fused op's NumPy kernel instead
                found.append((g.label, f"step{g.index:04d}_{g.step.op}", f"# no generated kernel: {exc}\n"))
                continue
            source = fused_kernels.kernel_source(g.body, g.dtypes, layout.spans, g.out_dtype, g.results,
                                                 layout.accumulate)
            found.append((g.label, f"step{g.index:04d}_{g.step.op}", source))
        return found

    def codegen_summary(self) -> dict[str, Any]:
        """How this executor runs its fused groups: numba kernels (compiled now, loaded from the
        disk cache, or shared with a plan compiled earlier in this process, and the seconds
        that took) or the NumPy fallback (and why)."""
        loads = [load for kernel in self.generated for load in kernel.loads]
        return {"codegen": config.flags.codegen if fused_kernels.numba_available() else "numpy (numba missing)",
                "numba_groups": len(self.generated),
                "threads": threads.current(),
                "compiled": sum(1 for origin, _ in loads if origin == "compiled"),
                "loaded_from_disk_cache": sum(1 for origin, _ in loads if origin == "disk"),
                "shared_in_process": sum(1 for origin, _ in loads if origin == "memory"),
                "seconds": round(sum(seconds for _, seconds in loads), 4),
                "numpy_groups": dict(self.fallbacks),
                "numba_library": {op: round(seconds, 4) for op, seconds in self.library_seconds.items()},
                "conv_algorithms": {shape: f"{name} ({how})" for kernel in self.convolutions
                                    for shape, (name, how) in kernel.decisions.items()}}
