"""Memory planning: which storage block each computed value is written to, decided once.

Runs on the lowered, scheduled plan. A value gets a block when its step's kernel can write
into a given array (``accepts_out``), it has one result, its shape is known up to named
dims (a batch dim ``"N"``, or the unknown ``None`` of a placeholder's first axis), and it is
not a plan output (the caller keeps those, so they are fresh arrays every run). Liveness
runs over the steps in order, through views (a transpose keeps its source alive):

* an elementwise step (or fused group) writes **in place** into an input that dies there, owns its block and has the
  result's exact shape and dtype (an elementwise step, a fused group, a gradient added to);
* otherwise it takes a **free block** of its exact (shape, dtype) class, freed by a value
  that died earlier;
* otherwise a **new block**.

A gradient that a flat update reads (``plan.flat``, graphnet.passes.flatten_state) is
**placed** instead: written straight into its slice of the flat block the update gathers
its gradients in, so the gather copies nothing. Flat blocks are never reused.

The executor allocates the blocks once per distinct set of feed shapes and hands each
planned step its block as ``out=``; in the steady state a run asks the allocator only for
what unplanned kernels return. ``check_memory_plan`` proves that no two live values share
a block.
"""

from __future__ import annotations

from dataclasses import replace

from .. import config
from ..errors import GraphError
from ..ops.registry import get_op
from ..plan import MemoryPlan, Plan
from ..plan import last_reads as plan_last_reads


def _plannable_shape(shape: tuple) -> bool:
    return all(isinstance(d, (int, str)) or d is None for d in shape)


def _key(plan: Plan, name: str) -> tuple:
    buf = plan.buffers[name]
    return tuple(buf.shape), buf.dtype


def last_reads(plan: Plan) -> tuple[dict[str, int], dict[str, frozenset[str]]]:
    """``graphnet.plan.last_reads`` with the registered ops' views and shape-only inputs."""
    return plan_last_reads(plan, get_op)


def plan_memory(plan: Plan) -> Plan:
    """Fill ``plan.memory`` (blocks, each planned buffer's block, the steps that write in place).

    ``GRAPHNET_DISABLE_PASSES=plan_memory`` leaves it None (every result a fresh array);
    ``GRAPHNET_VERIFY=1`` checks the result with ``check_memory_plan``."""
    if "plan_memory" in config.flags.disabled_passes:
        return replace(plan, memory=None)
    last, roots = last_reads(plan)
    kept = {root for name in plan.outputs.values() for root in roots[name]}
    blocks: list[tuple[tuple, str]] = []
    storage: dict[str, int] = {}
    flat, placed = _flat_blocks(plan, blocks, kept)
    inplace: dict[int, int] = {}
    free: dict[tuple, list[int]] = {}
    dying: list[list[str]] = [[] for _ in plan.steps]
    for name, i in last.items():
        dying[i].append(name)
    for i, step in enumerate(plan.steps):
        opdef = get_op(step.op)
        for out in step.outputs if opdef.accepts_out else ():
            buf = plan.buffers[out]
            if out in placed or buf.kind != "temp" or out in kept or not _plannable_shape(buf.shape):
                continue
            key = _key(plan, out)
            for position, name in enumerate(step.inputs if len(step.outputs) == 1 else ()):
                if opdef.category == "elementwise" and name in storage and last[name] == i and _key(plan, name) == key \
                        and storage[name] not in (storage.get(o) for o in step.inputs[:position]):
                    storage[out] = storage[name]
                    inplace[i] = position
                    break
            else:
                pool = free.get(key)
                if pool:
                    storage[out] = pool.pop()
                else:
                    storage[out] = len(blocks)
                    blocks.append(key)
        taken = {storage[o] for o in step.outputs if o in storage}
        for name in sorted(dying[i]):
            block = storage.get(name)
            if block is not None and block not in taken:
                free.setdefault(blocks[block], []).append(block)
    plan = replace(plan, memory=MemoryPlan(tuple(blocks), storage, inplace, placed, flat,
                                           _spans(plan, len(blocks), storage, placed, flat, last)))
    if config.flags.verify:
        check_memory_plan(plan)
    return plan


