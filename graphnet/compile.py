"""declare -> graph -> passes -> plan -> executor, in one readable function."""

from __future__ import annotations

import json
import os
import sys
import threading
import warnings
import weakref
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import config, distributed, interrupts, replicas
from .errors import GraphnetError, ModeWarning, OptimizerError
from .executors import get_executor
from .export import load_parts, save_plan
from .ir import Graph, Node
from .modes import check_mode, plan_mode
from .nn.init import next_plan_seed
from .optim import Optimizer
from .modes import resolve
from .passes.data_parallel import DEFAULT_BUCKET_BYTES
from .passes import (
    OptimizerVariables, Pass, default_pipeline, dim_constraints, finish_plan, mode_switches, run_to_plan,
    updated_parameters,
)
from .ir import topological_order
from .report import CompileReport, build_report
from .plan import DISPLAY as PLAN_DISPLAY
from .plan import Plan, bind_variables
from .tensor import Tensor, Variable


def _guess_name(tensor: Tensor, caller_locals: Mapping[str, Any] | None) -> str | None:
    """The caller's variable name bound to ``tensor``, so ``gn.compile(logits)`` keys 'logits'."""
    if caller_locals is None:
        return None
    for key, value in caller_locals.items():
        if value is tensor and not key.startswith("_"):
            return key
    return None


def normalize_outputs(outputs: Any, caller_locals: Mapping[str, Any] | None,
                      first_default: str = "output") -> tuple[list[str], list[Node]]:
    """Output names and nodes from a tensor, a list of tensors or a dict name -> tensor."""
    if isinstance(outputs, Tensor):
        items = [(None, outputs)]
    elif isinstance(outputs, Mapping):
        items = list(outputs.items())
    elif isinstance(outputs, (list, tuple)):
        items = [(None, t) for t in outputs]
    else:
        raise GraphnetError(f"compile expects a Tensor, a list of Tensors or a dict of them, got {type(outputs)}")
    names, nodes = [], []
    for i, (key, tensor) in enumerate(items):
        if not isinstance(tensor, Tensor):
            raise GraphnetError(f"output {key if key is not None else i} is not a Tensor: {tensor!r}")
        name = key or tensor.name or _guess_name(tensor, caller_locals) or (first_default if i == 0 else f"output{i}")
        if name in names:
            name = f"{name}_{i}"
        names.append(str(name))
        nodes.append(tensor.node)
    return names, nodes


#: every CompiledPlan alive, so that a child made by fork can replace a run lock another thread held
_ALIVE_PLANS: weakref.WeakSet = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    for plan in list(_ALIVE_PLANS):
        plan._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)

#: What the layers above offer a compiled plan (graphnet.render registers "svg");
#: compile does not import them.
SERVICES: dict[str, Callable[..., Any]] = {}


