"""Learning-rate schedules, like ``torch.optim.lr_scheduler``: one rate per parameter group.

A schedule captures one base rate per parameter group when built (``base_lrs``: each
group's own ``"lr"``, else ``optimizer.lr``; one rate when the optimizer has no groups) and
immediately sets the rates for epoch 0 (``last_epoch`` becomes 0). Each
:meth:`LRScheduler.step` advances ``last_epoch`` by one and sets every group's rate
(``group["lr"]``; ``optimizer.lr`` when there are no groups) from that group's base rate,
in closed form, as PyTorch scales each group from its own ``initial_lr``. Call ``step()``
after the training step(s) of an epoch (or after every update, for per-step schedules such
as :class:`OneCycleLR`), as in PyTorch. ``get_last_lr()`` lists the rates the last step set,
one per group.

:class:`ReduceLROnPlateau` is the exception: it reads a metric (``step(val_loss)``) and
divides the current rates when the metric stops improving.

``state_dict()`` returns plain data (no callables); ``load_state_dict`` restores it and
sets the optimizer's rates to the restored last rates. State saved before schedules knew
groups (one ``base_lr`` and one ``last_lr``) still loads.

To write your own schedule, subclass :class:`LRScheduler` and implement
``lr_at(epoch, base_lr) -> float`` (the rate at ``epoch`` of a group whose base rate is
``base_lr``), or ``lrs_at(epoch) -> list[float]`` for schedules that treat groups
differently; list extra plain-data fields in ``_state_fields``. An older ``lr_at(epoch)``
that reads ``self.base_lr`` still works: it is called once per group with ``base_lr`` set
to that group's base rate.
"""

from __future__ import annotations

import bisect
import inspect
import math
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

from graphnet.errors import OptimizerError

__all__ = [
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LambdaLR",
    "LinearLR",
    "PolynomialLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "SequentialLR",
    "ReduceLROnPlateau",
]


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not _is_int_scalar(value) or int(value) <= 0:
        raise OptimizerError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _non_negative_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not _is_int_scalar(value) or int(value) < 0:
        raise OptimizerError(f"{owner}: {name} must be a non-negative integer, got {value!r}")
    return int(value)


def _is_int_scalar(value: Any) -> bool:
    return getattr(value, "shape", None) == () and getattr(getattr(value, "dtype", None), "kind", "") in "iu"