def _spans(plan: Plan, count: int, storage: dict[str, int], placed: dict[str, tuple[int, int]],
           flat: dict[tuple[int, int], int], last: dict[str, int]) -> tuple[tuple[int, int], ...]:
    """Each block's (first write, last read) step: over its values, and for a flat block from
    its first placed gradient to the update that gathers into it."""
    first = {name: i for i, step in enumerate(plan.steps) for name in step.outputs}
    spans: list[list[int] | None] = [None] * count
    homes = [(name, block) for name, block in storage.items()] + [(name, b) for name, (b, _) in placed.items()]
    for name, block in homes:
        span = spans[block]
        start, end = first[name], last.get(name, first[name])
        spans[block] = [start, end] if span is None else [min(span[0], start), max(span[1], end)]
    for (g, _), block in flat.items():
        update = plan.flat[g].steps[0]  # the merged update runs at the group's first step
        span = spans[block]
        spans[block] = [update, update] if span is None else [min(span[0], update), max(span[1], update)]
    return tuple((span[0], span[1]) if span is not None else (0, len(plan.steps)) for span in spans)


def _flat_blocks(plan: Plan, blocks: list[tuple[tuple, str]], kept: set[str]
                 ) -> tuple[dict[tuple[int, int], int], dict[str, tuple[int, int]]]:
    """A block per flat group's gathered position (its gradients), and the values written
    straight into their slice of it: a temp whose step writes only it, into ``out=``."""
    producer = {name: step for step in plan.steps for name in step.outputs}
    flat: dict[tuple[int, int], int] = {}
    placed: dict[str, tuple[int, int]] = {}
    for g, group in enumerate(plan.flat):
        for position in group.flat[group.written:]:
            flat[(g, position)] = len(blocks)
            blocks.append(((group.total,), group.dtype))
            for member, offset in zip(group.inputs, group.offsets):
                name = member[position]
                step = producer.get(name)
                if step is not None and plan.buffers[name].kind == "temp" and name not in kept \
                        and len(step.outputs) == 1 and get_op(step.op).accepts_out:
                    placed[name] = (flat[(g, position)], offset)
    return flat, placed


def check_memory_plan(plan: Plan) -> None:
    """Raise GraphError if two values alive at once share a block, a block holds a value of
    another type, or a step writes over an input that is still read afterwards."""
    memory = plan.memory
    if memory is None:
        return
    last, _ = last_reads(plan)
    _check_placed(plan)
    holder: dict[int, str] = {}  # block -> the value it holds now
    for i, step in enumerate(plan.steps):
        for out in step.outputs:
            block = memory.storage.get(out)
            if block is None:
                continue
            if memory.blocks[block] != _key(plan, out):
                raise GraphError(f"memory plan: {out} {_key(plan, out)} is given block {block} of type "
                                 f"{memory.blocks[block]}")
            previous = holder.get(block)
            if previous is not None and last[previous] > i:
                raise GraphError(f"memory plan: step {i} ({step.op}) writes {out} into block {block} while "
                                 f"{previous} (read until step {last[previous]}) is still in it")
            if previous is not None and last[previous] == i and previous not in step.inputs:
                raise GraphError(f"memory plan: {previous} in block {block} is read by a view at step {i} "
                                 f"that {step.op} overwrites")
            if previous is not None and last[previous] == i and memory.inplace.get(i) is None:
                raise GraphError(f"memory plan: step {i} ({step.op}) overwrites its input {previous} without "
                                 f"being marked in place")
            holder[block] = out


def _check_placed(plan: Plan) -> None:
    """Flat blocks hold nothing but their group's values, each in its own member's slice."""
    memory = plan.memory
    flat_blocks = set(memory.flat.values())
    shared = flat_blocks & set(memory.storage.values())
    if shared:
        raise GraphError(f"memory plan: flat block {min(shared)} also holds a whole value")
    slices: dict[int, dict[int, str]] = {}
    for (g, position), block in memory.flat.items():
        group = plan.flat[g]
        if memory.blocks[block] != ((group.total,), group.dtype):
            raise GraphError(f"memory plan: flat block {block} is {memory.blocks[block]}, not ({group.total},) "
                             f"{group.dtype}")
        slices[block] = {offset: member[position] for member, offset in zip(group.inputs, group.offsets)}
    for name, (block, offset) in memory.placed.items():
        if slices.get(block, {}).get(offset) != name:
            raise GraphError(f"memory plan: {name} is placed at offset {offset} of block {block}, which is not "
                             f"its slice of a flat update")
