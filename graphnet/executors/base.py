"""The executor protocol, shared by every array backend: the runtime half of a backend.

An executor interprets a Plan: it binds buffers to slots once, turns each step into a
pre-bound kernel call, and then runs the steps in order on every ``run``. A backend is this
runtime plus a kernel table (graphnet.executors.kernel_table): its array module ``xp``, how
arrays move to and from the host, where a variable's value lives, and, per op, which kernel
runs and what memory it needs. Nothing here imports a kernel.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Callable, Mapping

import numpy as np

from .. import config, distributed, dtypes, interrupts
from ..errors import ExecutorError, GraphnetError, LossNotFiniteError, MemoryLimitError, NumericsError
from ..ops.fused import first_nonfinite_member
from ..ops.registry import get_op
from ..plan import FlatGroup, Plan, Step
from .arena import ALIGNMENT, arena_address, describe_bytes, pack_blocks
from .feeds import RunResult, check_feeds
from .flat_state import FlatUpdate
from .kernel_table import KernelTable
from .peak import dim_values, peak_bytes, peak_formula


class ArrayExecutor:
    """Runs a plan with kernels written against the array module ``xp``.

    The executor needs nothing but the plan: optimizer updates are steps of the plan like
    any other. Backends override the hooks below (array module, host transfers, where a
    variable's value lives, the random source).
    """

    name = "abstract"
    xp: Any = None
    #: the backend's kernels (the reference kernels only, unless a backend says otherwise)
    table: KernelTable = KernelTable()
    PLANNED_SHAPES = 4  # storage blocks are kept for this many distinct sets of feed shapes

    def __init__(self, plan: Plan, seed: int | None = None, check_numerics: bool = False,
                 variables: Mapping[str, Any] | None = None) -> None:
        """``variables``: the Variables holding the plan's variable buffers (``bind_variables``);
        the plan itself holds only their names and kinds."""
        self.plan = plan
        self.variables = dict(variables or {})
        unbound = sorted(set(plan.variables) - set(self.variables))
        if unbound:
            raise ExecutorError(f"no Variable is bound to {unbound[:3]}: pass variables=bind_variables(plan, graph)")
        self.check_numerics = check_numerics
        # the process group the plan's collective steps run on (graphnet.distributed)
        self.communicator = distributed.current()
        self.seed = seed
        self.rng = self.make_rng(seed)
        self.slots = {name: i for i, name in enumerate(plan.buffers)}
        self._template: list[Any] = [None] * len(self.slots)
        for name, value in plan.constants.items():
            self._template[self.slots[name]] = self.from_host(value)
        self._var_slots = [(self.slots[n], self.variables[n]) for n in plan.variables]
        self._var_types = {self.slots[n]: (tuple(plan.buffers[n].shape), np.dtype(plan.buffers[n].dtype))
                           for n in plan.variables}
        self._feed_slots = {feed: self.slots[buf] for feed, buf in plan.feeds.items()}
        self._memory_checked: set[tuple] = set()
        self._casts_warned: set[str] = set()  # feeds already warned about being rounded (once each)
        # a training plan's loss (its first output): a non-finite one is never applied
        self._loss_slot = self.slots[next(iter(plan.outputs.values()))] if plan.trainable and plan.outputs else None
        self._data_parallel = any(get_op(step.op).category == "collective" for step in plan.steps)
        self._program = [self._bind(step, released) for step, released in zip(plan.steps, plan.release)]
        self._flat_updates = [self._flatten(group) for group in plan.flat]
        storage = plan.memory.storage if plan.memory is not None else {}
        # each step's storage block (-1: its kernel returns a fresh array)
        self._block_of = [tuple(storage.get(name, -1) for name in step.outputs) for step in plan.steps]
        # per distinct set of feed shapes: the kernels bound to their blocks (None: not planned)
        self._planned: dict[tuple, list[Callable[..., Any]] | None] = {}
        self._fresh = [fn for fn, *_ in self._program]

    # --- backend hooks -------------------------------------------------------------------
    def make_rng(self, seed: int | None) -> Any:
        """The random source random kernels draw from (``rng=``)."""
        return np.random.default_rng(seed)

    def get_rng_state(self) -> Any:
        """The random source's state as plain JSON-able data (saved in plan files)."""
        return getattr(getattr(self.rng, "bit_generator", None), "state", None)

    def set_rng_state(self, state: Any) -> None:
        try:
            self.rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise ExecutorError(f"bad random-generator state: {exc}") from None

    def from_host(self, array: np.ndarray) -> Any:
        return array

    def to_host(self, array: Any) -> np.ndarray:
        return array

    def variable_array(self, var: Any) -> Any:
        """The backend array holding ``var``'s value (NumPy: the Variable's own array)."""
        return var.data

    def adopt_variable(self, var: Any, view: Any) -> None:
        """Make ``view`` (a slice of a flat array this executor owns) hold ``var``'s value from
        now on. NumPy: the value is copied in and the Variable's array becomes the view, so
        every plan and the user's module see the updated values."""
        view[...] = var.data
        var.data = view

    def readopt_variable(self, var: Any, view: Any) -> None:
        """Before a run: adopt ``var`` again into ``view`` if its value moved since (``var.data =
        new``, another plan that flattened it too) and still has the view's shape and dtype (a
        run refuses any other). NumPy: the Variable's array is no longer the view."""
        data = var.peek()
        if data is not view and data.shape == view.shape and data.dtype == view.dtype:
            self.adopt_variable(var, view)

    def kernel_for(self, step: Step) -> Callable[..., Any]:
        """The callable computing ``step`` from its input arrays (and ``out=`` where the op takes
        it), from the backend's kernel table."""
        return self.table.make(self, step)

    @classmethod
    def peak_bytes(cls, plan: Plan, shapes: Mapping[str, tuple[int, ...]]) -> int:
        """The most bytes a run of ``plan`` on this backend holds at once besides variables,
        feeds and constants, for feeds of these shapes (graphnet.executors.peak)."""
        return peak_bytes(plan, shapes, cls.table)

    @classmethod
    def peak_formula(cls, plan: Plan) -> tuple[int, int]:
        """This backend's peak bytes for ``plan`` as ``a + b * batch`` (graphnet.executors.peak)."""
        return peak_formula(plan, cls.table)

    def held_bytes(self) -> int:
        """Bytes this executor keeps between runs besides the variables: its storage arenas
        (one per set of feed shapes it has planned) and any backend scratch."""
        arenas: dict[int, int] = {}
        for fns in self._planned.values():
            for fn in fns or ():
                out = getattr(fn, "keywords", {}).get("out")
                for array in out if isinstance(out, tuple) else (out,):  # several results: a tuple
                    if array is not None:
                        base = _root(array)
                        arenas[id(base)] = base.nbytes
        return sum(arenas.values())

    def codegen_summary(self) -> dict[str, Any]:
        """How fused groups are run by this backend (the compile report shows it)."""
        return {}

    def kernel_choices(self) -> dict[str, str]:
        """The choices among kernels that compute the same values with different rounding
        (convolution algorithms on NumPy) this executor has made or been given: a key naming
        the step's op, shapes, dtype and attributes -> the kernel's name. Saved with the plan,
        so that a loaded plan rounds as the one that saved it did. None here."""
        return {}

    def use_kernel_choices(self, choices: Mapping[str, str]) -> None:
        """Make ``choices`` (from :meth:`kernel_choices`, possibly of another process) where
        they apply. Raises ExecutorError for one this backend cannot make."""
        if choices:
            raise ExecutorError(f"the {self.name} executor makes no kernel choices; given {len(choices)}")

    # --- binding -------------------------------------------------------------------------
    def _bind(self, step: Step, released: tuple[str, ...]
              ) -> tuple[Callable[..., Any], tuple[int, ...], tuple[int, ...], tuple[int, ...], Step]:
        """The step's kernel and the slots it reads, writes and (reading them last) lets go of."""
        ins = tuple(self.slots[n] for n in step.inputs)
        outs = tuple(self.slots[n] for n in step.outputs)
        rel = tuple(self.slots[n] for n in released if self.plan.buffers[n].kind == "temp")
        opdef = get_op(step.op)
        if opdef.kernel is None:
            raise ExecutorError(f"op {step.op!r} has no kernel (a {opdef.category} op must be lowered first)")
        return self.kernel_for(step), ins, outs, rel, step

    def _flatten(self, group: FlatGroup) -> FlatUpdate:
        """The members of a flat group run as one update at the first member's place; the others
        run nothing. Each keeps its releases (a gradient may be read by an effect in between)."""
        update = FlatUpdate(self, group, self._program[group.steps[0]][0])
        first = self._program[group.steps[0]]
        ins = tuple(self.slots[name] for member in group.inputs for name in member)
        self._program[group.steps[0]] = (update, ins, (), first[3], first[4])
        for index in group.steps[1:]:
            _, _, _, rel, step = self._program[index]
            self._program[index] = (_nothing, (), (), rel, step)
        return update

    def _allocate_blocks(self, key: tuple, results: list[tuple[tuple[tuple, Any] | None, ...]]) -> None:
        """After a first run at these feed shapes (``results``: each step's (shape, dtype) per
        output): one array per storage block, sized by what the block's values turned out to
        be, and every planned kernel bound to its block (a step with several results to a
        tuple, None where one is not planned). A block whose values differ in shape (unknown
        dims that are not the same dim) leaves the plan unplanned at these shapes: correct,
        only slower."""
        memory = self.plan.memory
        types: list[tuple[tuple, Any] | None] = [None] * len(memory.blocks)
        for blocks, typed in zip(self._block_of, results):
            for block, kind in zip(blocks, typed):
                if block < 0:
                    continue
                if kind is None or (types[block] is not None and types[block] != kind):
                    self._planned[key] = None
                    return
                types[block] = kind
        for block, (shape, dtype) in enumerate(memory.blocks):
            if types[block] is None:  # a flat block: sized by its group
                types[block] = (tuple(shape), np.dtype(dtypes.DTYPES[dtype]))
        sizes = [int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for shape, dtype in types]
        offsets, total = pack_blocks(sizes, memory.spans)
        arena = self.xp.empty(total + ALIGNMENT, np.uint8)
        base = (-arena_address(arena)) % ALIGNMENT
        arrays = [arena[base + offset:base + offset + size].view(dtype).reshape(shape)
                  for offset, size, (shape, dtype) in zip(offsets, sizes, types)]
        while len(self._planned) >= self.PLANNED_SHAPES:  # shapes that vary every run: keep the latest few
            del self._planned[next(iter(self._planned))]
        fns = [fn if all(b < 0 for b in blocks) else functools.partial(
                   fn, out=arrays[blocks[0]] if len(blocks) == 1 else tuple(arrays[b] if b >= 0 else None
                                                                             for b in blocks))
               for (fn, *_), blocks in zip(self._program, self._block_of)]
        slices: dict[str, Any] = {}  # placed value -> the slice its step writes
        for g, update in enumerate(self._flat_updates):
            blocks = {position: arrays[memory.flat[(g, position)]] for position in update.gathered}
            fns[update.group.steps[0]], views = update.planned(blocks)
            for position, members in views.items():
                for member, view in zip(update.group.inputs, members):
                    slices[member[position]] = view
        for index, step in enumerate(self.plan.steps):
            if len(step.outputs) == 1 and step.outputs[0] in memory.placed:
                fns[index] = functools.partial(fns[index], out=slices[step.outputs[0]])
        self._planned[key] = fns

    # --- running -------------------------------------------------------------------------
    def _shapes_key(self, bufs: list[Any]) -> tuple:
        return tuple(bufs[slot].shape for slot in self._feed_slots.values())

    def _buffers(self, feeds: Mapping[str, Any]) -> list[Any]:
        """A run's buffer slots: constants, the variables' arrays (checked against the plan),
        and the checked feeds; refused first if the temporaries would exceed the memory limit."""
        bufs = list(self._template)
        for update in self._flat_updates:
            update.refresh(self)
        for slot, var in self._var_slots:
            array = self.variable_array(var)
            if array.dtype != self._var_types[slot][1] or array.shape != self._var_types[slot][0]:
                raise ExecutorError(f"variable {var.name or var.id} now holds {array.dtype}{list(array.shape)}, "
                                    f"but this plan was compiled for {self._var_types[slot][1]}"
                                    f"{list(self._var_types[slot][0])}: compile the plan again")
            bufs[slot] = array
        checked = check_feeds(self.plan, feeds, before_converting=self._check_memory, warned=self._casts_warned)
        for name, value in checked.items():
            bufs[self._feed_slots[name]] = self.from_host(value)
        return bufs

    def running(self) -> Any:
        """A context manager around every run (a backend's per-run settings); none here."""
        return contextlib.nullcontext()

    def run(self, feeds: Mapping[str, Any], device_outputs: bool = False) -> dict[str, np.ndarray]:
        """One run of the plan. ``device_outputs``: leave the outputs as the backend's arrays
        (a GPU backend's device arrays; NumPy's are host arrays either way)."""
        with self.running():
            return self._run(feeds)

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        bufs = self._buffers(feeds)
        key = self._shapes_key(bufs)
        fns = self._planned.get(key) or self._fresh  # None: these shapes could not be planned
        if self.plan.memory is not None and key not in self._planned:
            # the first run at these shapes sizes the storage blocks; the effects run as always
            self._run_checked(bufs, plan_for=key, stop=self.plan.first_effect)
            self._apply_effects(bufs, self.plan.first_effect, self._fresh)
        elif self.check_numerics or config.flags.debug >= 4:
            self._run_checked(bufs, fns=fns)
        else:
            first = self.plan.first_effect
            program = self._program
            index = 0
            try:
                for index in range(first):
                    _, ins, outs, rel, _ = program[index]
                    result = fns[index](*[bufs[i] for i in ins])
                    if len(outs) == 1:
                        bufs[outs[0]] = result
                    elif outs:
                        for slot, value in zip(outs, result):
                            bufs[slot] = value
                    for r in rel:
                        bufs[r] = None
            except GraphnetError:
                raise
            except Exception as exc:
                raise self._failure(index, bufs, exc) from exc
            self._apply_effects(bufs, first, fns)
        return RunResult({key: self.to_host(bufs[self.slots[buf]]) for key, buf in self.plan.outputs.items()})

    def _check_memory(self, shapes: dict[str, tuple[int, ...]], converted: int = 0) -> None:
        """Refuse, before anything runs or is converted, a run whose temporaries (and the feeds'
        conversions to the plan's dtypes, ``converted`` bytes) would need more memory than the
        limit (GRAPHNET_MEMORY_LIMIT, else the machine's available memory): a typed error, not
        a MemoryError half-way. Checked once per distinct set of feed shapes."""
        key = (tuple(sorted(shapes.items())), converted)
        if key in self._memory_checked:
            return
        need = self.peak_bytes(self.plan, shapes) + converted
        limit = config.flags.memory_limit
        if limit is None:
            limit = config.available_memory()
        if limit is not None and need > limit:
            named, largest = dim_values(self.plan, shapes)
            at = f"batch {largest}" if largest > 1 or not named else ", ".join(f"{k}={v}" for k, v in named.items())
            raise MemoryLimitError(f"this plan needs {describe_bytes(need)} of temporaries at {at}, more than the "
                                   f"{describe_bytes(limit)} limit (set GRAPHNET_MEMORY_LIMIT to change it)")
        self._memory_checked.add(key)

    def _apply_effects(self, bufs: list[Any], first: int, fns: list[Callable[..., Any]]) -> None:
        """Run the effects (every write to a variable), all of them: an interrupt (Ctrl-C) that
        arrives meanwhile, whichever thread the signal reached, is held back until the last one
        has run (graphnet.interrupts), so a run leaves either the old state or the new one,
        never half of each, and no ``fused_assign`` (which updates state in place) runs twice.
        A KeyboardInterrupt or SystemExit raised by a kernel itself runs the remaining effects
        before it propagates."""
        if self._loss_slot is not None:
            loss = bufs[self._loss_slot]
            bad = loss is not None and getattr(loss, "size", 1) == 1 and not bool(self.xp.isfinite(loss).all())
            if self._data_parallel and self.communicator.size > 1:
                # every process applies its update or none does: the averaged gradients already
                # mixed a non-finite loss's gradients into every process's
                flag = np.array([1.0 if bad else 0.0])
                self.communicator.allreduce(flag, "the check that every process's loss is finite")
                if flag[0] > 0 and not bad:
                    raise LossNotFiniteError(
                        "another data-parallel process's loss is not finite: this step's update is not applied "
                        "on any process (parameters and optimizer state are as before)", float(loss))
            if bad:
                raise LossNotFiniteError(
                    f"the loss is {float(loss)}: this step's update is not applied (parameters, optimizer state, "
                    f"running statistics and the step counter are as before). A mean over an empty batch is NaN; "
                    f"otherwise training diverged (lower the learning rate, or find the first non-finite value "
                    f"with gn.compile(..., check_numerics=True))", float(loss))
        with interrupts.deferred():
            self._effect_steps(bufs, first, fns)

    def _effect_steps(self, bufs: list[Any], index: int, fns: list[Callable[..., Any]]) -> None:
        held: BaseException | None = None
        while index < len(self._program):
            _, ins, _, rel, _ = self._program[index]
            try:
                fns[index](*[bufs[i] for i in ins])
                for r in rel:
                    bufs[r] = None
                index += 1
            except Exception as exc:
                raise self._failure(index, bufs, exc) from exc
            except BaseException as exc:  # KeyboardInterrupt, SystemExit: finish, then raise it
                held = held or exc
        if held is not None:
            raise held

    def _failure(self, index: int, bufs: list[Any], exc: Exception) -> ExecutorError:
        """An error from inside a kernel, as an ExecutorError naming the step's op and origin.

        Effects run last, so a step that fails before them leaves every variable (parameters,
        optimizer state, running statistics, the step counter) as it was."""
        step = self._program[index][-1]
        shapes = ", ".join(f"{n} {tuple(getattr(bufs[self.slots[n]], 'shape', ()))}" for n in step.inputs)
        where = f" in {step.scope}" if step.scope else ""
        return ExecutorError(f"{step.op}{where} (declared at {step.location or '?'}) failed at step {index} on "
                             f"inputs {shapes}: {type(exc).__name__}: {exc}")

    def trace(self, feeds: Mapping[str, Any]) -> list[tuple[Step, tuple[np.ndarray, ...]]]:
        """Run once, step by step, and return each step with host copies of its results (the
        effects run too). For debugging: ``gn.debug.bisect_passes`` compares two plans' traces."""
        record: list[tuple[Step, tuple[np.ndarray, ...]]] = []
        with self.running():
            bufs = self._buffers(feeds)
            self._run_checked(bufs, record, fns=self._planned.get(self._shapes_key(bufs)))
        return record

    def time_steps(self, feeds: Mapping[str, Any]) -> dict[str, float]:
        """Run once, step by step (the effects too), and return the seconds spent in each op.
        For profiling: benchmarks/step_profile.py sums it over runs."""
        seconds: dict[str, float] = {}
        with self.running():
            bufs = self._buffers(feeds)
            timings = self._run_checked(bufs, fns=self._planned.get(self._shapes_key(bufs)))
        for elapsed, step in timings:
            seconds[step.op] = seconds.get(step.op, 0.0) + elapsed
        return seconds

    def _run_checked(self, bufs: list[Any], record: list | None = None, fns: list[Callable[..., Any]] | None = None,
                     plan_for: tuple | None = None, stop: int | None = None) -> list[tuple[float, Step]]:
        """Every step in order, timed, with numerics checked when asked; returns the timings.
        ``fns``: the kernels bound to their storage blocks (else each result is a fresh
        array). ``plan_for``: the feed shapes to size the storage blocks for from this run.
        ``stop``: run the steps before this index only."""
        timings: list[tuple[float, Step]] = []
        xp = self.xp
        results: list[tuple[tuple[tuple, Any] | None, ...]] = []
        for index, (fn, ins, outs, rel, step) in enumerate(self._program[:stop]):
            if fns is not None:
                fn = fns[index]
            # a fused step may overwrite a dying input: keep its inputs to name a bad member later
            kept = [xp.array(bufs[i]) for i in ins] if self.check_numerics and step.op == "fused" else None
            start = time.perf_counter()
            try:
                result = fn(*[bufs[i] for i in ins])
            except GraphnetError:
                raise
            except Exception as exc:
                raise self._failure(index, bufs, exc) from exc
            values = (result,) if len(outs) == 1 else tuple(result) if outs else ()
            for slot, value in zip(outs, values):
                bufs[slot] = value
            timings.append((time.perf_counter() - start, step))
            if record is not None:
                record.append((step, tuple(np.array(self.to_host(v)) for v in values)))
            for value, name in zip(values, step.outputs):
                if not self.check_numerics or value.dtype.kind != "f" or bool(xp.all(xp.isfinite(value))):
                    continue
                bad = "NaN" if bool(xp.any(xp.isnan(value))) else "Inf"
                where = f" in {step.scope}" if step.scope else ""
                op = step.op
                if kept is not None:
                    body = step.attrs["body"]
                    member = first_nonfinite_member(xp, kept, body)
                    members = ", ".join(m[0] for m in body)
                    op = f"{body[member][0] if member is not None else 'fused'} (in fused group {members})"
                raise NumericsError(
                    f"{bad} produced by {op}{where} ({step.role}, declared at {step.location}), "
                    f"step output {name} of shape {tuple(value.shape)}"
                )
            if plan_for is not None:  # each result's type, where it is an array
                results.append(tuple((tuple(v.shape), v.dtype) if getattr(v, "flags", None) is not None else None
                                     for v in values))
            for r in rel:
                bufs[r] = None
        if plan_for is not None and self.plan.memory is not None:
            self._allocate_blocks(plan_for, results)
        if config.flags.debug >= 4:
            total = sum(t for t, _ in timings)
            print(f"run: {len(timings)} steps in {total * 1e3:.2f} ms; slowest:")
            for t, step in sorted(timings, key=lambda p: -p[0])[:10]:
                print(f"  {t * 1e3:8.3f} ms  {step.op:<20} {step.output:<8} {step.location}")
        return timings


def _root(array: Any) -> Any:
    """The array owning ``array``'s memory (following views down to it)."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _nothing() -> None:
    """A flat group's later members: the group's update ran at its first member."""


