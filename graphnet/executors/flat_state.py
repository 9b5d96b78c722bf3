"""Running a flat group (graphnet.passes.flatten_state): one update kernel over all parameters."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .. import dtypes
from ..plan import FlatGroup


class FlatUpdate:
    """The kernel of a ``FlatGroup``, called with every member's inputs in turn (``group.inputs``).

    It owns one flat array per written position (parameters, each optimizer slot); the
    members' variables are views of them from construction on (``adopt``). Per-parameter
    inputs it does not own (gradients) are gathered into one flat array: the block the
    memory plan placed them in (``planned``; a value its step already wrote into its slice is
    not copied) or, in an unplanned run, a fresh one.
    """

    def __init__(self, executor: Any, group: FlatGroup, kernel: Callable[..., Any]) -> None:
        plan = executor.plan
        self.xp = executor.xp
        self.group = group
        self.kernel = kernel
        self.width = len(group.inputs[0])
        self.dtype = dtypes.DTYPES[group.dtype]
        self.shapes = [tuple(plan.buffers[member[0]].shape) for member in group.inputs]
        self.gathered = group.flat[group.written:]
        self.arrays: dict[int, Any] = {}
        self.members: list[tuple[Any, Any]] = []  # (variable, its view of a flat array)
        for position in group.flat[:group.written]:
            flat = self.xp.empty(group.total, self.dtype)
            self.arrays[position] = flat
            for member, view in zip(group.inputs, self.slices(flat)):
                var = executor.variables[member[position]]
                executor.adopt_variable(var, view)
                self.members.append((var, view))

    def refresh(self, executor: Any) -> None:
        """Adopt again a variable whose array was replaced since (``var.data = new``, another plan
        that flattened it too), if it still has its shape and dtype (else the run refuses it)."""
        for var, view in self.members:
            executor.readopt_variable(var, view)

    def slices(self, flat: Any) -> list[Any]:
        """Each member's slice of ``flat``, shaped like its parameter."""
        return [flat[offset:offset + size].reshape(shape)
                for offset, size, shape in zip(self.group.offsets, self.group.sizes, self.shapes)]

    def planned(self, blocks: dict[int, Any]) -> tuple[Callable[..., None], dict[int, list[Any]]]:
        """This update gathering into the memory plan's ``blocks`` (position -> flat block), and
        each position's member slices: a step given its slice as ``out=`` writes its value in
        place, and the gather then copies nothing for it."""
        gathers = {position: (block, self.slices(block)) for position, block in blocks.items()}

        def run(*inputs: Any) -> None:
            self._run(inputs, gathers)
        return run, {position: views for position, (_, views) in gathers.items()}

    def __call__(self, *inputs: Any) -> None:
        """Unplanned: the gradients gathered into fresh flat arrays."""
        gathers = {}
        for position in self.gathered:
            block = self.xp.empty(self.group.total, self.dtype)
            gathers[position] = (block, self.slices(block))
        self._run(inputs, gathers)

    def _run(self, inputs: Sequence[Any], gathers: dict[int, tuple[Any, list[Any]]]) -> None:
        args = list(inputs[:self.width])  # the shared inputs, as member 0 reads them
        for position, flat in self.arrays.items():
            args[position] = flat
        for position, (block, views) in gathers.items():
            for k, view in enumerate(views):
                value = inputs[k * self.width + position]
                if value is not view:  # not already written into its slice by its own step
                    self.xp.copyto(view, value)
            args[position] = block
        self.kernel(*args)
