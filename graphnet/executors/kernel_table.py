"""A backend's kernel table: per op, how the backend makes its kernel, when that kernel applies,
and what memory it needs besides its result.

Every backend is a table plus a runtime (graphnet.executors.base.ArrayExecutor). The executor
asks the table for each step's kernel (``kernel_for``), and the peak-memory formula asks the
same table what that kernel holds (graphnet.executors.peak), so memory is counted for the
kernel that will really run. An op without an entry that applies runs its reference kernel:
the op's own ``kernel(xp, *arrays, **attrs)`` on the backend's array module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..ops.registry import get_op
from ..plan import Plan, Step

Shapes = Sequence[tuple[int, ...]]
#: (input shapes, attributes, itemsize of the first input) -> (bytes held across runs in the
#: backend's shared workspace, bytes of scratch allocated and freed while the step runs)
WorkspaceRule = Callable[[Shapes, Mapping[str, Any], int], tuple[int, int]]
#: (executor, step) -> the callable computing the step from its input arrays (and ``out=``)
KernelMaker = Callable[[Any, Step], Callable[..., Any]]


def _always(plan: Plan, step: Step) -> bool:
    return True


@dataclass(frozen=True)
class KernelEntry:
    """One way a backend runs an op.

    ``name``: what reports call it. ``make(executor, step)``: the kernel for one step, made
    when the executor binds the plan. ``applies(plan, step)``: whether this entry takes the
    step (its attributes, its buffers' dtypes, what is installed); it must depend on nothing
    but its arguments and the process's settings, since the peak-memory formula asks it
    without an executor. ``workspace``: the memory the kernel needs besides its result (None:
    none)."""

    name: str
    make: KernelMaker
    applies: Callable[[Plan, Step], bool] = _always
    workspace: WorkspaceRule | None = None


def reference_kernel(executor: Any, step: Step) -> Callable[..., Any]:
    """The op's own kernel, bound to the executor's array module and the step's attributes
    (random ops also to the executor's random source, collectives to its communicator)."""
    opdef = get_op(step.op)
    attrs = dict(step.attrs)
    if opdef.random:
        attrs["rng"] = executor.rng
    elif opdef.category == "collective":
        attrs["comm"] = executor.communicator
    return functools.partial(opdef.kernel, executor.xp, **attrs)


#: The reference kernels: what every op runs where a backend's table has nothing else for it.
REFERENCE = KernelEntry("xp", reference_kernel)


class KernelTable:
    """Entries per op, tried in order; the first that applies runs the step, else ``fallback``
    (the reference kernels)."""

    def __init__(self, entries: Mapping[str, Sequence[KernelEntry]] | None = None,
                 fallback: KernelEntry = REFERENCE) -> None:
        self._entries = {op: tuple(found) for op, found in (entries or {}).items()}
        self.fallback = fallback

    def entry(self, plan: Plan, step: Step) -> KernelEntry:
        """The entry that runs ``step`` of ``plan``."""
        for candidate in self._entries.get(step.op, ()):
            if candidate.applies(plan, step):
                return candidate
        return self.fallback

    def make(self, executor: Any, step: Step) -> Callable[..., Any]:
        """The kernel computing ``step`` on ``executor``."""
        return self.entry(executor.plan, step).make(executor, step)

    def workspace(self, plan: Plan, step: Step, shapes: Shapes) -> tuple[int, int]:
        """(bytes held across runs, bytes of scratch while it runs) of the kernel that runs
        ``step`` with inputs of ``shapes`` (concrete sizes)."""
        rule = self.entry(plan, step).workspace
        if rule is None:
            return 0, 0
        itemsize = np.dtype(plan.buffers[step.inputs[0]].dtype).itemsize if step.inputs else 0
        return rule(shapes, step.attrs, itemsize)

    def extended(self, entries: Mapping[str, Sequence[KernelEntry]]) -> KernelTable:
        """A new table whose ``entries`` are tried before this one's (a backend built on another)."""
        merged = {op: tuple(found) for op, found in self._entries.items()}
        for op, found in entries.items():
            merged[op] = tuple(found) + merged.get(op, ())
        return KernelTable(merged, self.fallback)

    def ops(self) -> list[str]:
        """The ops with entries of their own."""
        return sorted(self._entries)

    def entries(self, op: str) -> tuple[KernelEntry, ...]:
        return self._entries.get(op, ())
