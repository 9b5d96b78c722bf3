"""Adagrad, as ``torch.optim.Adagrad``::

    clr = lr / (1 + (step - 1) * lr_decay)
    g = grad + weight_decay * p                       (if weight_decay)
    s = s + g * g                                     (s starts at initial_accumulator_value)
    p = p - clr * g / (sqrt(s) + eps)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from graphnet.ops import sqrt


from .optimizer import HyperParams, Optimizer, check_number, register, scalar

__all__ = ["Adagrad"]


@register
class Adagrad(Optimizer):
    """``Adagrad(lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10)``.

    State: ``sum`` (the running sum of squared gradients).
    """

    name = "adagrad"
    structural_zeros = ("weight_decay",)
    state_names = ("sum",)

    def __init__(
        self,
        params: Any = None,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(
            lr,
            params=params,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            max_grad_norm=max_grad_norm,
        )

    def validate(self) -> None:
        super().validate()
        label = self._label()
        check_number(label, "lr_decay", self.lr_decay, low=0.0)
        check_number(label, "weight_decay", self.weight_decay, low=0.0)
        check_number(label, "initial_accumulator_value", self.initial_accumulator_value, low=0.0)
        check_number(label, "eps", self.eps, low=0.0)

    def init_state(self, param: Any) -> dict[str, Any]:
        return {"sum": np.full_like(param, float(self.initial_accumulator_value))}

    def update(self, param: Any, grad: Any, state: Mapping[str, Any], step: Any,
               h: HyperParams) -> tuple[Any, dict[str, Any]]:
        clr = h.lr / (1.0 + (step - 1.0) * h.lr_decay)
        g = grad
        if self.weight_decay != 0:
            g = param * scalar(h.weight_decay, param) + grad
        state_sum = self._state(state, "sum") + g * g
        return param - g / (sqrt(state_sum) + scalar(h.eps, param)) * scalar(clr, param), {"sum": state_sum}
