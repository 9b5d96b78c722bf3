"""The compiled plan: plain data, an ordered list of steps over named buffers.

A ``Plan`` holds no code: each step names a registered op, the buffers it reads, the
buffer it writes and its attributes. Executors interpret it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ir import Shape
from .tensor import Variable


@dataclass(frozen=True)
class Buffer:
    """A named value slot: ``kind`` is feed, variable, constant or temp."""

    name: str
    shape: Shape
    dtype: str
    kind: str


@dataclass(frozen=True)
class Step:
    """Run ``op`` on the ``inputs`` buffers with ``attrs``, writing ``output``."""

    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any]
    role: str = "forward"
    location: str = ""
    scope: str = ""


@dataclass(frozen=True)
class PassRecord:
    """What one compile pass did: its name and the node counts before and after."""

    name: str
    nodes_before: int
    nodes_after: int
    seconds: float

    def __str__(self) -> str:
        delta = self.nodes_after - self.nodes_before
        return f"{self.name:<16} {self.nodes_before:>5} -> {self.nodes_after:<5} ({delta:+d})  {self.seconds * 1e3:.1f} ms"


@dataclass
class Plan:
    """Ordered steps over named buffers, plus the values those buffers start with.

    ``release[i]`` lists the temp buffers whose last reader is step ``i``: an executor may
    free them after it, which bounds peak memory.
    """

    buffers: dict[str, Buffer]
    steps: list[Step]
    feeds: dict[str, str]
    outputs: dict[str, str]
    constants: dict[str, np.ndarray]
    variables: dict[str, Variable]
    release: list[tuple[str, ...]]
    optimizer: dict[str, Any] | None = None
    passes: list[PassRecord] = field(default_factory=list)

    @property
    def trainable(self) -> bool:
        return any(s.op == "update" for s in self.steps)

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.steps:
            counts[s.op] = counts.get(s.op, 0) + 1
        return dict(sorted(counts.items()))

    def __str__(self) -> str:
        from .printing import format_plan

        return format_plan(self)