class CompiledPlan:
    """A plan bound to an executor: call ``run(**feeds)``; print it to see its steps.

    ``graph`` is the compiled graph the plan was lowered from; ``source`` the graph as
    declared, before any pass (rendering replays the passes on it). ``optimizer`` is the
    optimizer object whose hyperparameters the plan reads at each run (``None`` for an
    inference plan): its numeric hyperparameters are copied into the plan's hyper
    variables before every run, so ``plan.lr = 0.01`` or a schedule takes effect at once.
    ``variables`` maps the plan's variable buffers to the Variables holding their values (the
    plan itself is plain data: it names them).
    """

    def __init__(self, plan: Plan, graph: Graph, executor: Any, optimizer: Any = None,
                 source: Graph | None = None, *, mode: Any = None, passes: Sequence[Pass] = (),
                 bucket_bytes: int | None = None) -> None:
        self.source = source if source is not None else graph
        self.optimizer = optimizer
        # a data-parallel plan (gradients averaged over the processes): a loaded one keeps its
        # collective steps, and compiles its update again with them
        if bucket_bytes is None and any(step.op == "allreduce_start" for step in plan.steps):
            bucket_bytes = DEFAULT_BUCKET_BYTES
        self.bucket_bytes = bucket_bytes
        self._lock = threading.Lock()
        _ALIVE_PLANS.add(self)
        self._use(plan, graph, executor)
        self._synced: dict[str, float] | None = None
        #: each time a change of the optimizer's structure or of which parameters train made the
        #: update compile again (or switch back to one compiled before): shown by the report
        self.recompiles: list[dict[str, Any]] = []
        if optimizer is not None:
            # how to compile the update again: the modules' modes as resolved now, the user's passes
            self._modes = {switch: resolve(switch, mode) for switch in mode_switches(self.source)}
            self._passes = tuple(passes)
            self._parameters = _parameters(self.source)
            self._key = self._update_key()
            # (structure, trained parameters, their own step counters) -> the update compiled for them
            self._variants: dict[tuple, tuple[Plan, Graph, Any]] = {(*self._key, ()): (plan, graph, executor)}
            self._state = _optimizer_variables(plan, self.variables)
            self._counts: dict[int, int] = {}  # parameter id -> its updates when it stopped training

    @property
    def data_parallel(self) -> bool:
        """Whether this plan averages its gradients over data-parallel processes."""
        return self.bucket_bytes is not None

    def _use(self, plan: Plan, graph: Graph, executor: Any) -> None:
        self.plan = plan
        self.graph = graph
        self.executor = executor
        self.variables: dict[str, Variable] = executor.variables
        self._hyper = {self.variables[name].key: self.variables[name] for name in plan.variables_of_kind("hyper")}
        # variables in one global order, so plans sharing parameters never deadlock on them; their
        # locks are read at each run (a child made by fork replaces them)
        self._ordered = sorted(self.variables.values(), key=lambda v: v.id)

    def run(self, feeds: Mapping[str, Any] | None = None, /, *, device_outputs: bool = False,
            **kwargs: Any) -> dict[str, np.ndarray]:
        """Run one step. Feeds by keyword (``x=xb``) or as one dict; returns NumPy arrays by name
        (with ``device_outputs=True``, the backend's own arrays: CuPy arrays on the GPU).

        A training plan also updates its parameters, its optimizer state and its step
        counter in place (the plan's effects, which run after everything else).
        """
        if feeds is not None and kwargs:
            raise GraphnetError("pass feeds either as one dict or as keyword arguments, not both")
        # Runs of one plan never overlap (they share buffers and state), nor do runs of plans
        # sharing variables: an inference run sees the parameters of one whole training step.
        # The locks are taken and given back with Ctrl-C held off (graphnet.interrupts), so an
        # interrupt never leaves one held; the run between may be interrupted as always.
        locks = [self._lock, *(var.lock for var in self._ordered)]
        with interrupts.deferred():
            interrupts.acquire_all(locks)
            try:
                with interrupts.allowed():
                    if self.optimizer is not None:
                        self._sync_hyperparameters()
                    return self.executor.run(dict(feeds) if feeds is not None else kwargs, device_outputs)
            finally:
                interrupts.release_all(locks)

    __call__ = run

    def _sync_hyperparameters(self) -> None:
        optimizer = self.optimizer
        key = self._update_key()
        if key != self._key:
            optimizer.validate()
            self._recompile(key)
        values = optimizer.numeric_hyperparams()
        if values == self._synced:
            return
        optimizer.validate()
        for key, var in self._hyper.items():
            if key not in values:
                raise OptimizerError(f"{optimizer.name}: the plan reads hyperparameter {key!r}, "
                                     f"which the optimizer no longer has")
            var.data[...] = values[key]
        self._synced = values

    def _update_key(self) -> tuple:
        """What the compiled update depends on besides numbers: the optimizer's structure (flags,
        hyperparameters that are zero or not, parameter groups) and which parameters train."""
        optimizer = self.optimizer
        groups = ((var.id, optimizer.group_of(var)) for var in self._parameters if var.trainable and var.requires_grad)
        training = tuple((var_id, group) for var_id, group in groups if group is not None)
        return json.dumps(optimizer.structure(), sort_keys=True), training

    def _recompile(self, key: tuple) -> None:
        """Make the update follow ``key`` from this run on, as PyTorch follows a changed setting at
        its next step: the plan is compiled again from the declared graph (once per distinct
        update; one compiled before is reused), continuing from this plan's parameters, optimizer
        state, step counters and random state. A parameter that starts training gets the
        optimizer's initial state, and counts its own steps from the count it stopped at (0 if
        it never trained), as PyTorch's per-parameter state does."""
        old_structure, old_training = self._key
        structure, training = key
        state = self._state
        was = {var_id for var_id, _ in old_training}
        now = {var_id for var_id, _ in training}
        for var_id in was - now:
            self._counts[var_id] = int(state.steps.get(var_id, state.step).data)
        cohorts: dict[int, Variable] = {}
        for var_id in sorted(now - was):
            count = self._counts.get(var_id, 0)
            if count not in cohorts:
                cohorts[count] = Variable(np.array(count, np.int64), f"optimizer.step.{len(state.steps) + 1}",
                                          trainable=False, kind="step")
            state.steps[var_id] = cohorts[count]
        steps_key = tuple(sorted((var_id, state.steps[var_id].id) for var_id in now if var_id in state.steps))
        variant_key = (structure, training, steps_key)
        changed = _changes(json.loads(old_structure), json.loads(structure), was, now, self._parameters)
        variant = self._variants.get(variant_key)
        reused = variant is not None
        old = self.executor
        if variant is None:
            pipeline = default_pipeline(self.optimizer, self._modes, self._passes, variables=state,
                                        bucket_bytes=self.bucket_bytes)
            graph, plan, records = run_to_plan(self.source, pipeline)
            described = {"name": self.optimizer.name, "hyper": self.optimizer.hyperparams(),
                         "structure": self.optimizer.structure()}
            plan = finish_plan(plan, records, mode=plan_mode(mode_switches(self.source), self._modes),
                               dims=dim_constraints(self.source, self._modes), optimizer=described)
            executor = type(old)(plan, old.seed, old.check_numerics, variables=bind_variables(plan, graph))
            executor.use_kernel_choices(old.kernel_choices())
            variant = self._variants[variant_key] = (plan, graph, executor)
        variant[2].set_rng_state(old.get_rng_state())
        self._use(*variant)
        state.hyper.update({var.key: var for var in self._hyper.values()})  # any the new update added
        self._key = key
        self._synced = None
        self.recompiles.append({"at_step": self.step_count, "changed": changed, "reused": reused,
                                "updates_compiled": len(self._variants)})
        if config.flags.debug >= 1:
            print(f"update compiled again at step {self.step_count}: {', '.join(changed)}")

    @property
    def report(self) -> CompileReport:
        """What compiling did: each pass's node counts and time, the fusion groups and what was
        left alone and why, kernel counts, and how the executor runs the groups (see
        graphnet.report). Iterating over it gives the PassRecords."""
        report = build_report(self.plan, self.executor.codegen_summary(), self.executor.peak_formula(self.plan))
        report.recompiles = list(self.recompiles)
        return report

    @property
    def step_count(self) -> int:
        """Optimizer updates applied so far (0 for an inference plan): the step counter's value."""
        counters = [self.variables[name] for name in self.plan.variables_of_kind("step")]
        # the plan's own counter counts every training run (parameters that started training
        # later also have counters of their own)
        counter = next((var for var in counters if var.name == "optimizer.step"), counters[0] if counters else None)
        return 0 if counter is None else int(counter.data)

    @property
    def optimizer_state(self) -> dict[str, dict[str, np.ndarray]]:
        """Each parameter's optimizer state, by parameter buffer and slot (live arrays)."""
        owners = {id(var): name for name, var in self.variables.items()}
        state: dict[str, dict[str, np.ndarray]] = {}
        for name in self.plan.variables_of_kind("optimizer_state"):
            var = self.variables[name]
            state.setdefault(owners[id(var.owner)], {})[var.key] = var.data
        return state

    @property
    def lr(self) -> float:
        if self.optimizer is None:
            raise OptimizerError("this plan has no optimizer")
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        if self.optimizer is None:
            raise OptimizerError("this plan has no optimizer")
        self.optimizer.lr = float(value)

    def save(self, path: Any, *, inference: bool = False, outputs: Any = None) -> str:
        """Save this plan to one file, atomically (see docs/plan-format.md); returns the path.

        ``gn.load(path)`` gives back a plan that continues exactly where this one stopped.
        ``inference=True`` (or ``outputs=[names to keep]``) saves a forward-only plan
        without gradients, updates or optimizer state.
        """
        return save_plan(self, path, inference=inference, outputs=outputs)

    def __str__(self) -> str:
        text = PLAN_DISPLAY.get("text")
        hyper = {key: float(var.data) for key, var in self._hyper.items()}
        return text(self.plan, hyper) if text is not None else repr(self.plan)

    def _repr_svg_(self) -> str | None:
        """Notebooks draw it (None without Graphviz's ``dot``, so they fall back to text)."""
        svg = SERVICES.get("svg")
        return svg(self) if svg is not None else None

    def __repr__(self) -> str:
        kind = "training" if self.plan.trainable else "inference"
        return (f"<CompiledPlan {kind}: {len(self.plan.steps)} steps, feeds {sorted(self.plan.feeds)}, "
                f"outputs {list(self.plan.outputs)}, executor {self.executor.name}>")


