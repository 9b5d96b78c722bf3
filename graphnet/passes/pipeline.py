"""The compile pipeline: an explicit list of passes, read top to bottom."""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

from .. import config
from ..ir import Graph
from ..plan import PassRecord
from .constant_fold import constant_fold
from .cse import cse
from .dce import dce
from .schedule import schedule
from .simplify import simplify
from .training import add_training_updates
from .verify import verify

GraphPass = Callable[[Graph], Graph]

#: Passes that may be switched off with GRAPHNET_DISABLE_PASSES (the rest are needed).
OPTIONAL = frozenset({"cse", "constant_fold", "simplify"})


def default_pipeline(optimizer: Any = None) -> list[tuple[str, GraphPass]]:
    """The compiler's table of contents."""
    passes: list[tuple[str, GraphPass]] = [("verify", verify)]
    if optimizer is not None:
        passes.append(("autodiff+updates", functools.partial(add_training_updates, optimizer=optimizer)))
    passes += [
        ("constant_fold", constant_fold),
        ("simplify", simplify),
        ("cse", cse),
        ("dce", dce),
        ("schedule", schedule),
    ]
    return passes


def run_pipeline(graph: Graph, passes: list[tuple[str, GraphPass]]) -> tuple[Graph, list[PassRecord]]:
    """Run ``passes`` in order; record node counts; print or verify as the debug flags ask."""
    records = []
    for name, fn in passes:
        if name in OPTIONAL and name in config.flags.disabled_passes:
            continue
        before = len(graph.nodes)
        start = time.perf_counter()
        graph = fn(graph)
        records.append(PassRecord(name, before, len(graph.nodes), time.perf_counter() - start))
        if config.flags.verify and name != "verify":
            verify(graph)
        if config.flags.debug >= 2:
            print(f"--- after {name} ---\n{graph}")
    if config.flags.debug >= 1:
        print("passes:\n  " + "\n  ".join(str(r) for r in records))
    return graph, records
