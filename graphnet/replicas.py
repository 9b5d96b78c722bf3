"""Data-parallel replicas: every process compiled the same plan, and all start from rank 0's
state (parameters, optimizer state, running statistics, step counters).

Called by ``gn.compile(..., data_parallel=True)`` right after compiling, so every process
must compile its data-parallel plans in the same order (as each process runs the same
script, they do).
"""

from __future__ import annotations

import hashlib
from typing import Any

from .errors import DistributedError


def fingerprint(plan: Any) -> str:
    """A digest of what a plan computes: its text (steps, shapes, dtypes, attributes) and its
    variables' shapes and dtypes."""
    text = str(plan) + "\n" + "\n".join(f"{name} {spec}" for name, spec in sorted(plan.buffers.items())
                                        if name in plan.variables)
    return hashlib.sha256(text.encode()).hexdigest()


def _summary(plan: Any) -> list[str]:
    return [f"{step.op} -> {[str(plan.buffers[o].shape) for o in step.outputs]}" for step in plan.steps]


def check_same_plan(plan: Any, comm: Any) -> None:
    """DistributedError naming the first difference unless every process compiled ``plan`` alike."""
    digests = comm.allgather_object(fingerprint(plan))
    if len(set(digests)) == 1:
        return
    summaries = comm.allgather_object(_summary(plan))
    odd = next(r for r, d in enumerate(digests) if d != digests[0])
    first, other = summaries[0], summaries[odd]
    at = next((i for i, (a, b) in enumerate(zip(first, other)) if a != b), min(len(first), len(other)))
    show = (lambda steps: steps[at] if at < len(steps) else "(no step)")
    raise DistributedError(
        f"rank {odd} compiled a different data-parallel plan from rank 0's ({len(other)} steps against "
        f"{len(first)}); the first difference is step {at}: rank 0 has {show(first)}, rank {odd} has {show(other)}. "
        f"Every process must build the same model and compile it the same way")


def start_from_rank0(compiled: Any, comm: Any) -> None:
    """Overwrite every variable of ``compiled`` with rank 0's value."""
    for name in sorted(compiled.plan.variables):
        var = compiled.variables[name]
        comm.broadcast(var.data, 0, f"rank 0's value of {var.name or name}")


def synchronize(compiled: Any) -> None:
    """Check the plan against the other processes' and start from rank 0's state."""
    comm = compiled.executor.communicator
    if comm.size == 1:
        return
    check_same_plan(compiled.plan, comm)
    start_from_rank0(compiled, comm)


def own_random_stream(compiled: Any) -> None:
    """A loaded plan holds the saving process's random state: every process but rank 0 jumps its
    generator ahead by its rank (NumPy's ``jumped``: streams that never meet), so dropout
    masks differ across the processes as they did before the save."""
    rank = compiled.executor.communicator.rank
    generator = getattr(compiled.executor.rng, "bit_generator", None)
    if rank and hasattr(generator, "jumped"):  # in place: the random kernels hold this generator
        compiled.executor.set_rng_state(generator.jumped(rank).state)


__all__ = ["check_same_plan", "fingerprint", "own_random_stream", "start_from_rank0", "synchronize"]
