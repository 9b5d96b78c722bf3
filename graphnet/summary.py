"""``gn.summary(model, input_shape)``: a model's layers, their output shapes and parameters,
and the compiled plan's kernels and peak memory, as Keras' ``summary()`` and torchinfo give."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .compile import compile as compile_plan
from .errors import GraphnetError
from .executors.arena import describe_bytes
from .nn.module import CALL_LOGS, Module
from .tensor import Tensor, placeholder


@dataclass
class LayerRow:
    """One module call: its path, class, output shape(s) and its own parameters (not its children's)."""

    path: str
    kind: str
    output: list[tuple[Any, ...]]
    parameters: int
    trainable: int


@dataclass
class ModelSummary:
    """What ``gn.summary`` found; ``str()`` is the table."""

    rows: list[LayerRow]
    parameters: int
    trainable: int
    parameter_bytes: int
    buffers: int
    kernels: int
    batch_size: int
    peak_bytes: int
    peak_formula: tuple[int, int]
    outputs: list[tuple[Any, ...]] = field(default_factory=list)

    def __str__(self) -> str:
        width = max([len("Layer (type)")] + [len(f"{r.path} ({r.kind})") for r in self.rows]) + 2
        shape_width = max([len("Output shape")] + [len(_shapes(r.output)) for r in self.rows]) + 2
        line = "-" * (width + shape_width + 12)
        lines = [line, f"{'Layer (type)':<{width}}{'Output shape':<{shape_width}}{'Param #':>12}", line]
        for r in self.rows:
            lines.append(f"{r.path + ' (' + r.kind + ')':<{width}}{_shapes(r.output):<{shape_width}}"
                         f"{r.parameters:>12,}")
        a, b = self.peak_formula
        lines += [line,
                  f"Total params: {self.parameters:,} ({describe_bytes(self.parameter_bytes)}); trainable "
                  f"{self.trainable:,}, frozen {self.parameters - self.trainable:,}; buffers {self.buffers:,}",
                  f"Inference plan (eval mode): {self.kernels} kernels per run; peak memory "
                  f"{describe_bytes(self.peak_bytes)} at batch {self.batch_size} ({a:,} + {b:,} * batch bytes, "
                  f"besides parameters and feeds)",
                  line]
        return "\n".join(lines)


def _shapes(shapes: list[tuple[Any, ...]]) -> str:
    return ", ".join("(" + ", ".join("None" if d is None else str(d) for d in s) + ")" for s in shapes)


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def summary(model: Module, *inputs: Any, batch_size: int = 1, dtype: str = "float32") -> ModelSummary:
    """Call ``model`` on symbolic inputs and describe it.

    ``inputs``: one shape per model input (``(None, 1, 28, 28)``; None is the batch dim) or
    placeholders. Returns a :class:`ModelSummary` (print it): each module call's output
    shape and own parameter count, the totals (trainable and frozen), and the inference
    plan compiled in eval mode: its kernels per run and its peak memory at ``batch_size``.
    The model's train/eval mode is left as it was.
    """
    if not isinstance(model, Module):
        raise GraphnetError(f"summary expects a gn.nn.Module, got {type(model).__name__}")
    if not inputs:
        raise GraphnetError("summary needs the input shape(s), e.g. gn.summary(model, (None, 1, 28, 28))")
    feeds = [item if isinstance(item, Tensor) else placeholder(f"input{i}" if len(inputs) > 1 else "input",
                                                              tuple(item), dtype)
             for i, item in enumerate(inputs)]
    log: list[list[Any]] = []
    CALL_LOGS.append(log)
    try:
        outputs = _tensors(model(*feeds))
    finally:
        CALL_LOGS.remove(log)
    rows = []
    for module, result in log:
        own = [p for _, p in module.named_parameters(recurse=False)] if hasattr(module, "named_parameters") else []
        rows.append(LayerRow(module._path or "model", type(module).__name__, [t.shape for t in _tensors(result)],
                             sum(p.data.size for p in own), sum(p.data.size for p in own if p.requires_grad)))
    params = list(model.parameters())
    buffers = list(model.buffers())
    plan = compile_plan({f"output{i}": t for i, t in enumerate(outputs)}, mode="eval")
    shapes = {name: tuple(batch_size if not isinstance(d, int) else d for d in plan.plan.buffers[buf].shape)
              for name, buf in plan.plan.feeds.items()}
    return ModelSummary(rows, sum(p.data.size for p in params), sum(p.data.size for p in params if p.requires_grad),
                        sum(p.data.nbytes for p in params), sum(int(np.size(b.data)) for b in buffers),
                        len(plan.plan.steps), batch_size, plan.executor.peak_bytes(plan.plan, shapes),
                        plan.executor.peak_formula(plan.plan), [t.shape for t in outputs])
