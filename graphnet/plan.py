"""The compiled plan: plain data, an ordered list of steps over named buffers.

A ``Plan`` holds no code: each step names a registered op, the buffers it reads, the
buffers it writes and its attributes. Executors interpret it.

Buffer names live in their own namespace, one prefix per kind, so no user name can
collide with another buffer: feeds ``in:x``, variables ``var:0.weight``, constants
``const:3``, computed values ``%12``. Pure steps come first; from ``first_effect`` on,
the steps are the effects (``assign``), in the graph's effect order, and nothing after
them computes a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from .dims import DimConstraints
from .ir import Shape

BUFFER_KINDS = ("feed", "variable", "constant", "temp")
PREFIXES = {"feed": "in:", "variable": "var:", "constant": "const:", "temp": "%"}

#: The text printer, registered by graphnet.printing (the plan does not import the layer above it).
DISPLAY: dict[str, Callable[[Any], str]] = {}


@dataclass(frozen=True)
class VariableSpec:
    """What a plan knows of a variable it reads or writes: plain facts, never its value. The
    arrays (and the locks runs take) are the Variables', which the compiled plan binds
    (``bind_variables``); ``id`` is the Variable's number in this process."""

    name: str
    kind: str
    key: str | None
    trainable: bool
    id: int

    @classmethod
    def of(cls, var: Any) -> VariableSpec:
        return cls(var.name or f"var{var.id}", var.kind, var.key, bool(var.trainable), var.id)


@dataclass(frozen=True)
class Buffer:
    """A named value slot: ``kind`` is feed, variable, constant or temp."""

    name: str
    shape: Shape
    dtype: str
    kind: str


@dataclass(frozen=True)
class Step:
    """Run ``op`` on the ``inputs`` buffers with ``attrs``, writing the ``outputs`` buffers.

    ``node`` is the index of the graph node the step computes (-1 for steps the lowering
    adds itself: copies of outputs that would alias a variable). Effect steps write the
    variable named by their first input and have no outputs.
    """

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    role: str = "forward"
    location: str = ""
    scope: str = ""
    node: int = -1

    @property
    def output(self) -> str:
        """The one buffer a single-output step writes ('' for an effect)."""
        return self.outputs[0] if self.outputs else ""


def view_roots(steps: list[Step], buffers: Iterable[str],
               views_of: Callable[[str], tuple[tuple[int, int], ...]]) -> dict[str, frozenset[str]]:
    """For each buffer, the buffers whose memory it may share: itself, and through every step
    whose op may return a view (``views_of(op)``: (result, input) pairs), its input's."""
    roots = {name: frozenset({name}) for name in buffers}
    for step in steps:
        for out_index, in_index in views_of(step.op):
            if out_index < len(step.outputs):
                out = step.outputs[out_index]
                roots[out] = roots[out] | roots[step.inputs[in_index]]
    return roots


def last_reads(plan: "Plan", op_of: Callable[[str], Any]) -> tuple[dict[str, int], dict[str, frozenset[str]]]:
    """For each buffer, the last step reading its values, or any view's; and each buffer's
    roots (the buffers whose memory it may share). ``op_of(name)`` gives an op's ``views``
    and ``shape_only``: an input an op reads only the shape of is not a read (its block
    keeps the shape and dtype, whatever it holds by then)."""
    roots = view_roots(plan.steps, plan.buffers, lambda op: op_of(op).views)
    last: dict[str, int] = {}
    for i, step in enumerate(plan.steps):
        for name in step.outputs:
            last.setdefault(name, i)  # a value nothing reads dies where it is made
        shape_only = op_of(step.op).shape_only
        for position, name in enumerate(step.inputs):
            if position in shape_only:
                continue
            for root in roots[name] | {name}:
                last[root] = i
    return last, roots


@dataclass(frozen=True)
class MemoryPlan:
    """Where computed values are written (graphnet.passes.plan_memory): ``blocks`` lists each
    storage block's (shape, dtype), dims as in the buffers (an int, a named dim, or None for
    the feeds' unknown dim); ``storage`` maps a planned temp buffer to its block; ``inplace``
    maps a step index to the input position whose block its result overwrites."""

    blocks: tuple[tuple[tuple, str], ...]
    storage: dict[str, int]
    inplace: dict[int, int]
    #: values written straight into a slice of a flat block (a gradient into the flat gradient
    #: buffer its update reads): buffer -> (block, element offset)
    placed: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: (flat group, input position) -> the flat block gathering that position's per-parameter values
    flat: dict[tuple[int, int], int] = field(default_factory=dict)
    #: per block, the first step writing it and the last reading it: blocks whose spans do not
    #: meet may share memory (the executor packs them into one arena, graphnet.executors.arena)
    spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class FlatGroup:
    """``fused_assign`` effects that run as one kernel over flat buffers (graphnet.passes.flatten_state).

    Every step in ``steps`` computes the same expressions of its inputs and reads the same
    shared inputs (scalar hyperparameters); ``inputs[k]`` lists member k's input buffers in
    the order the first member's body reads them (its own body may number them otherwise),
    and positions in ``flat`` hold one array per parameter. The
    variables those positions write are stored back to back in one flat array per position
    (each variable a view), the other per-parameter values (gradients) are gathered into, or
    written straight into, one flat block; the kernel runs once, at the first step, over
    ``sum(sizes)`` elements. ``offsets[k]``/``sizes[k]``: member k's slice of the flat arrays.
    """

    steps: tuple[int, ...]
    inputs: tuple[tuple[str, ...], ...]
    flat: tuple[int, ...]
    written: int  # the leading flat positions that are variables written in place
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    dtype: str

    @property
    def total(self) -> int:
        return self.offsets[-1] + self.sizes[-1]


