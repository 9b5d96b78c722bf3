"""Learning-rate schedules that set ``optimizer.lr``, like ``torch.optim.lr_scheduler``.

A schedule captures ``base_lr = optimizer.lr`` when built and immediately sets
``optimizer.lr`` to the rate for epoch 0 (``last_epoch`` becomes 0). Each
:meth:`LRScheduler.step` advances ``last_epoch`` by one and sets
``optimizer.lr = lr_at(last_epoch)``, computed in closed form from
``base_lr``. Call ``step()`` after the training step(s) of an epoch (or after
every update, for per-step schedules), as in PyTorch.

``state_dict()`` returns plain data (no callables); ``load_state_dict`` restores
it and sets ``optimizer.lr`` to the restored last rate.

To write your own schedule, subclass :class:`LRScheduler` and implement
``lr_at(epoch) -> float``; list extra plain-data fields in ``_state_fields``.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Callable, ClassVar, Iterable, Mapping

from graphnet.errors import OptimizerError

__all__ = [
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LambdaLR",
    "LinearLR",
]


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not _is_int_scalar(value) or int(value) <= 0:
        raise OptimizerError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _is_int_scalar(value: Any) -> bool:
    return getattr(value, "shape", None) == () and getattr(getattr(value, "dtype", None), "kind", "") in "iu"


def _real(owner: str, name: str, value: Any, *, low: float | None = None, low_open: bool = False) -> float:
    if isinstance(value, bool):
        raise OptimizerError(f"{owner}: {name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise OptimizerError(f"{owner}: {name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise OptimizerError(f"{owner}: {name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise OptimizerError(f"{owner}: {name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    return v


class LRScheduler:
    """Base class: sets ``optimizer.lr = lr_at(last_epoch)`` on every :meth:`step`."""

    #: extra attributes saved by :meth:`state_dict` (besides base_lr, last_epoch, last_lr)
    _state_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, optimizer: Any) -> None:
        if not hasattr(optimizer, "lr"):
            raise OptimizerError(f"{type(self).__name__}: expected an optimizer with an 'lr' attribute, got {optimizer!r}")
        self.optimizer = optimizer
        self.base_lr: float = _real(type(self).__name__, "optimizer.lr", optimizer.lr, low=0.0)
        self.last_epoch: int = -1
        self._last_lr: float = self.base_lr
        self.step()

    def lr_at(self, epoch: int) -> float:
        """The learning rate for ``epoch`` (0-based), in closed form."""
        raise NotImplementedError

    def step(self) -> float:
        """Advance one epoch, set ``optimizer.lr`` and return it."""
        self.last_epoch += 1
        lr = float(self.lr_at(self.last_epoch))
        self.optimizer.lr = lr
        self._last_lr = lr
        return lr

    def get_last_lr(self) -> list[float]:
        """The rate set by the last :meth:`step`, as a one-element list (as in PyTorch)."""
        return [self._last_lr]

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": type(self).__name__,
            "base_lr": self.base_lr,
            "last_epoch": self.last_epoch,
            "last_lr": self._last_lr,
        }
        for key in self._state_fields:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        name = type(self).__name__
        if not isinstance(state, Mapping):
            raise OptimizerError(f"{name}.load_state_dict: expected a mapping, got {state!r}")
        if state.get("type", name) != name:
            raise OptimizerError(f"{name}.load_state_dict: state was saved by {state['type']}")
        missing = [k for k in ("base_lr", "last_epoch", "last_lr", *self._state_fields) if k not in state]
        if missing:
            raise OptimizerError(f"{name}.load_state_dict: missing {missing}")
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self._last_lr = float(state["last_lr"])
        for key in self._state_fields:
            value = state[key]
            setattr(self, key, tuple(value) if isinstance(value, list) else value)
        self.optimizer.lr = self._last_lr

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._state_fields)
        sep = ", " if fields else ""
        return f"{type(self).__name__}({fields}{sep}base_lr={self.base_lr!r}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``."""

    _state_fields = ("step_size", "gamma")

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _positive_int("StepLR", "step_size", step_size)
        self.gamma = _real("StepLR", "gamma", gamma, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


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

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class ExponentialLR(LRScheduler):
    """``lr = base_lr * gamma ** epoch``."""

    _state_fields = ("gamma",)

    def __init__(self, optimizer: Any, gamma: float) -> None:
        self.gamma = _real("ExponentialLR", "gamma", gamma, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    Beyond ``T_max`` the closed form keeps going (it rises again), as in PyTorch.
    """

    _state_fields = ("T_max", "eta_min")

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = _real("CosineAnnealingLR", "eta_min", eta_min, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``. The function itself is not saved by ``state_dict``."""

    def __init__(self, optimizer: Any, lr_lambda: Callable[[int], float]) -> None:
        if not callable(lr_lambda):
            raise OptimizerError(f"LambdaLR: lr_lambda must be callable, got {lr_lambda!r}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * float(self.lr_lambda(epoch))


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

    def lr_at(self, epoch: int) -> float:
        frac = min(epoch, self.total_iters) / self.total_iters
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)