def _real(owner: str, name: str, value: Any, *, low: float | None = None, low_open: bool = False,
          high: float | None = None, high_open: bool = False) -> float:
    if isinstance(value, (bool, str)):
        raise OptimizerError(f"{owner}: {name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise OptimizerError(f"{owner}: {name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise OptimizerError(f"{owner}: {name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise OptimizerError(f"{owner}: {name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise OptimizerError(f"{owner}: {name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


# --- the optimizer's parameter groups ---------------------------------------------------------

def _groups(optimizer: Any) -> list[dict[str, Any]]:
    return list(getattr(optimizer, "param_groups", None) or [])


def _group_value(optimizer: Any, index: int, key: str) -> Any:
    """Group ``index``'s own value of ``key``, else the optimizer's (the optimizer's without groups)."""
    groups = _groups(optimizer)
    if not groups:
        return getattr(optimizer, key)
    return groups[index].get(key, getattr(optimizer, key))


def _group_count(optimizer: Any) -> int:
    """How many rates a schedule keeps: one per parameter group, one without groups."""
    return max(len(_groups(optimizer)), 1)


def _current_lrs(owner: str, optimizer: Any) -> list[float]:
    return [_real(owner, "optimizer.lr" if not _groups(optimizer) else f"param_groups[{i}]['lr']",
                  _group_value(optimizer, i, "lr"), low=0.0) for i in range(_group_count(optimizer))]


def _set_group_value(optimizer: Any, index: int, key: str, value: Any) -> None:
    groups = _groups(optimizer)
    if groups:
        groups[index][key] = value
    else:
        setattr(optimizer, key, value)


def _set_lrs(optimizer: Any, lrs: Sequence[float]) -> None:
    for i, lr in enumerate(lrs):
        _set_group_value(optimizer, i, "lr", lr)


def _per_group(owner: str, name: str, value: Any, count: int, **bounds: Any) -> list[float]:
    """``value`` (a number, or a list with one number per group) as one float per group."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise OptimizerError(f"{owner}: expected {count} values of {name} (one per parameter group), "
                                 f"got {len(value)}")
        return [_real(owner, f"{name}[{i}]", v, **bounds) for i, v in enumerate(value)]
    return [_real(owner, name, value, **bounds)] * count


def _check_optimizer(owner: str, optimizer: Any) -> None:
    if not hasattr(optimizer, "lr"):
        raise OptimizerError(f"{owner}: expected an optimizer with an 'lr' attribute, got {optimizer!r}")


class LRScheduler:
    """Base class: sets each group's rate to ``lrs_at(last_epoch)`` on every :meth:`step`."""

    #: extra attributes saved by :meth:`state_dict` (besides base_lrs, last_epoch, last_lr)
    _state_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, optimizer: Any) -> None:
        name = type(self).__name__
        _check_optimizer(name, optimizer)
        self.optimizer = optimizer
        self.base_lrs: list[float] = _current_lrs(name, optimizer)
        self.last_epoch: int = -1
        self._last_lr: list[float] = list(self.base_lrs)
        self.step()

    # -- the rates --------------------------------------------------------

    @property
    def base_lr(self) -> float:
        """The base rate of the group being computed (inside an ``lr_at(epoch)`` that takes
        no ``base_lr``), else of the first group."""
        return self.__dict__.get("_base_override", self.base_lrs[0])

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        """The rate at ``epoch`` (0-based) of a group whose base rate is ``base_lr``
        (default: the first group's), in closed form."""
        raise NotImplementedError

    def lrs_at(self, epoch: int) -> list[float]:
        """The rate of every group at ``epoch``."""
        if "base_lr" in inspect.signature(self.lr_at).parameters:
            return [float(self.lr_at(epoch, base)) for base in self.base_lrs]
        rates = []  # a subclass's lr_at(epoch) reads self.base_lr: once per group
        try:
            for base in self.base_lrs:
                self.__dict__["_base_override"] = base
                rates.append(float(self.lr_at(epoch)))
        finally:
            self.__dict__.pop("_base_override", None)
        return rates

    def _apply(self, epoch: int) -> list[float]:
        """Set the optimizer to ``epoch``'s rates (and whatever else the schedule sets); return the rates."""
        lrs = self.lrs_at(epoch)
        if len(lrs) != _group_count(self.optimizer):
            raise OptimizerError(f"{type(self).__name__}: the schedule has {len(lrs)} rates but the optimizer "
                                 f"has {_group_count(self.optimizer)} parameter group(s); build it again")
        _set_lrs(self.optimizer, lrs)
        return lrs

    def step(self) -> float:
        """Advance one epoch and set every group's rate; returns the first group's."""
        lrs = self._apply(self.last_epoch + 1)
        self.last_epoch += 1
        self._last_lr = list(lrs)
        return lrs[0]

    def get_last_lr(self) -> list[float]:
        """The rates the last :meth:`step` set, one per parameter group (as in PyTorch)."""
        return list(self._last_lr)

    # -- saving -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": type(self).__name__,
            "base_lrs": list(self.base_lrs),
            "base_lr": self.base_lrs[0],  # as saved before schedules knew parameter groups
            "last_epoch": self.last_epoch,
            "last_lr": list(self._last_lr),
        }
        for key in self._state_fields:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def _check_state(self, state: Any, required: Iterable[str]) -> None:
        name = type(self).__name__
        if not isinstance(state, Mapping):
            raise OptimizerError(f"{name}.load_state_dict: expected a mapping, got {state!r}")
        if state.get("type", name) != name:
            raise OptimizerError(f"{name}.load_state_dict: state was saved by {state['type']}")
        missing = [k for k in required if k not in state]
        if missing:
            raise OptimizerError(f"{name}.load_state_dict: missing {missing}")

    def _rates_of(self, state: Mapping[str, Any], key: str, old_key: str | None = None) -> list[float]:
        """A list of per-group rates from ``state[key]`` (or the one rate ``state[old_key]``
        saved before groups, for every group)."""
        name = type(self).__name__
        count = _group_count(self.optimizer)
        value = state[key] if key in state else state[old_key] if old_key is not None else None
        if not isinstance(value, (list, tuple)):
            value = [value] * count
        if len(value) != count:
            raise OptimizerError(f"{name}.load_state_dict: the state has {len(value)} rate(s) in {key!r} but the "
                                 f"optimizer has {count} parameter group(s)")
        return [_real(f"{name}.load_state_dict", key, v, low=0.0) for v in value]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, ("last_epoch", "last_lr", *self._state_fields))
        if "base_lrs" not in state and "base_lr" not in state:
            raise OptimizerError(f"{type(self).__name__}.load_state_dict: missing ['base_lrs']")
        base_lrs = self._rates_of(state, "base_lrs", "base_lr")
        last_lr = self._rates_of(state, "last_lr")
        self.base_lrs = base_lrs
        self.last_epoch = int(state["last_epoch"])
        self._last_lr = last_lr
        for key in self._state_fields:
            value = state[key]
            setattr(self, key, tuple(value) if isinstance(value, list) else value)
        _set_lrs(self.optimizer, self._last_lr)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._state_fields)
        sep = ", " if fields else ""
        return f"{type(self).__name__}({fields}{sep}base_lrs={self.base_lrs!r}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``."""

    _state_fields = ("step_size", "gamma")

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _positive_int("StepLR", "step_size", step_size)
        self.gamma = _real("StepLR", "gamma", gamma, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        return base * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """``lr = base_lr * gamma ** (number of milestones <= epoch)`` (repeats count twice)."""

    _state_fields = ("milestones", "gamma")

    def __init__(self, optimizer: Any, milestones: Iterable[int], gamma: float = 0.1) -> None:
        try:
            ms = list(milestones)
        except TypeError:
            raise OptimizerError(f"MultiStepLR: milestones must be a list of integers, got {milestones!r}") from None
        for m in ms:
            if isinstance(m, bool) or not (isinstance(m, int) or _is_int_scalar(m)) or int(m) < 0:
                raise OptimizerError(f"MultiStepLR: milestones must be non-negative integers, got {milestones!r}")
        self.milestones: tuple[int, ...] = tuple(sorted(int(m) for m in ms))
        self.gamma = _real("MultiStepLR", "gamma", gamma, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        return base * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class ExponentialLR(LRScheduler):
    """``lr = base_lr * gamma ** epoch``."""

    _state_fields = ("gamma",)

    def __init__(self, optimizer: Any, gamma: float) -> None:
        self.gamma = _real("ExponentialLR", "gamma", gamma, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        return base * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    Beyond ``T_max`` the closed form keeps going (it rises again), as in PyTorch.
    """

    _state_fields = ("T_max", "eta_min")

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = _real("CosineAnnealingLR", "eta_min", eta_min, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        return self.eta_min + (base - self.eta_min) * (1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``; ``lr_lambda`` may be a list with one function per
    parameter group. The functions themselves are not saved by ``state_dict``."""

    def __init__(self, optimizer: Any, lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]]) -> None:
        _check_optimizer("LambdaLR", optimizer)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != _group_count(optimizer):
                raise OptimizerError(f"LambdaLR: expected {_group_count(optimizer)} lr_lambdas (one per parameter "
                                     f"group), got {len(lr_lambda)}")
            lambdas = list(lr_lambda)
        else:
            lambdas = [lr_lambda] * _group_count(optimizer)
        for f in lambdas:
            if not callable(f):
                raise OptimizerError(f"LambdaLR: lr_lambda must be callable, got {f!r}")
        self.lr_lambda = lr_lambda
        self.lr_lambdas = lambdas
        super().__init__(optimizer)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        return base * float(self.lr_lambdas[0](epoch))

    def lrs_at(self, epoch: int) -> list[float]:
        return [base * float(f(epoch)) for base, f in zip(self.base_lrs, self.lr_lambdas)]


class LinearLR(LRScheduler):
    """Linear warm-up (or decay) of a factor, as ``torch.optim.lr_scheduler.LinearLR``:

    ``lr = base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters)``.
    Unlike PyTorch, ``start_factor`` may be 0 (warm-up from zero).
    """

    _state_fields = ("start_factor", "end_factor", "total_iters")

    def __init__(
        self, optimizer: Any, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
    ) -> None:
        self.start_factor = _real("LinearLR", "start_factor", start_factor, low=0.0)
        self.end_factor = _real("LinearLR", "end_factor", end_factor, low=0.0)
        self.total_iters = _positive_int("LinearLR", "total_iters", total_iters)
        super().__init__(optimizer)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        frac = min(epoch, self.total_iters) / self.total_iters
        return base * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class PolynomialLR(LRScheduler):
    """``lr = base_lr * (1 - min(epoch, total_iters) / total_iters) ** power``, as
    ``torch.optim.lr_scheduler.PolynomialLR`` (0 from ``total_iters`` on, for ``power > 0``)."""

    _state_fields = ("total_iters", "power")

    def __init__(self, optimizer: Any, total_iters: int = 5, power: float = 1.0) -> None:
        self.total_iters = _positive_int("PolynomialLR", "total_iters", total_iters)
        self.power = _real("PolynomialLR", "power", power, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        return base * (1.0 - min(self.total_iters, epoch) / self.total_iters) ** self.power


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing restarted every ``T_i`` epochs (SGDR), as
    ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``:
    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``, where the first
    period is ``T_0`` epochs, each next one ``T_mult`` times longer, and ``T_cur`` counts the
    epochs since the last restart. ``step()`` advances one whole epoch (PyTorch's fractional
    ``step(epoch)`` is not offered)."""

    _state_fields = ("T_0", "T_mult", "eta_min")

    def __init__(self, optimizer: Any, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> None:
        self.T_0 = _positive_int("CosineAnnealingWarmRestarts", "T_0", T_0)
        self.T_mult = _positive_int("CosineAnnealingWarmRestarts", "T_mult", T_mult)
        self.eta_min = _real("CosineAnnealingWarmRestarts", "eta_min", eta_min, low=0.0)
        super().__init__(optimizer)

    def period(self, epoch: int) -> tuple[int, int]:
        """``(T_cur, T_i)`` at ``epoch``: the epochs since the last restart and the current period."""
        if self.T_mult == 1:
            return epoch % self.T_0, self.T_0
        t_cur, t_i = epoch, self.T_0
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= self.T_mult
        return t_cur, t_i

    @property
    def T_cur(self) -> int:
        return self.period(max(self.last_epoch, 0))[0]

    @property
    def T_i(self) -> int:
        return self.period(max(self.last_epoch, 0))[1]

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        t_cur, t_i = self.period(epoch)
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def _momentum_key(optimizer: Any) -> str:
    """The hyperparameter OneCycleLR cycles: ``betas`` (its first entry) if the optimizer has
    them, else ``momentum``, as PyTorch chooses."""
    if hasattr(optimizer, "betas"):
        return "betas"
    if hasattr(optimizer, "momentum"):
        return "momentum"
    raise OptimizerError(f"OneCycleLR: {type(optimizer).__name__} has neither betas nor momentum to cycle; "
                         f"pass cycle_momentum=False")


class OneCycleLR(LRScheduler):
    """The 1cycle policy, as ``torch.optim.lr_scheduler.OneCycleLR``; step it after every batch.

    ``OneCycleLR(optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
    pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
    max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False)``.

    The rate rises from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of
    ``total_steps`` (or ``epochs * steps_per_epoch``) steps, then falls to
    ``max_lr / div_factor / final_div_factor``; ``three_phase`` comes back down to the
    initial rate symmetrically before that last fall. ``max_lr``, ``base_momentum`` and
    ``max_momentum`` may be lists with one value per parameter group. With
    ``cycle_momentum`` the momentum moves the other way, between ``max_momentum`` and
    ``base_momentum``: ``betas[0]`` for optimizers with ``betas`` (Adam), else ``momentum``
    (SGD, RMSprop); an optimizer with neither raises :class:`OptimizerError` (pass
    ``cycle_momentum=False``), as PyTorch does. Build it before compiling when it gives an
    SGD or RMSprop of momentum 0 a momentum (that changes the update's graph). Stepping past
    ``total_steps`` raises. Unlike PyTorch, the rate is never negative: at step
    ``total_steps`` a linear anneal would go on below the final rate (and below 0, where
    PyTorch gives a negative rate); it stops at 0.
    """

    _state_fields = ("total_steps", "pct_start", "anneal_strategy", "cycle_momentum", "div_factor",
                     "final_div_factor", "three_phase", "max_lrs", "initial_lrs", "min_lrs", "max_momentums",
                     "base_momentums")

    def __init__(
        self,
        optimizer: Any,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.85,
        max_momentum: float | Sequence[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
    ) -> None:
        name = "OneCycleLR"
        _check_optimizer(name, optimizer)
        if total_steps is not None:
            self.total_steps = _positive_int(name, "total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_positive_int(name, "epochs", epochs)
                                * _positive_int(name, "steps_per_epoch", steps_per_epoch))
        else:
            raise OptimizerError(f"{name}: give either total_steps or both epochs and steps_per_epoch")
        self.pct_start = _real(name, "pct_start", pct_start, low=0.0, high=1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise OptimizerError(f"{name}: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        for key, flag in (("cycle_momentum", cycle_momentum), ("three_phase", three_phase)):
            if not isinstance(flag, bool):
                raise OptimizerError(f"{name}: {key} must be a bool, got {flag!r}")
        self.cycle_momentum = cycle_momentum
        self.three_phase = three_phase
        self.div_factor = _real(name, "div_factor", div_factor, low=0.0, low_open=True)
        self.final_div_factor = _real(name, "final_div_factor", final_div_factor, low=0.0, low_open=True)
        count = _group_count(optimizer)
        self.max_lrs = _per_group(name, "max_lr", max_lr, count, low=0.0)
        self.initial_lrs = [m / self.div_factor for m in self.max_lrs]
        self.min_lrs = [i / self.final_div_factor for i in self.initial_lrs]
        self.max_momentums: list[float] = []
        self.base_momentums: list[float] = []
        if cycle_momentum:
            self.max_momentums = _per_group(name, "max_momentum", max_momentum, count, low=0.0)
            self.base_momentums = _per_group(name, "base_momentum", base_momentum, count, low=0.0)
            if _momentum_key(optimizer) == "betas":  # (raises for an optimizer without momentum)
                for m in self.max_momentums + self.base_momentums:
                    if m >= 1.0:
                        raise OptimizerError(f"{name}: momentums cycle beta1, which must be < 1, got {m!r}")
        super().__init__(optimizer)
        self.base_lrs = list(self.initial_lrs)

    def _phases(self) -> list[tuple[float, str, str, str, str]]:
        """(end step, start rate, end rate, start momentum, end momentum) of each phase, as PyTorch."""
        total, pct = self.total_steps, self.pct_start
        if self.three_phase:
            return [(float(pct * total) - 1, "initial", "max", "max_m", "base_m"),
                    (float(2 * pct * total) - 2, "max", "initial", "base_m", "max_m"),
                    (total - 1, "initial", "min", "max_m", "max_m")]
        return [(float(pct * total) - 1, "initial", "max", "max_m", "base_m"),
                (total - 1, "max", "min", "base_m", "max_m")]

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, step: int) -> tuple[list[float], list[float]]:
        """The rates and momentums of every group at ``step``."""
        if step > self.total_steps:
            raise OptimizerError(f"OneCycleLR: tried to step {step} times; total_steps is {self.total_steps}")
        phases = self._phases()
        start_step = 0.0
        for i, (end_step, start_lr, end_lr, start_m, end_m) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                if end_step == start_step:
                    raise OptimizerError(f"OneCycleLR: step {step} falls in a phase of no steps (total_steps="
                                         f"{self.total_steps}, pct_start={self.pct_start}): PyTorch divides by "
                                         f"zero here; use more steps or another pct_start")
                pct = (step - start_step) / (end_step - start_step)
                break
            start_step = end_step
        lrs, momentums = [], []
        for g in range(len(self.max_lrs)):
            values = {"initial": self.initial_lrs[g], "max": self.max_lrs[g], "min": self.min_lrs[g]}
            # at step total_steps (the step() after the last batch) a linear anneal goes on below
            # the final rate, below 0 where PyTorch gives a negative rate: 0 here
            lrs.append(max(self._anneal(values[start_lr], values[end_lr], pct), 0.0))
            if self.cycle_momentum:
                m = {"max_m": self.max_momentums[g], "base_m": self.base_momentums[g]}
                momentums.append(self._anneal(m[start_m], m[end_m], pct))
        return lrs, momentums

    def lrs_at(self, epoch: int) -> list[float]:
        return self._at(epoch)[0]

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        return self._at(epoch)[0][0]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.cycle_momentum and self.last_epoch >= 0:
            self._apply(self.last_epoch)  # the momentum of the restored step too

    def momentums_at(self, step: int) -> list[float]:
        """The momentum (or beta1) of every group at ``step``; empty without ``cycle_momentum``."""
        return self._at(step)[1]

    def _apply(self, epoch: int) -> list[float]:
        lrs, momentums = self._at(epoch)
        if len(lrs) != _group_count(self.optimizer):
            raise OptimizerError(f"OneCycleLR: the schedule has {len(lrs)} rates but the optimizer has "
                                 f"{_group_count(self.optimizer)} parameter group(s); build it again")
        _set_lrs(self.optimizer, lrs)
        if momentums:
            key = _momentum_key(self.optimizer)
            for g, m in enumerate(momentums):
                if key == "betas":
                    betas = _group_value(self.optimizer, g, "betas")
                    _set_group_value(self.optimizer, g, "betas", (m, *tuple(betas)[1:]))
                else:
                    _set_group_value(self.optimizer, g, "momentum", m)
        return lrs


class SequentialLR(LRScheduler):
    """Schedules one after another, as ``torch.optim.lr_scheduler.SequentialLR``:
    ``schedulers[i]`` runs from ``milestones[i - 1]`` (from 0 for the first), restarted at its
    own epoch 0 there.

    The schedulers must drive this optimizer. Each was built (and stepped once) before this
    one; as in PyTorch, every one of them schedules from the rates the optimizer had before
    the first of them changed them (PyTorch's ``initial_lr``: the first scheduler's base
    rates), so ``SequentialLR(opt, [LinearLR(opt, 0.1), CosineAnnealingLR(opt, 10)], [5])``
    anneals from the full rate, not from the warm-up's first one.
    ``ReduceLROnPlateau`` cannot be one of them (its steps need a metric).
    """

    def __init__(self, optimizer: Any, schedulers: Sequence[LRScheduler], milestones: Sequence[int]) -> None:
        name = "SequentialLR"
        _check_optimizer(name, optimizer)
        if isinstance(schedulers, LRScheduler) or not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise OptimizerError(f"{name}: schedulers must be a non-empty list of schedules, got {schedulers!r}")
        for i, s in enumerate(schedulers):
            if isinstance(s, ReduceLROnPlateau):
                raise OptimizerError(f"{name}: ReduceLROnPlateau (schedulers[{i}]) cannot be sequenced: its "
                                     f"steps need a metric")
            if not isinstance(s, LRScheduler):
                raise OptimizerError(f"{name}: schedulers[{i}] is {s!r}, not a schedule")
            if s.optimizer is not optimizer:
                raise OptimizerError(f"{name}: schedulers[{i}] ({type(s).__name__}) drives another optimizer")
        try:
            ms = list(milestones)
        except TypeError:
            raise OptimizerError(f"{name}: milestones must be a list of integers, got {milestones!r}") from None
        if len(ms) != len(schedulers) - 1:
            raise OptimizerError(f"{name}: expected {len(schedulers) - 1} milestone(s) for {len(schedulers)} "
                                 f"schedulers, got {len(ms)}")
        ms = [_non_negative_int(name, "milestones", m) for m in ms]
        if ms != sorted(ms):
            raise OptimizerError(f"{name}: milestones must be in increasing order, got {milestones!r}")
        self.schedulers = list(schedulers)
        self.milestones: tuple[int, ...] = tuple(ms)
        initial = list(self.schedulers[0].base_lrs)
        for s in self.schedulers:
            if not isinstance(s, (OneCycleLR, SequentialLR)):  # those set their own rates from max_lr
                s.base_lrs = list(initial)
            s.last_epoch = -1  # each starts when its turn comes (PyTorch undoes their first steps)
        self.optimizer = optimizer
        self.base_lrs = list(initial)
        self.last_epoch = -1
        self._last_lr = list(initial)
        self.step()

    def _child(self, epoch: int) -> tuple[LRScheduler, int]:
        index = bisect.bisect_right(self.milestones, epoch)
        return self.schedulers[index], epoch - (self.milestones[index - 1] if index else 0)

    def lrs_at(self, epoch: int) -> list[float]:
        child, local = self._child(epoch)
        return child.lrs_at(local)

    def _apply(self, epoch: int) -> list[float]:
        child, local = self._child(epoch)
        lrs = child._apply(local)
        child.last_epoch = local
        child._last_lr = list(lrs)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["milestones"] = list(self.milestones)
        out["schedulers"] = [s.state_dict() for s in self.schedulers]
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, ("schedulers", "milestones"))
        saved = state["schedulers"]
        if not isinstance(saved, list) or len(saved) != len(self.schedulers):
            raise OptimizerError(f"SequentialLR.load_state_dict: expected {len(self.schedulers)} schedulers' states")
        for s, sd in zip(self.schedulers, saved):
            s.load_state_dict(sd)
        self.milestones = tuple(int(m) for m in state["milestones"])
        super().load_state_dict(state)


class ReduceLROnPlateau(LRScheduler):
    """Divide the rates when a metric stops improving, as ``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    ``ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
    threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8)``; call ``step(metric)`` once per
    epoch with the monitored value (validation loss). A value better than the best so far
    (``mode="min"``: below ``best * (1 - threshold)``, or ``best - threshold`` with
    ``threshold_mode="abs"``; ``"max"`` mirrors it) resets the count of bad epochs; when the
    count exceeds ``patience`` every group's rate becomes ``max(lr * factor, min_lr)``
    (unless that changes it by no more than ``eps``), then ``cooldown`` epochs pass
    before bad epochs count again. ``min_lr`` may be a list, one per parameter group.
    Building it changes no rate.
    """

    _state_fields = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs", "eps",
                     "best", "num_bad_epochs", "cooldown_counter")
    #: ``step`` takes the monitored value (``gn.train.fit`` passes the epoch's validation loss)
    takes_metric = True

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float | Sequence[float] = 0.0, eps: float = 1e-8) -> None:
        name = "ReduceLROnPlateau"
        _check_optimizer(name, optimizer)
        if mode not in ("min", "max"):
            raise OptimizerError(f"{name}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise OptimizerError(f"{name}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.factor = _real(name, "factor", factor, low=0.0, high=1.0, high_open=True)
        self.patience = _non_negative_int(name, "patience", patience)
        self.threshold = _real(name, "threshold", threshold, low=0.0)
        self.cooldown = _non_negative_int(name, "cooldown", cooldown)
        self.min_lrs = _per_group(name, "min_lr", min_lr, _group_count(optimizer), low=0.0)
        self.eps = _real(name, "eps", eps, low=0.0)
        self.optimizer = optimizer
        self.base_lrs = _current_lrs(name, optimizer)
        self.last_epoch = 0
        self._last_lr = list(self.base_lrs)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def is_better(self, value: float, best: float) -> bool:
        if self.mode == "min":
            return value < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return value > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def lrs_at(self, epoch: int) -> list[float]:
        raise OptimizerError("ReduceLROnPlateau has no closed form: its rates follow the metrics given to step()")

    def step(self, metrics: Any = None) -> float:  # type: ignore[override]
        """Record one epoch's metric; divide the rates if it has not improved for ``patience`` epochs.
        Returns the first group's rate."""
        if metrics is None:
            raise OptimizerError("ReduceLROnPlateau.step needs the monitored metric: step(val_loss) (fit(schedule=...) "
                                 "steps without one: call it from on_epoch_end instead)")
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise OptimizerError(f"ReduceLROnPlateau.step: the metric must be a number, got {metrics!r}") from None
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in the cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _current_lrs("ReduceLROnPlateau", self.optimizer)
        return self._last_lr[0]

    def _reduce(self) -> None:
        count = _group_count(self.optimizer)
        if len(self.min_lrs) != count:
            raise OptimizerError(f"ReduceLROnPlateau: built for {len(self.min_lrs)} parameter group(s), the "
                                 f"optimizer has {count}")
        for i, old in enumerate(_current_lrs("ReduceLROnPlateau", self.optimizer)):
            new = max(old * self.factor, self.min_lrs[i])
            if old - new > self.eps:
                _set_group_value(self.optimizer, i, "lr", new)

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        for key in ("best",):  # JSON has no infinity: the best before any metric is saved as None
            if not math.isfinite(out[key]):
                out[key] = None
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.best is None:
            self.best = math.inf if self.mode == "min" else -math.inf
        self.best = float(self.best)
        self.min_lrs = list(self.min_lrs)
