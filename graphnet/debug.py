"""Finding the optimisation that changed the numbers: ``gn.debug.bisect_passes``.

Every optimisation graphnet applies can be switched off (the optional passes by
``GRAPHNET_DISABLE_PASSES``, generated kernels by ``GRAPHNET_CODEGEN=numpy``). This module
compiles a computation with all of them off (the reference), then switches them on one at
a time, in pipeline order, runs one step each time from the same parameters, seed and
feeds, and names the first optimisation whose results differ from the reference beyond a
tolerance. It then traces the last agreeing plan and the first disagreeing one step by step
and reports the first step (op, module path, source line) whose values differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from . import config
from .compile import CompiledPlan, compile
from .passes import optional_passes
from .plan import Step

#: The optimisations, in the order they are switched on: the pipeline's optional passes (one
#: list, graphnet.passes.optional_passes), then "codegen" (the NumPy backend's generated kernels).
OPTIMISATIONS = optional_passes() + ("codegen",)


@dataclass
class BisectResult:
    """``culprit``: the first optimisation that changes the numbers beyond the tolerance (None if
    none does). ``differences``: each stage's largest relative difference from the reference.
    ``op``, ``scope``, ``location``: where the difference first appears in the culprit's plan."""

    culprit: str | None
    tolerance: float
    differences: dict[str, float] = field(default_factory=dict)
    op: str | None = None
    scope: str | None = None
    location: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        lines = [f"reference: every optimisation off; tolerance {self.tolerance:g} (relative)"]
        lines += [f"  + {name:<19} max relative difference {diff:.3g}" for name, diff in self.differences.items()]
        if self.culprit is None:
            lines.append("no optimisation changes the results beyond the tolerance")
        else:
            where = f" in {self.scope}" if self.scope else ""
            lines.append(f"first to change the results: {self.culprit}")
            if self.op:
                lines.append(f"  first differing step: {self.op}{where} at {self.location or '?'}: {self.detail}")
        return "\n".join(lines)


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (inf for a shape mismatch or a NaN in one of them only)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return math.inf
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        return math.inf
    keep = ~np.isnan(want)
    if not keep.any():
        return 0.0
    scale = float(np.max(np.abs(want[keep]))) or 1.0
    with np.errstate(invalid="ignore"):
        diff = np.abs(got[keep] - want[keep])
    diff = np.where(np.isinf(got[keep]) & (got[keep] == want[keep]), 0.0, diff)
    return float(np.max(diff)) / scale


def _compile(outputs: Any, optimizer: Any, enabled: tuple[str, ...], mode: str | None, seed: int) -> CompiledPlan:
    disabled = {p for p in OPTIMISATIONS if p != "codegen" and p not in enabled}
    with config.options(disabled_passes=disabled, fuse="fuse" in enabled or "fuse_updates" in enabled,
                        codegen="numba" if "codegen" in enabled else "numpy"):
        return compile(outputs, optimizer, mode=mode, seed=seed)


def _results(plan: CompiledPlan, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {f"output {k}": np.array(v) for k, v in plan.run(dict(feeds)).items()}
    out.update({f"variable {name}": np.array(var.data) for name, var in plan.variables.items()
                if var.kind in ("parameter", "buffer")})
    return out


def _snapshot(plan: CompiledPlan) -> Callable[[], None]:
    """A function putting every variable of ``plan`` back to its value now."""
    saved = [(var, var.data.copy()) for var in {id(v): v for v in plan.variables.values()}.values()]

    def restore() -> None:
        for var, value in saved:
            var.data[...] = value

    return restore


def _step_key(step: Step) -> tuple:
    op = step.attrs["body"][-1][0] if step.op == "fused" else step.op
    return (step.role, step.location, step.scope, op)


def bisect_passes(outputs: Any, feeds: Mapping[str, Any], optimizer: Any = None, *, mode: str | None = None,
                  tolerance: float = 1e-4, seed: int = 0) -> BisectResult:
    """Name the first optimisation that changes ``outputs`` (and, with an ``optimizer``, the
    parameters after one training step) by more than ``tolerance`` relative to the plan
    compiled with every optimisation off, and the op and source line where it first shows.

    The parameters' values are restored after every run, so the model is left as it was.
    """
    probe = _compile(outputs, optimizer, (), mode, seed)
    restore = _snapshot(probe)

    try:
        reference = _results(probe, feeds)
        restore()
        enabled: tuple[str, ...] = ()
        previous = probe
        result = BisectResult(None, tolerance)
        for name in OPTIMISATIONS:
            enabled += (name,)
            plan = _compile(outputs, optimizer, enabled, mode, seed)
            got = _results(plan, feeds)
            restore()
            diff = max((relative_difference(got[k], v) if k in got else math.inf for k, v in reference.items()),
                       default=0.0)
            result.differences[name] = diff
            if diff > tolerance and result.culprit is None:
                result.culprit = name
                _locate(result, previous, plan, feeds, tolerance)
                restore()
                break
            previous = plan
        return result
    finally:
        restore()


def _locate(result: BisectResult, good: CompiledPlan, bad: CompiledPlan, feeds: Mapping[str, Any],
            tolerance: float) -> None:
    """The first step of ``bad`` whose values differ from the matching step of ``good``
    (matched by role, source line, module path and op, in order)."""
    restore = _snapshot(good)
    expected: dict[tuple, list[tuple[np.ndarray, ...]]] = {}
    for step, values in good.executor.trace(dict(feeds)):
        expected.setdefault(_step_key(step), []).append(values)
    restore()
    seen: dict[tuple, int] = {}
    for step, values in bad.executor.trace(dict(feeds)):
        key = _step_key(step)
        index = seen.get(key, 0)
        seen[key] = index + 1
        candidates = expected.get(key, [])
        if index >= len(candidates) or not values:
            continue
        for got, want in zip(values, candidates[index]):
            diff = relative_difference(got, want)
            if diff > tolerance:
                members = (" (fused: " + ", ".join(m[0] for m in step.attrs["body"]) + ")") if step.op == "fused" else ""
                result.op, result.scope, result.location = key[3] + members, step.scope, step.location
                result.detail = f"relative difference {diff:.3g} in a {got.dtype}{list(got.shape)} result"
                return
