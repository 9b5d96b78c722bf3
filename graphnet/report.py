"""The compile report: what each pass did and what the fused groups became.

``plan.report`` (a CompiledPlan's) is a CompileReport: per pass, node counts and time;
each fusion group with its members and their source lines; each elementwise op left
alone and why; kernel (step) counts with and without fusion; and how the executor runs
the groups (generated kernels compiled, loaded from the disk cache, or the NumPy
fallback, and the seconds that took). ``print(plan.report)`` shows it as text,
``plan.report.as_dict()`` as plain data (``json.dumps`` ready); ``GRAPHNET_DEBUG=1``
prints it at compile time and ``graphnet inspect --report PLAN`` shows a saved plan's.
"""

from __future__ import annotations

import numpy as np

import json
from dataclasses import dataclass, field
from typing import Any, Iterator

from .ops.control import Body
from .plan import PassRecord, Plan


@dataclass
class CompileReport:
    """Iterating over a report gives its PassRecords, in the order the passes ran."""

    passes: list[PassRecord]
    kernels: int  # steps of the plan: each one kernel call per run
    kernels_unfused: int  # steps it would have without fuse and fuse_updates (each member counted)
    codegen: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)  # the memory plan and the peak-bytes formula
    #: each time the plan's update was compiled again at a run ({"at_step", "changed", "reused",
    #: "updates_compiled"}): the optimizer's structure or the set of trained parameters changed
    recompiles: list[dict[str, Any]] = field(default_factory=list)
    #: loops and branches: {"step", "op", "bodies": {attribute: kernels per run of that body}}
    loops: list[dict[str, Any]] = field(default_factory=list)
    #: a data-parallel plan's gradient buckets: {"start", "wait" (step indices), "what", "bytes"}
    collectives: list[dict[str, Any]] = field(default_factory=list)

    def __iter__(self) -> Iterator[PassRecord]:
        return iter(self.passes)

    def __len__(self) -> int:
        return len(self.passes)

    def __getitem__(self, index: int) -> PassRecord:
        return self.passes[index]

    @property
    def groups(self) -> list[dict[str, Any]]:
        """The fusion groups: {"group": result name, "members": [[op, "file:line"], ...]}."""
        return [note for r in self.passes for note in r.notes if "group" in note]

    @property
    def not_fused(self) -> list[dict[str, Any]]:
        """Elementwise ops left as steps of their own: {"not_fused": op, "at": "file:line", "why": ...}."""
        return [note for r in self.passes for note in r.notes if "not_fused" in note]

    def as_dict(self) -> dict[str, Any]:
        return {"passes": [{"name": r.name, "nodes_before": r.nodes_before, "nodes_after": r.nodes_after,
                            "seconds": round(r.seconds, 6)} for r in self.passes],
                "kernels": self.kernels, "kernels_unfused": self.kernels_unfused,
                "groups": self.groups, "not_fused": self.not_fused, "codegen": self.codegen, "memory": self.memory,
                "recompiles": self.recompiles, "loops": self.loops, "collectives": self.collectives}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.as_dict(), **kwargs)

    def __str__(self) -> str:
        lines = ["passes:"] + [f"  {r}" for r in self.passes]
        lines.append(f"kernels per run: {self.kernels} ({self.kernels_unfused} without fusion)")
        groups = self.groups
        if groups:
            lines.append(f"fused groups ({len(groups)}):")
            for g in groups:
                ops = " -> ".join(op for op, _ in g["members"])
                where = sorted({at for _, at in g["members"]})
                lines.append(f"  {g['group']}: {ops}  [{', '.join(where)}]")
        alone = self.not_fused
        if alone:
            lines.append(f"not fused ({len(alone)}):")
            for n in alone:
                lines.append(f"  {n['not_fused']} at {n['at']}: {n['why']}")
        if self.memory:
            m = self.memory
            lines.append(f"memory plan: {m['planned_values']} values in {m['blocks']} storage blocks "
                         f"({m['in_place']} written in place); peak {m['peak_bytes']:,} + "
                         f"{m['peak_bytes_per_batch_item']:,} * batch bytes")
        if self.codegen:
            lines.append("kernels generated: " + ", ".join(f"{k}={v}" for k, v in self.codegen.items()))
        for loop in self.loops:
            bodies = ", ".join(f"{k} {n} kernels" for k, n in loop["bodies"].items())
            lines.append(f"{loop['op']} at step {loop['step']}: {bodies} (per iteration)")
        if self.collectives:
            total = sum(c["bytes"] for c in self.collectives)
            lines.append(f"data-parallel allreduces ({len(self.collectives)} gradient buckets, {total:,} bytes "
                         f"per step):")
            for c in self.collectives:
                lines.append(f"  allreduce_start at step {c['start']}, allreduce_wait at step {c['wait']}: "
                             f"{c['what']}, {c['bytes']:,} bytes")
        for r in self.recompiles:
            how = "an update compiled before, reused" if r["reused"] else "compiled again"
            lines.append(f"update {how} at step {r['at_step']} ({'; '.join(r['changed'])}); "
                         f"state, step counts and random state kept")
        return "\n".join(lines)


def build_report(plan: Plan, codegen: dict[str, Any], peak: tuple[int, int] | None = None) -> CompileReport:
    """The report of ``plan`` (its pass records) run by an executor that says ``codegen``;
    ``peak``: the peak-bytes formula (a, b) of a + b * batch."""
    merged = sum(r.nodes_before - r.nodes_after for r in plan.passes if r.name in ("fuse", "fuse_updates"))
    memory: dict[str, Any] = {}
    if plan.memory is not None and peak is not None:
        memory = {"planned_values": len(plan.memory.storage), "blocks": len(plan.memory.blocks),
                  "in_place": len(plan.memory.inplace), "peak_bytes": peak[0], "peak_bytes_per_batch_item": peak[1]}
    loops = [{"step": i, "op": step.op, "bodies": {k: _kernels(v) for k, v in step.attrs.items() if isinstance(v, Body)}}
             for i, step in enumerate(plan.steps) if any(isinstance(v, Body) for v in step.attrs.values())]
    waits = {step.attrs["what"]: i for i, step in enumerate(plan.steps) if step.op == "allreduce_wait"}
    collectives = [{"start": i, "wait": waits.get(step.attrs["what"]), "what": step.attrs["what"],
                    "bytes": _bytes(plan, step.inputs[0])}
                   for i, step in enumerate(plan.steps) if step.op == "allreduce_start"]
    return CompileReport(list(plan.passes), len(plan.steps), len(plan.steps) + merged, dict(codegen), memory,
                         loops=loops, collectives=collectives)


def _bytes(plan: Plan, name: str) -> int:
    buffer = plan.buffers[name]
    return int(np.prod([d if isinstance(d, int) else 0 for d in buffer.shape])) * np.dtype(buffer.dtype).itemsize


def _kernels(body: Body) -> int:
    """The kernel calls one run of ``body`` makes (its ops, leaves and result picks aside)."""
    return sum(1 for n in body.graph.nodes if n.op not in ("placeholder", "constant", "tuple_get"))