@dataclass(frozen=True)
class PassRecord:
    """What one compile pass did: its name and the node counts before and after."""

    name: str
    nodes_before: int
    nodes_after: int
    seconds: float
    notes: tuple = ()  # the pass's own account of its decisions (plain data; see Pass.explain)

    def __str__(self) -> str:
        delta = self.nodes_after - self.nodes_before
        return f"{self.name:<18} {self.nodes_before:>5} -> {self.nodes_after:<5} ({delta:+d})  {self.seconds * 1e3:.1f} ms"


@dataclass(frozen=True)
class Plan:
    """Ordered steps over named buffers, plus the values those buffers start with.

    ``feeds`` and ``outputs`` map the user's names to buffers; ``variables`` maps variable
    buffers to what the plan knows of the variables holding their values (``VariableSpec``:
    names and kinds; the arrays are bound by the compiled plan, ``bind_variables``). ``release[i]`` lists the temp buffers
    whose last reader is step ``i``: an executor may free them after it, which bounds peak
    memory. ``mode`` says how the modules' train/eval switches were resolved. ``optimizer``
    describes a training plan's optimizer (name, hyperparameters, the structure its update
    was compiled for). A Plan is made by the pipeline's passes, each returning a new one,
    and completed once (``passes.finish_plan``); nothing changes it afterwards.
    """

    buffers: dict[str, Buffer]
    steps: list[Step]
    feeds: dict[str, str]
    outputs: dict[str, str]
    constants: dict[str, np.ndarray]
    variables: dict[str, VariableSpec]
    release: list[tuple[str, ...]]
    first_effect: int = -1
    optimizer: dict[str, Any] | None = None
    mode: str | None = None  # "train", "eval" or "mixed" for plans with mode-dependent ops
    dims: DimConstraints | None = None  # what the feeds' unknown dims must satisfy
    passes: tuple[PassRecord, ...] = ()
    memory: MemoryPlan | None = None  # None: every step's result is a fresh array
    flat: tuple[FlatGroup, ...] = ()  # effects run as one kernel over flat state

    def __post_init__(self) -> None:
        if self.first_effect < 0:
            object.__setattr__(self, "first_effect", len(self.steps))

    @property
    def trainable(self) -> bool:
        return any((s.op == "assign" and s.attrs.get("kind") == "param_update")
                   or (s.op == "fused_assign" and "param_update" in s.attrs["kinds"]) for s in self.steps)

    def state_writes(self) -> list[tuple[str, str]]:
        """(variable buffer, effect kind) for every variable the effects write, in order
        (an ``assign`` writes one; a ``fused_assign`` one per result)."""
        writes = []
        for step in self.effects:
            if step.op == "fused_assign":
                writes += list(zip(step.inputs, step.attrs["kinds"]))
            else:
                writes.append((step.inputs[0], step.attrs.get("kind", "")))
        return writes

    @property
    def effects(self) -> list[Step]:
        return self.steps[self.first_effect:]

    def variables_of_kind(self, kind: str) -> dict[str, VariableSpec]:
        """Variable buffers of one kind (parameter, buffer, optimizer_state, hyper, step)."""
        return {name: var for name, var in self.variables.items() if var.kind == kind}

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.steps:
            counts[s.op] = counts.get(s.op, 0) + 1
        return dict(sorted(counts.items()))

    def __str__(self) -> str:
        text = DISPLAY.get("text")
        return text(self) if text is not None else repr(self)

    def __repr__(self) -> str:
        return f"<Plan {len(self.steps)} steps, feeds {sorted(self.feeds)}, outputs {list(self.outputs)}>"


def bind_variables(plan: Plan, graph: Any) -> dict[str, Any]:
    """The Variables holding the values of ``plan``'s variable buffers, found in ``graph`` (the
    graph the plan was lowered from, or one reading the same Variables)."""
    by_id = {node.attrs["var"].id: node.attrs["var"] for node in graph.nodes if node.op == "variable"}
    missing = [name for name, spec in plan.variables.items() if spec.id not in by_id]
    if missing:
        raise KeyError(f"the graph reads no Variable for {missing}")
    return {name: by_id[spec.id] for name, spec in plan.variables.items()}