def _parameters(source: Graph) -> list[Variable]:
    """The parameters the loss reads, frozen or not, in graph order, once each."""
    found: dict[int, Variable] = {}
    for node in topological_order([source.outputs[0]]):
        if node.op == "variable" and node.attrs["var"].kind == "parameter":
            found.setdefault(node.attrs["var"].id, node.attrs["var"])
    return list(found.values())


def _optimizer_variables(plan: Plan, variables: Mapping[str, Variable]) -> OptimizerVariables:
    """A training plan's step counter, hyperparameter and optimizer-state variables, to continue
    from when its update is compiled again."""
    bound = [variables[name] for name in plan.variables]
    steps = [var for var in bound if var.kind == "step"]
    main = next((var for var in steps if var.name == "optimizer.step"), steps[0])
    return OptimizerVariables(main, {var.key: var for var in bound if var.kind == "hyper"},
                              {(var.owner.id, var.key): var for var in bound if var.kind == "optimizer_state"})


def _changes(before: Mapping[str, Any], after: Mapping[str, Any], was: set[int], now: set[int],
             parameters: Sequence[Variable]) -> list[str]:
    """What made the update compile again, in words."""
    changed = [f"{key}: {before.get(key, 'unset')} -> {after.get(key, 'unset')}"
               for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
    names = {var.id: var.name or f"var{var.id}" for var in parameters}
    if now - was:
        changed.append("training " + ", ".join(sorted(names[i] for i in now - was)))
    if was - now:
        changed.append("frozen " + ", ".join(sorted(names[i] for i in was - now)))
    return changed


def load(path: Any, executor: str = "numpy") -> CompiledPlan:
    """Load a plan saved by ``CompiledPlan.save`` and bind it to ``executor``.

    Returns a ``CompiledPlan`` that continues exactly where the saved one stopped (its
    parameters, optimizer state, step counter and random state). Raises PlanFileError
    (PlanVersionError for a format it cannot read) for anything wrong with the file;
    nothing from the file is run.

    A data-parallel plan (saved from ``gn.compile(..., data_parallel=True)``) loads into any
    number of processes: each checks it against the others' and starts from rank 0's state,
    and every process but rank 0 moves its random generator to a stream of its own.
    """
    compiled = CompiledPlan(*load_parts(path, executor))
    if compiled.data_parallel:
        replicas.synchronize(compiled)
        replicas.own_random_stream(compiled)
    return compiled


def compile(  # noqa: A001 - the public name
    outputs: Any,
    optimizer: Any = None,
    executor: str = "numpy",
    *,
    check_numerics: bool = False,
    seed: int | None = None,
    effects: Sequence[Tensor] = (),
    mode: str | None = None,
    passes: Sequence[Pass] = (),
    data_parallel: bool = False,
    bucket_bytes: int | None = None,
) -> CompiledPlan:
    """Compile ``outputs`` (a tensor, list, or dict name -> tensor) into a runnable plan.

    With an ``optimizer``, the first output is the scalar loss: the plan computes it, its
    gradient with respect to every trainable parameter it depends on, and applies the
    optimizer's update, all in one ``run``. ``check_numerics`` raises NumericsError at the
    first step that makes a NaN or Inf. ``seed`` seeds random ops (dropout); without it,
    the seed comes from the sequence ``gn.manual_seed`` sets. ``effects`` lists extra
    ``gn.ops.assign`` writes to run after each step (layers declare their own).

    ``mode`` decides train/eval behaviour (Dropout, BatchNorm): None follows each module's
    mode now (``model.train()`` / ``model.eval()``), "train" or "eval" sets every module's.
    An inference plan (no optimizer) compiled with modules in training mode and ``mode=None``
    warns (``gn.ModeWarning``) naming them; ``mode="train"`` says it is meant (Monte-Carlo
    dropout).

    ``passes``: extra compile passes (``gn.passes.Pass``), graph passes run just before
    scheduling and plan passes just after the lowering (docs/architecture.md, "The pipeline").

    ``data_parallel``: a training plan for one of several processes (``gn.distributed.init()``
    under mpiexec; docs/distributed.md): its gradients are averaged over the processes in
    buckets of about ``bucket_bytes`` (allreduce steps that overlap the backward pass; by
    default about eight buckets, each at least 64 KiB), every process starts from rank 0's parameters and optimizer state, a different plan on another
    process is a DistributedError, and random ops draw from ``seed + rank``. With one process
    it trains exactly as without.

    Output names: a dict's keys; else each tensor's name (``.named()``, a placeholder's or
    parameter's), else the caller's variable bound to it (``gn.compile(logits)`` gives
    "logits"), else "output" (and "loss" for a training plan's first output).
    """
    check_mode(mode)
    caller = sys._getframe(1).f_locals
    names, nodes = normalize_outputs(outputs, caller)
    if optimizer is not None:
        if not isinstance(optimizer, Optimizer):
            raise OptimizerError(f"optimizer must be a gn.optim.Optimizer, got {type(optimizer).__name__}")
        first = outputs if isinstance(outputs, Tensor) else None
        if isinstance(outputs, (list, tuple)) and outputs:
            first = outputs[0]
        if first is not None and first.name is None:
            names[0] = "loss"  # the minimised scalar, unless the user named it
    executor_cls = get_executor(executor)
    source = Graph.build(nodes, names, [e.node for e in effects])
    switches = mode_switches(source)
    if optimizer is None and mode is None and any(s.training for s in switches):
        training = sorted({s.describe() for s in switches if s.training})
        warnings.warn(f"compiling an inference plan while {', '.join(training)} {'is' if len(training) == 1 else 'are'} "
                      f"in training mode (dropout on, batch statistics); call model.eval() first, or pass "
                      f"mode='train' if that is meant", ModeWarning, stacklevel=2)
    if data_parallel and optimizer is None:
        raise OptimizerError("data_parallel=True averages gradients: it needs an optimizer (an inference plan "
                             "runs on each process as it is)")
    if bucket_bytes is not None and (not data_parallel or isinstance(bucket_bytes, bool)
                                     or not isinstance(bucket_bytes, int) or bucket_bytes < 1):
        raise GraphnetError(f"bucket_bytes must be a positive int and goes with data_parallel=True, got {bucket_bytes!r}")
    buckets = (bucket_bytes or DEFAULT_BUCKET_BYTES) if data_parallel else None  # 0: sized from the model
    graph, plan, records = run_to_plan(source, default_pipeline(optimizer, mode, passes, bucket_bytes=buckets))
    described = None if optimizer is None else {"name": optimizer.name, "hyper": optimizer.hyperparams(),
                                                 "structure": optimizer.structure()}
    plan = finish_plan(plan, records, mode=plan_mode(switches, mode), dims=dim_constraints(source, mode),
                       optimizer=described)
    if seed is None:
        seed = next_plan_seed()
    if data_parallel:  # each process its own dropout masks
        seed += distributed.rank()
    executor = executor_cls(plan, seed, check_numerics, variables=bind_variables(plan, graph))
    compiled = CompiledPlan(plan, graph, executor, optimizer, source, mode=mode, passes=passes,
                            bucket_bytes=buckets)
    if data_parallel:
        replicas.synchronize(compiled)
    if config.flags.debug >= 1:
        if plan.mode:
            print(f"mode: {plan.mode}")
        # the passes were printed as they ran; the rest of the report: groups, kernels, codegen
        print(str(compiled.report).split("\n", len(records) + 1)[-1])
    if config.flags.debug >= 3:
        print(plan)
    return compiled
