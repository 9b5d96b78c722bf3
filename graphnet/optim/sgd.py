"""Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.

Follows ``torch.optim.SGD``::

    g = grad + weight_decay * p                       (if weight_decay)
    if momentum:
        b = g                          at step 1
        b = momentum * b + (1 - dampening) * g        afterwards
        g = g + momentum * b  if nesterov  else  b
    p = p - lr * g
"""

from __future__ import annotations

from typing import Any, Mapping

from graphnet.ops import where

from graphnet.errors import OptimizerError

from .optimizer import HyperParams, Optimizer, check_number, register, scalar

__all__ = ["SGD"]


@register
class SGD(Optimizer):
    """``SGD(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False)``.

    State: ``momentum_buffer`` (only when ``momentum`` is non-zero).
    """

    name = "sgd"
    structural_zeros = ("momentum", "weight_decay")

    def __init__(
        self,
        params: Any = None,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(
            lr,
            params=params,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            max_grad_norm=max_grad_norm,
        )

    @property
    def state_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def validate(self) -> None:
        super().validate()
        label = self._label()
        check_number(label, "momentum", self.momentum, low=0.0)
        check_number(label, "dampening", self.dampening, low=0.0, high=1.0)
        check_number(label, "weight_decay", self.weight_decay, low=0.0)
        if not isinstance(self.nesterov, bool):
            raise OptimizerError(f"{label}: nesterov must be a bool, got {self.nesterov!r}")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise OptimizerError(
                f"{label}: nesterov momentum requires momentum > 0 and dampening == 0 "
                f"(got momentum={self.momentum!r}, dampening={self.dampening!r})"
            )

    def update(self, param: Any, grad: Any, state: Mapping[str, Any], step: Any,
               h: HyperParams) -> tuple[Any, dict[str, Any]]:
        g = grad
        if self.weight_decay != 0:
            g = param * scalar(h.weight_decay, param) + grad
        new_state = {}
        if self.momentum != 0:
            buf = self._state(state, "momentum_buffer")
            # the buffer starts as the first gradient: at step 1 the old buffer (zeros) is ignored
            first = step <= 1.0
            keep = scalar(where(first, 0.0, h.momentum), param)
            fresh = scalar(where(first, 1.0, 1.0 - h.dampening), param)
            buf = buf * keep + g * fresh
            new_state["momentum_buffer"] = buf
            g = g + buf * scalar(h.momentum, param) if self.nesterov else buf
        return param - g * scalar(h.lr, param), new_state
