"""The optimizer-update op: a side effect the executor carries out with the plan's optimizer."""

from __future__ import annotations

from ..ir import TensorType
from .registry import defop


def _update_infer(param: TensorType, grad: TensorType) -> TensorType:
    return param


# No xp kernel: the update rule belongs to the optimizer (graphnet.optim), which the
# executor calls in place on the parameter and its state buffers.
defop("update", infer=_update_infer, kernel=None, effect=True,
      doc="Apply the plan's optimizer to a parameter (input 0) with its gradient (input 1).")
