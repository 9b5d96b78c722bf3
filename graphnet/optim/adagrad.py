"""Adagrad, as ``torch.optim.Adagrad``::

    clr = lr / (1 + (step - 1) * lr_decay)
    g = grad + weight_decay * p                       (if weight_decay)
    s = s + g * g                                     (s starts at initial_accumulator_value)
    p = p - clr * g / (sqrt(s) + eps)
"""

from __future__ import annotations

from typing import Any

from graphnet.errors import OptimizerError

from .optimizer import Optimizer, check_number, register

__all__ = ["Adagrad"]


@register
class Adagrad(Optimizer):
    """``Adagrad(lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10)``.

    State: ``sum`` (the running sum of squared gradients).
    """

    name = "adagrad"
    state_names = ("sum",)

    def __init__(
        self,
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

    def init_state(self, xp: Any, param: Any) -> dict[str, Any]:
        return {"sum": xp.full_like(param, float(self.initial_accumulator_value))}

    def update(self, xp: Any, param: Any, grad: Any, state: dict[str, Any], step: int) -> None:
        if step < 1:
            raise OptimizerError(f"{self._label()}: step counts from 1, got {step!r}")
        clr = float(self.lr) / (1.0 + (step - 1) * float(self.lr_decay))
        eps = float(self.eps)
        weight_decay = float(self.weight_decay)
        state_sum = self._state(state, "sum")

        g = grad
        if weight_decay != 0:
            g = xp.multiply(param, weight_decay)  # g = grad + wd * p, in a fresh array
            g += grad
        tmp = xp.multiply(g, g)
        state_sum += tmp
        xp.sqrt(state_sum, out=tmp)
        tmp += eps
        xp.divide(g, tmp, out=tmp)
        tmp *= clr
        param -= tmp
