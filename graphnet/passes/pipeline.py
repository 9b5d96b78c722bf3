"""The compile pipeline: an explicit list of passes, read top to bottom.

Each pass declares what it needs before it (``requires``) and what it establishes
(``provides``); ``check_pipeline`` refuses an order that breaks a requirement, so a pass
inserted later (a data-parallel all-reduce between autodiff and clipping) states its
place instead of relying on it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from .. import config
from ..errors import GraphError
from ..ir import Graph
from ..plan import Buffer, PassRecord, Plan, Step
from .clip_gradients import clip_gradients
from .data_parallel import data_parallel
from .constant_fold import constant_fold
from .cse import cse
from .dce import dce
from .fuse import explain as explain_fusion
from .fuse import fuse
from .autodiff import autodiff
from .decompose import decompose
from .fold_batch_norm import fold_batch_norm
from .fuse_batch_norm import fuse_batch_norm
from .fuse_cross_entropy import fuse_cross_entropy
from .fuse_updates import explain as explain_updates
from .fuse_updates import fuse_updates
from .flatten_state import flatten_state
from .lower import lower
from .plan_memory import plan_memory
from .fuse_attention import fuse_attention
from .merge_slice_grads import merge_slice_grads
from .loop_bodies import hoist_loop_sums, map_bodies, merge_scans, prune_loop_outputs, save_loop_residuals
from .optimizer_updates import OptimizerVariables, optimizer_updates
from .resolve_modes import resolve_modes
from .save_pool_argmax import save_pool_argmax
from .pool_before_bias import pool_before_bias
from .schedule import schedule
from .simplify import simplify
from .state_updates import state_updates
from .verify import verify

GraphPass = Callable[[Any], Any]

#: What a pass works on: "graph" passes map a Graph to a Graph, "lower" turns the scheduled
#: graph into a Plan, "plan" passes map a Plan to a Plan.
LEVELS = ("graph", "lower", "plan")


@dataclass(frozen=True)
class StepRule:
    """How the plan loader checks a step that a plan pass adds without a graph node (an
    all-reduce of gradients, a device copy): ``check(step, buffers)`` raises a GraphnetError
    for a step the pass could not have made; ``stands_for``: the input whose value the step's
    result stands for (later steps may read the result where their graph node reads that
    input: an all-reduced gradient where the update reads the gradient), None where the
    result stands for nothing the graph computes."""

    check: Callable[[Step, Mapping[str, Buffer]], None]
    stands_for: int | None = 0


#: op -> how the loader checks a node-less step of that op (copies, and the ops plan passes
#: declare in ``Pass.adds_steps``)
STEP_RULES: dict[str, StepRule] = {}


def register_step_rule(op: str, rule: StepRule) -> None:
    """Declare how plan files check node-less ``op`` steps (a plan pass declares its own)."""
    known = STEP_RULES.get(op)
    if known is not None and known != rule:
        raise GraphError(f"node-less {op!r} steps already have a different check")
    STEP_RULES[op] = rule


@dataclass(frozen=True)
class Pass:
    """One compile pass, with its contract.

    ``requires``: facts that must hold before it runs ("verified", "gradients", ...).
    ``provides``: facts it establishes. ``invalidates``: facts it breaks ("scheduled").
    ``optional``: it may be switched off with GRAPHNET_DISABLE_PASSES (a pure optimisation;
    ``optional_passes`` lists them for the flag, ``gn.debug.bisect_passes`` and the report).
    ``keeps_types``: it never changes the type of an output. ``level``: "graph", "lower" or
    "plan" (``LEVELS``). A plan pass's work is ``derived`` (not stored in plan files: the
    loader runs it again, as the memory plan) or stored; a stored plan pass that adds steps
    without a graph node names their ops in ``adds_steps`` with the rule the loader checks
    them by.
    """

    name: str
    fn: GraphPass
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    invalidates: tuple[str, ...] = ("scheduled",)
    optional: bool = False
    keeps_types: bool = True
    #: explain(graph) -> notes (plain data) on what the pass will decide for ``graph`` and why,
    #: kept in the compile report (fusion lists its groups and the nodes it left alone)
    explain: Callable[[Graph], list[dict]] | None = None
    level: str = "graph"
    derived: bool = False
    adds_steps: Mapping[str, StepRule] = field(default_factory=dict)
    #: a graph pass that also rewrites every loop body (scan) in the graph, bodies first
    bodies: bool = False

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise GraphError(f"pass {self.name!r}: level {self.level!r} is not one of {LEVELS}")
        if self.adds_steps and (self.level != "plan" or self.derived):
            raise GraphError(f"pass {self.name!r}: only a stored plan pass may add node-less steps")
        for op, rule in self.adds_steps.items():
            register_step_rule(op, rule)

    # a Pass unpacks as (name, fn), as the pipeline's entries did before passes declared contracts
    def __iter__(self):
        return iter((self.name, self.fn))

    def __str__(self) -> str:
        parts = [self.name]
        if self.level != "graph":
            parts.append(f"[{self.level}]")
        if self.requires:
            parts.append(f"needs {', '.join(self.requires)}")
        if self.provides:
            parts.append(f"gives {', '.join(self.provides)}")
        if self.optional:
            parts.append("optional")
        return "  ".join(parts)


def _copy_step_rule(step: Step, buffers: Mapping[str, Buffer]) -> None:
    src, dst = buffers[step.inputs[0]], buffers[step.outputs[0]]
    if len(step.inputs) != 1 or len(step.outputs) != 1 or step.attrs or \
            (src.shape, src.dtype) != (dst.shape, dst.dtype):
        raise GraphError("a copy reads one buffer and writes one of its type, without attributes")


# the lowering's copies of outputs that would alias state
register_step_rule("copy", StepRule(_copy_step_rule))


def default_pipeline(optimizer: Any = None, mode: Any = None, extra: Sequence[Pass] = (),
                     variables: OptimizerVariables | None = None, bucket_bytes: int | None = None) -> list[Pass]:
    """The compiler's table of contents (``print(*default_pipeline(opt), sep="\\n")`` shows it):
    graph passes, the lowering, then plan passes, run by one driver (``run_pipeline``).

    ``mode``: None resolves each module's train/eval switch to its mode now; "train" or
    "eval" sets every module's; a mapping ModeSwitch -> bool gives each switch its value (a
    plan compiled again resolves its modules as the first compile did). ``extra``: passes of
    the user's (or a later issue's: a data-parallel all-reduce) placed by their level: graph
    passes just before ``schedule``, plan passes just after the lowering. ``variables``: the
    optimizer variables to continue from (a training plan compiled again for a new update
    structure keeps its step counter, hyperparameters and optimizer state). ``bucket_bytes``:
    a data-parallel training plan, whose gradients are averaged over the processes in
    buckets of about this size (graphnet.passes.data_parallel).
    """
    passes = [
        Pass("verify", verify, provides=("verified",), invalidates=(), bodies=True),
        Pass("resolve_modes", functools.partial(resolve_modes, mode=mode), requires=("verified",),
             provides=("modes",)),
        Pass("fuse_batch_norm", fuse_batch_norm, requires=("modes",), optional=True),
        Pass("state_updates", state_updates, requires=("modes",), provides=("state_effects",)),
        Pass("fold_batch_norm", fold_batch_norm, requires=("state_effects",), optional=True),
        Pass("fuse_cross_entropy", fuse_cross_entropy, requires=("modes",), optional=True),
        Pass("decompose", decompose, requires=("state_effects",), provides=("primitive",), bodies=True),
        Pass("pool_before_bias", pool_before_bias, requires=("primitive",), optional=True),
        Pass("fuse_attention", fuse_attention, requires=("primitive",), optional=True),
    ]
    if optimizer is not None:
        passes += _training_passes(optimizer, variables, bucket_bytes)
    passes += [
        Pass("merge_scans", merge_scans, requires=("primitive",), optional=True),
        Pass("save_loop_residuals", save_loop_residuals, requires=("primitive",), optional=True),
        Pass("prune_loop_outputs", prune_loop_outputs, requires=("primitive",), optional=True),
        Pass("hoist_loop_sums", hoist_loop_sums, requires=("primitive",), optional=True),
        Pass("merge_slice_grads", merge_slice_grads, requires=("primitive",), optional=True, bodies=True),
        Pass("constant_fold", constant_fold, requires=("primitive",), optional=True, bodies=True),
        Pass("simplify", simplify, requires=("primitive",), optional=True, bodies=True),
        Pass("cse", cse, optional=True, bodies=True),
        Pass("dce", dce, bodies=True),
    ]
    if config.flags.fuse:  # GRAPHNET_FUSE=0 leaves fusion out (each backend decides how fused steps run)
        passes.append(Pass("fuse", fuse, requires=("primitive",), optional=True, explain=explain_fusion,
                           bodies=True))
        passes.append(Pass("fuse_updates", fuse_updates, requires=("primitive",), optional=True,
                           explain=explain_updates))
    passes += [p for p in extra if p.level == "graph"]
    passes += [
        Pass("schedule", schedule, requires=("primitive",), provides=("scheduled",), invalidates=()),
        Pass("lower", lower, requires=("scheduled",), provides=("plan",), invalidates=(), level="lower"),
    ]
    passes += [p for p in extra if p.level == "plan"]
    passes += plan_passes()
    check_pipeline(passes)
    return passes


def _training_passes(optimizer: Any, reuse: OptimizerVariables | None = None,
                     bucket_bytes: int | None = None) -> list[Pass]:
    """Gradients, their clipping, the optimizer's update rule, and what only training needs
    (``optimizer`` None: the passes as a listing, their functions not bound)."""
    if optimizer is None:
        return [Pass(name, _identity, optional=name == "save_pool_argmax")
                for name in ("autodiff", "clip_gradients", "optimizer_updates", "save_pool_argmax")]
    variables = OptimizerVariables.create(optimizer, reuse)
    chosen = (lambda var: optimizer.group_of(var) is not None) if optimizer.param_groups else None
    passes = [Pass("autodiff", functools.partial(autodiff, select=chosen), requires=("primitive",),
                   provides=("gradients",))]
    if bucket_bytes is not None:  # data-parallel: gradients averaged over the processes, first
        passes.append(Pass("data_parallel", functools.partial(data_parallel, bucket_bytes=bucket_bytes),
                           requires=("gradients",)))
    if optimizer.max_grad_norm is not None:
        passes.append(Pass("clip_gradients",
                           functools.partial(clip_gradients, max_norm=variables.tensors()["max_grad_norm"]),
                           requires=("gradients",), provides=("clipped",)))
    passes.append(Pass("optimizer_updates",
                       functools.partial(optimizer_updates, optimizer=optimizer, variables=variables),
                       requires=("gradients",), provides=("updates",)))
    passes.append(Pass("save_pool_argmax", save_pool_argmax, requires=("gradients",), optional=True))
    return passes


def plan_passes() -> list[Pass]:
    """The plan passes whose work is derived, never stored: run after the lowering at compile
    and again by the plan loader on the checked steps of a file."""
    return [
        Pass("flatten_state", flatten_state, requires=("plan",), invalidates=(), optional=True, level="plan",
             derived=True),
        Pass("plan_memory", plan_memory, requires=("plan",), provides=("memory",), invalidates=(), optional=True,
             level="plan", derived=True),
    ]


def optional_passes() -> tuple[str, ...]:
    """Every pass that ``GRAPHNET_DISABLE_PASSES`` may switch off, in the order a training
    pipeline runs them (the one list the flag, ``gn.debug.bisect_passes`` and the compile
    report read)."""
    with config.options(fuse=True):
        passes = default_pipeline(None)
    at = next(i for i, p in enumerate(passes) if p.name == "merge_scans")  # where training's passes go
    passes[at:at] = _training_passes(None)
    return tuple(p.name for p in passes if p.optional)


def _identity(value: Any) -> Any:
    return value


def check_pipeline(passes: list[Pass]) -> None:
    """Raise GraphError if a pass runs before what it requires, a graph pass follows the
    lowering or a plan pass precedes it, or the graph is not scheduled when it is lowered."""
    facts: set[str] = set()
    lowered = False
    for p in passes:
        missing = [r for r in p.requires if r not in facts]
        if missing:
            raise GraphError(f"pass {p.name!r} needs {missing}, which no earlier pass provides; "
                             f"pipeline: {[q.name for q in passes]}")
        if (p.level == "graph" and lowered) or (p.level == "plan" and not lowered) or (p.level == "lower" and lowered):
            raise GraphError(f"{p.level} pass {p.name!r} is on the wrong side of the lowering; "
                             f"pipeline: {[q.name for q in passes]}")
        if p.level == "lower" and "scheduled" not in facts:
            raise GraphError("the graph must be scheduled ('schedule') before it is lowered")
        lowered = lowered or p.level == "lower"
        facts -= set(p.invalidates)
        facts |= set(p.provides)
    if not lowered and "scheduled" not in facts:
        raise GraphError("the pipeline must end with 'schedule' (the lowering follows its order)")


def run_pipeline(value: Any, passes: list[Pass]) -> tuple[Any, list[PassRecord]]:
    """Run ``passes`` in order on a Graph (or a Plan, for plan passes only); record node (or
    step) counts and times; print or verify as the debug flags ask. Returns what the last
    pass made (a Plan once the list holds the lowering) and the records."""
    records = []
    for p in passes:
        if p.optional and p.name in config.flags.disabled_passes:
            continue
        before = _size(value)
        graph_types = [o.type for o in value.outputs] if isinstance(value, Graph) else None
        start = time.perf_counter()
        notes = tuple(p.explain(value)) if p.explain is not None else ()
        if p.bodies and isinstance(value, Graph):
            value = map_bodies(value, p.fn)
        value = p.fn(value)
        records.append(PassRecord(p.name, before, _size(value), time.perf_counter() - start, notes))
        if config.flags.verify and isinstance(value, Graph) and p.name != "verify":
            verify(value)
            if p.keeps_types and [o.type for o in value.outputs] != graph_types:
                raise GraphError(f"pass {p.name!r} promises to keep the outputs' types but changed them")
        if config.flags.debug >= 2:
            print(f"--- after {p.name} ---\n{value}")
    if config.flags.debug >= 1:
        print("passes:\n  " + "\n  ".join(str(r) for r in records))
    return value, records


def _size(value: Any) -> int:
    """Nodes of a graph, steps of a plan."""
    return len(value.nodes) if isinstance(value, Graph) else len(value.steps)


def run_to_plan(source: Graph, passes: list[Pass]) -> tuple[Graph, Plan, list[PassRecord]]:
    """Run a whole pipeline (graph passes, the lowering, plan passes) on ``source``: the
    compiled graph (as the lowering saw it), the plan, and every pass's record."""
    at = next(i for i, p in enumerate(passes) if p.level == "lower")
    graph, records = run_pipeline(source, passes[:at])
    plan, more = run_pipeline(graph, passes[at:])
    return graph, plan, records + more


def finish_plan(plan: Plan, records: Sequence[PassRecord], *, mode: str | None, dims: Any,
                optimizer: Mapping[str, Any] | None = None, derive: bool = False) -> Plan:
    """The one way a Plan is completed, at compile and at load: with ``derive`` (a plan read
    from a file) the derived plan passes run on it first through the same driver; then it
    gets the passes' records, how its modes were resolved, what its feeds' dims must satisfy
    and its optimizer's description. Nothing changes the Plan afterwards."""
    if derive:
        plan, _ = run_pipeline(plan, plan_passes())
    return replace(plan, passes=tuple(records), mode=mode, dims=dims,
                   optimizer=None if optimizer is None else dict(optimizer))
