"""The CuPy backend's runtime: plans on an NVIDIA GPU.

Feeds are copied to the device once per run, outputs come back as NumPy arrays (or stay on
the device with ``device_outputs=True``). Variables live on the device between runs: the
executor uploads a Variable's host array when the host may have changed it (its
``host_version`` moved, or another executor holds a newer value), and after a run hands
the Variables it wrote back to them lazily: the host array is refreshed only when someone
reads ``Variable.data`` (graphnet.tensor.Variable).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ...codegen import cuda
from ...codegen.plan_kernels import generated_steps
from ...errors import ExecutorError
from ...executors.base import ArrayExecutor
from ...ops.fused import written_inputs
from ...plan import Plan
from . import fused_kernels
from .availability import require_gpu
from .kernel_table import TABLE


class CupyExecutor(ArrayExecutor):
    """Interprets plans with CuPy on the current CUDA device. Raises CupyMissingError or
    GpuUnavailableError (graphnet.backends.cupy.availability) when it cannot run here."""

    name = "cupy"
    table = TABLE

    def __init__(self, plan: Plan, seed: int | None = None, check_numerics: bool = False,
                 variables: Mapping[str, Any] | None = None) -> None:
        self.xp = require_gpu()
        self.generated: list[fused_kernels.CudaFusedKernel] = []
        self.fallbacks: dict[str, int] = {}
        self._device: dict[int, list[Any]] = {}  # variable id -> [device array, host version uploaded]
        self.device_outputs = False
        super().__init__(plan, seed, check_numerics, variables)
        effects = plan.steps[plan.first_effect:] if plan.first_effect >= 0 else []
        written = {name for step in effects for name in step.inputs[:written_inputs(step.op, step.attrs)]}
        self._written = [self.variables[name] for name in plan.variables if name in written]

    # --- arrays --------------------------------------------------------------------------
    def make_rng(self, seed: int | None) -> Any:
        return self.xp.random.default_rng(seed)

    def get_rng_state(self) -> Any:
        return None  # CuPy's generators have no portable state; a loaded plan reseeds

    def set_rng_state(self, state: Any) -> None:
        if state is not None:
            self.rng = self.make_rng(self.seed)

    def from_host(self, array: np.ndarray) -> Any:
        return self.xp.asarray(array)

    def to_host(self, array: Any) -> np.ndarray:
        return array if self.device_outputs else self.xp.asnumpy(array)

    def variable_array(self, var: Any) -> Any:
        entry = self._device.get(var.id)
        if entry is not None and (var.held_by() is self or
                                  (var.held_by() is None and entry[1] == var.host_version)):
            return entry[0]
        host = var.data  # fetched from another executor first, if one holds a newer value
        if entry is not None and entry[0].shape == host.shape and entry[0].dtype == host.dtype:
            entry[0].set(host)
        else:
            entry = [self.xp.asarray(host), 0]
            self._device[var.id] = entry
        entry[1] = var.host_version
        return entry[0]

    def adopt_variable(self, var: Any, view: Any) -> None:
        view.set(np.ascontiguousarray(var.data))
        self._device[var.id] = [view, var.host_version]

    def readopt_variable(self, var: Any, view: Any) -> None:
        entry = self._device.get(var.id)
        if entry is None or entry[0] is not view or var.held_by() not in (None, self) or \
                (var.held_by() is None and entry[1] != var.host_version):
            host = var.data
            if host.shape == view.shape and host.dtype == view.dtype:
                self.adopt_variable(var, view)

    def run(self, feeds: Mapping[str, Any], device_outputs: bool = False) -> dict[str, Any]:
        self.device_outputs = device_outputs
        try:
            return super().run(feeds, device_outputs)
        finally:
            self.device_outputs = False
            for var in self._written:
                entry = self._device.get(var.id)
                if entry is not None:
                    var.hand_to_device(self, lambda host, array=entry[0]: array.get(out=host))

    # --- reports -------------------------------------------------------------------------
    def fall_back(self, reason: str, fallback: Any) -> Any:
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        return fallback

    def codegen_summary(self) -> dict[str, Any]:
        return {"codegen": "cuda", "cuda_kernels": len(self.generated), "reference_groups": dict(self.fallbacks),
                "cuda_graph": "not captured (plain launches)"}

    @staticmethod
    def kernel_sources(plan: Plan) -> list[tuple[str, str, str]]:
        """(label, file stem, CUDA source) of every generated kernel of ``plan`` (no GPU needed)."""
        found = []
        for g in generated_steps(plan):
            try:
                source = fused_kernels.step_source(g)
            except cuda.UnsupportedKernel as exc:  # runs through its reference kernel instead
                source = f"// no generated kernel: {exc}\n"
            found.append((g.label, f"step{g.index:04d}_{g.step.op}", source))
        return found

    def use_kernel_choices(self, choices: Mapping[str, str]) -> None:
        """A plan saved by the NumPy backend names its CPU convolution algorithms; the GPU has
        its own kernels (the same values within float rounding), so they do not apply here."""
        for key, name in choices.items():
            if not isinstance(key, str) or not isinstance(name, str):
                raise ExecutorError(f"bad kernel choice {str(key)[:80]!r}: {str(name)[:40]!r}")
