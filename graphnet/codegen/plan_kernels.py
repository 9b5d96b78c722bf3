"""The steps of a plan that a backend runs as generated kernels, with the shapes and dtypes to
render them for: what ``graphnet inspect --kernels`` prints and what the NVRTC tests compile.

A symbolic dim (a batch) is taken as 2, as the numba backend does when it prepares its
loops: a generated kernel depends on which dims each input spans, not on their sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ..plan import Plan, Step

#: lone elementwise ops a backend runs as a generated group of one (their reference kernels are
#: long chains of array passes)
ALONE = ("gelu", "erf")


@dataclass(frozen=True)
class GeneratedStep:
    """One step to render: ``body`` (a fused group's members; a lone op as a group of one),
    ``results`` (a fused_assign's written members, else None), its inputs' ``shapes`` and
    ``dtypes``, and its result's dtype (None for a fused_assign)."""

    index: int
    step: Step
    body: tuple
    results: tuple[int, ...] | None
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    out_dtype: str | None

    @property
    def label(self) -> str:
        where = f" in {self.step.scope}" if self.step.scope else ""
        return f"step {self.index} ({self.step.op} {self.step.output or ''}{where})".replace(" )", ")")


def usual_shape(shape: tuple) -> tuple[int, ...]:
    """``shape`` with each symbolic dim taken as 2 (above 1, as a batch usually is)."""
    return tuple(d if isinstance(d, int) else 2 for d in shape)


def lone_body(step: Step) -> tuple:
    """A lone elementwise step as the body of a group of one."""
    return ((step.op, tuple(-i - 1 for i in range(len(step.inputs))), tuple(sorted(step.attrs.items()))),)


def generated_steps(plan: Plan) -> Iterator[GeneratedStep]:
    """Every fused, fused_assign and lone ``ALONE`` float step of ``plan``, in order."""
    for index, step in enumerate(plan.steps):
        if step.op not in ("fused", "fused_assign") + ALONE:
            continue
        buffers = [plan.buffers[name] for name in step.inputs]
        shapes = tuple(usual_shape(b.shape) for b in buffers)
        dtypes = tuple(b.dtype for b in buffers)
        if step.op in ALONE:
            if not dtypes[0].startswith("float"):
                continue
            body, results = lone_body(step), None
        else:
            body = step.attrs["body"]
            results = tuple(step.attrs["results"]) if step.op == "fused_assign" else None
        out_dtype = plan.buffers[step.outputs[0]].dtype if step.outputs else None
        yield GeneratedStep(index, step, body, results, shapes, dtypes, out_dtype)
