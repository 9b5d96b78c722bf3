"""Flat optimizer state: the per-parameter updates of one rule run as one kernel.

After ``fuse_updates`` an optimizer's update is one ``fused_assign`` effect per parameter,
all with the same body (Adam: ``p, m, v <- f(p, m, v, g, lr, beta1, ...)``). This pass, run
on the lowered plan, finds the effects that differ only in their per-parameter inputs and
records them as one ``FlatGroup``: the executor stores the parameters back to back in one
array (each parameter's ``.data`` a view of it), each optimizer slot likewise, gathers the
gradients into one flat block (the memory plan has each gradient written straight into its
slice, so the gather copies nothing) and runs the update once over all of them, as
PyTorch's fused/foreach optimizers do.

Nothing in the steps changes and nothing is stored in plan files: the groups are derived
from the steps, at lowering and again when a plan file loads. Parameter groups with their
own hyperparameters read other hyperparameter buffers, so they form groups of their own.
``GRAPHNET_DISABLE_PASSES=flatten_state`` keeps one kernel per parameter.
"""

from __future__ import annotations

from dataclasses import replace

from .. import config
from ..plan import FlatGroup, Plan


def _static(shape: tuple) -> bool:
    return all(isinstance(d, int) for d in shape)


def _canonical(plan: Plan, index: int) -> tuple[tuple, list[int]] | None:
    """A fused_assign step's update as expressions over labelled inputs, and its input positions
    in canonical order; None where the step cannot be flattened.

    Two parameters' updates are the same rule when these expressions are equal. Fusion may
    number the members and inputs of two such bodies differently (a shared subexpression is
    first met while fusing one of them), so inputs are labelled by what they are, not where
    they sit: a written variable by its result index, a shared scalar by its buffer name,
    any other per-parameter input by the order a walk from the results first reaches it.
    """
    step = plan.steps[index]
    if step.op != "fused_assign":
        return None
    written = len(step.attrs["results"])
    param = plan.buffers[step.inputs[0]]
    if not _static(param.shape) or any(plan.buffers[name].kind != "variable" for name in step.inputs[:written]):
        return None
    labels: dict[int, tuple] = {}
    order: list[int] = list(range(written))
    for position, name in enumerate(step.inputs):
        buf = plan.buffers[name]
        if position < written:
            if tuple(buf.shape) != tuple(param.shape) or buf.dtype != param.dtype:
                return None
            labels[position] = ("written", position)
        elif tuple(buf.shape) == tuple(param.shape) and buf.shape != ():
            if buf.dtype != param.dtype:
                return None
        elif tuple(buf.shape) == ():
            labels[position] = ("shared", name)
        else:
            return None  # a per-parameter input shaped otherwise (broadcast against the parameter)
    body = step.attrs["body"]
    memo: dict[int, tuple] = {}

    def expression(arg: int) -> tuple:
        if arg < 0:
            position = -arg - 1
            if position not in labels:
                labels[position] = ("flat", len(order) - written)
                order.append(position)
            return labels[position]
        if arg not in memo:
            op, args, attrs = body[arg]
            memo[arg] = (op, repr(attrs), tuple(expression(a) for a in args))
        return memo[arg]

    results = tuple(expression(r) for r in step.attrs["results"])
    shared = sorted((label[1], position) for position, label in labels.items() if label[0] == "shared")
    order += [position for _, position in shared]
    if len(order) != len(step.inputs):
        return None  # an input no result depends on
    return (step.attrs["kinds"], param.dtype, results, len(order)), order


def flatten_state(plan: Plan) -> Plan:
    """Fill ``plan.flat`` with the groups of two or more effects that can run as one kernel."""
    if "flatten_state" in config.flags.disabled_passes:
        return replace(plan, flat=())
    candidates: dict[tuple, list[tuple[int, list[int]]]] = {}
    for index in range(plan.first_effect, len(plan.steps)):
        found = _canonical(plan, index)
        if found is not None:
            candidates.setdefault(found[0], []).append((index, found[1]))
    groups = []
    for members in candidates.values():
        if len(members) < 2:
            continue
        first_index, first_order = members[0]
        to_first = {canonical: position for canonical, position in enumerate(first_order)}
        inputs = []
        for index, order in members:  # member k's buffers in the order the first member reads its own
            names = plan.steps[index].inputs
            mine = {to_first[canonical]: names[position] for canonical, position in enumerate(order)}
            inputs.append(tuple(mine[p] for p in range(len(names))))
        written = len(plan.steps[first_index].attrs["results"])
        flat = tuple(p for p in range(len(inputs[0])) if plan.buffers[inputs[0][p]].shape != ()
                     or p < written)
        shared = [p for p in range(len(inputs[0])) if p not in flat]
        if any(len({member[p] for member in inputs}) != len(inputs) for p in flat) \
                or any(len({member[p] for member in inputs}) != 1 for p in shared):
            continue  # one buffer at two offsets (a gradient two updates read) cannot be flat
        sizes = tuple(_size(plan.buffers[plan.steps[i].inputs[0]].shape) for i, _ in members)
        offsets = tuple(sum(sizes[:k]) for k in range(len(sizes)))
        groups.append(FlatGroup(tuple(i for i, _ in members), tuple(inputs), flat, written, offsets, sizes,
                                plan.buffers[inputs[0][0]].dtype))
    taken: set[str] = set()
    kept = []
    for group in groups:  # a buffer in two groups would need two homes
        names = {member[p] for member in group.inputs for p in group.flat}
        if names & taken:
            continue
        taken |= names
        kept.append(group)
    return replace(plan, flat=tuple(kept))


def _size(shape: tuple) -> int:
    size = 1
    for d in shape:
        size *= d
    return size
