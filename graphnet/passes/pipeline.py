"""The compile pipeline: an explicit list of passes, read top to bottom.

Each pass declares what it needs before it (``requires``) and what it establishes
(``provides``); ``check_pipeline`` refuses an order that breaks a requirement, so a pass
inserted later (a data-parallel all-reduce between autodiff and clipping) states its
place instead of relying on it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import config
from ..errors import GraphError
from ..ir import Graph
from ..plan import PassRecord
from .clip_gradients import clip_gradients
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
from .optimizer_updates import OptimizerVariables, optimizer_updates
from .resolve_modes import resolve_modes
from .save_pool_argmax import save_pool_argmax
from .pool_before_bias import pool_before_bias
from .schedule import schedule
from .simplify import simplify
from .state_updates import state_updates
from .verify import verify

GraphPass = Callable[[Graph], Graph]


@dataclass(frozen=True)
class Pass:
    """One compile pass: a function from graph to graph, with its contract.

    ``requires``: facts that must hold before it runs ("verified", "gradients", ...).
    ``provides``: facts it establishes. ``invalidates``: facts it breaks ("scheduled").
    ``optional``: it may be switched off with GRAPHNET_DISABLE_PASSES (a pure optimisation).
    ``keeps_types``: it never changes the type of an output.
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

    # a Pass unpacks as (name, fn), as the pipeline's entries did before passes declared contracts
    def __iter__(self):
        return iter((self.name, self.fn))

    def __str__(self) -> str:
        parts = [self.name]
        if self.requires:
            parts.append(f"needs {', '.join(self.requires)}")
        if self.provides:
            parts.append(f"gives {', '.join(self.provides)}")
        if self.optional:
            parts.append("optional")
        return "  ".join(parts)


#: Passes that may be switched off with GRAPHNET_DISABLE_PASSES (the rest are needed).
OPTIONAL = frozenset({"save_pool_argmax", "fuse_batch_norm", "fold_batch_norm", "fuse_cross_entropy", "cse", "constant_fold", "simplify", "fuse", "fuse_updates"})


def default_pipeline(optimizer: Any = None, mode: str | None = None) -> list[Pass]:
    """The compiler's table of contents (``print(*default_pipeline(opt), sep="\\n")`` shows it).

    ``mode``: None resolves each module's train/eval switch to its mode now; "train" or
    "eval" sets every module's.
    """
    passes = [
        Pass("verify", verify, provides=("verified",), invalidates=()),
        Pass("resolve_modes", functools.partial(resolve_modes, mode=mode), requires=("verified",),
             provides=("modes",)),
        Pass("fuse_batch_norm", fuse_batch_norm, requires=("modes",), optional=True),
        Pass("state_updates", state_updates, requires=("modes",), provides=("state_effects",)),
        Pass("fold_batch_norm", fold_batch_norm, requires=("state_effects",), optional=True),
        Pass("fuse_cross_entropy", fuse_cross_entropy, requires=("modes",), optional=True),
        Pass("decompose", decompose, requires=("state_effects",), provides=("primitive",)),
        Pass("pool_before_bias", pool_before_bias, requires=("primitive",), optional=True),
    ]
    if optimizer is not None:
        variables = OptimizerVariables.create(optimizer)
        chosen = (lambda var: optimizer.group_of(var) is not None) if optimizer.param_groups else None
        passes.append(Pass("autodiff", functools.partial(autodiff, select=chosen), requires=("primitive",),
                           provides=("gradients",)))
        if optimizer.max_grad_norm is not None:
            passes.append(Pass("clip_gradients",
                               functools.partial(clip_gradients, max_norm=variables.tensors()["max_grad_norm"]),
                               requires=("gradients",), provides=("clipped",)))
        passes.append(Pass("optimizer_updates",
                           functools.partial(optimizer_updates, optimizer=optimizer, variables=variables),
                           requires=("gradients",), provides=("updates",)))
        passes.append(Pass("save_pool_argmax", save_pool_argmax, requires=("gradients",), optional=True))
    passes += [
        Pass("constant_fold", constant_fold, requires=("primitive",), optional=True),
        Pass("simplify", simplify, requires=("primitive",), optional=True),
        Pass("cse", cse, optional=True),
        Pass("dce", dce),
    ]
    if config.flags.fuse:  # on by default where fused groups compile to generated kernels
        passes.append(Pass("fuse", fuse, requires=("primitive",), optional=True, explain=explain_fusion))
        passes.append(Pass("fuse_updates", fuse_updates, requires=("primitive",), optional=True,
                           explain=explain_updates))
    passes += [
        Pass("schedule", schedule, requires=("primitive",), provides=("scheduled",), invalidates=()),
    ]
    check_pipeline(passes)
    return passes


def check_pipeline(passes: list[Pass]) -> None:
    """Raise GraphError if a pass runs before what it requires, or the list ends unscheduled."""
    facts: set[str] = set()
    for p in passes:
        missing = [r for r in p.requires if r not in facts]
        if missing:
            raise GraphError(f"pass {p.name!r} needs {missing}, which no earlier pass provides; "
                             f"pipeline: {[q.name for q in passes]}")
        facts -= set(p.invalidates)
        facts |= set(p.provides)
    if "scheduled" not in facts:
        raise GraphError("the pipeline must end with 'schedule' (the lowering follows its order)")


def run_pipeline(graph: Graph, passes: list[Pass]) -> tuple[Graph, list[PassRecord]]:
    """Run ``passes`` in order; record node counts; print or verify as the debug flags ask."""
    records = []
    for p in passes:
        if p.optional and p.name in config.flags.disabled_passes:
            continue
        before = len(graph.nodes)
        types = [o.type for o in graph.outputs]
        start = time.perf_counter()
        notes = tuple(p.explain(graph)) if p.explain is not None else ()
        graph = p.fn(graph)
        records.append(PassRecord(p.name, before, len(graph.nodes), time.perf_counter() - start, notes))
        if config.flags.verify and p.name != "verify":
            verify(graph)
            if p.keeps_types and [o.type for o in graph.outputs] != types:
                raise GraphError(f"pass {p.name!r} promises to keep the outputs' types but changed them")
        if config.flags.debug >= 2:
            print(f"--- after {p.name} ---\n{graph}")
    if config.flags.debug >= 1:
        print("passes:\n  " + "\n  ".join(str(r) for r in records))
    return graph, records
