"""Counting a module's training steps in its state (BatchNorm's ``num_batches_tracked``)."""

from __future__ import annotations

from typing import Any

from .. import dtypes
from ..errors import ShapeError
from ..ir import TensorType
from ..modes import ModeSwitch
from ..tensor import Tensor
from .common import declare
from .registry import defop


def _infer(x: TensorType, counter: TensorType, *, training: Any) -> TensorType:
    if counter.ndim != 0 or not dtypes.is_int(counter.dtype):
        raise ShapeError(f"count_batches counts in an integer scalar, got {counter}")
    if not isinstance(training, (bool, ModeSwitch)):
        raise ShapeError(f"training must be a bool or a module's mode, got {training!r}")
    return x


def _state_updates(outs: tuple[Tensor, ...], ins: tuple[Tensor, ...], *, training: Any) -> list[tuple[Tensor, Tensor]]:
    """One more batch seen, in training mode only (as PyTorch counts ``num_batches_tracked``)."""
    if training is not True:
        return []
    counter = ins[1]
    return [(counter, counter + 1)]


defop("count_batches", attrs={"training": "mode"}, category="layout", views=((0, 0),), infer=_infer,
      kernel=lambda xp, x, counter, training: x, grad=lambda g, out, ins, training: (g, None),
      state_updates=_state_updates,
      doc="``x`` itself; in training mode the run adds one to ``counter`` (an effect, after the step).")


def count_batches(x: Tensor, counter: Tensor, training: Any) -> Tensor:
    """``x``, counting one batch into the integer scalar variable ``counter`` at each run in
    training mode (``training``: a bool or a module's mode switch)."""
    return declare("count_batches", [x, counter], {"training": training})
