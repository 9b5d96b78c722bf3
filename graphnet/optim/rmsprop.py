"""RMSprop, as ``torch.optim.RMSprop``::

    g = grad + weight_decay * p                       (if weight_decay)
    v = alpha * v + (1 - alpha) * g * g
    denom = sqrt(v) + eps
    if centered:
        g_avg = alpha * g_avg + (1 - alpha) * g
        denom = sqrt(v - g_avg * g_avg) + eps
    if momentum:
        b = momentum * b + g / denom                  (b starts at zero)
        p = p - lr * b
    else:
        p = p - lr * g / denom
"""

from __future__ import annotations

from typing import Any, Mapping

from graphnet.ops import maximum, sqrt

from graphnet.errors import OptimizerError

from .optimizer import HyperParams, Optimizer, check_number, register, scalar

__all__ = ["RMSprop"]


@register
class RMSprop(Optimizer):
    """``RMSprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False)``.

    State: ``square_avg``, plus ``momentum_buffer`` when ``momentum`` is
    non-zero and ``grad_avg`` when ``centered``.
    """

    name = "rmsprop"
    structural_zeros = ("weight_decay", "momentum")

    def __init__(
        self,
        params: Any = None,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(
            lr,
            params=params,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            max_grad_norm=max_grad_norm,
        )

    @property
    def state_names(self) -> tuple[str, ...]:  # type: ignore[override]
        names: tuple[str, ...] = ("square_avg",)
        if self.momentum != 0:
            names += ("momentum_buffer",)
        if self.centered:
            names += ("grad_avg",)
        return names

    def validate(self) -> None:
        super().validate()
        label = self._label()
        check_number(label, "alpha", self.alpha, low=0.0, high=1.0)
        check_number(label, "eps", self.eps, low=0.0)
        check_number(label, "weight_decay", self.weight_decay, low=0.0)
        check_number(label, "momentum", self.momentum, low=0.0)
        if not isinstance(self.centered, bool):
            raise OptimizerError(f"{label}: centered must be a bool, got {self.centered!r}")

    def update(self, param: Any, grad: Any, state: Mapping[str, Any], step: Any,
               h: HyperParams) -> tuple[Any, dict[str, Any]]:
        alpha = h.alpha
        g = grad
        if self.weight_decay != 0:
            g = param * scalar(h.weight_decay, param) + grad
        square_avg = self._state(state, "square_avg") * scalar(alpha, param) + g * g * scalar(1.0 - alpha, param)
        new_state = {"square_avg": square_avg}
        if self.centered:
            grad_avg = self._state(state, "grad_avg") * scalar(alpha, param) + g * scalar(1.0 - alpha, param)
            new_state["grad_avg"] = grad_avg
            # mathematically >= 0; clamp so rounding cannot give sqrt(-tiny) = NaN
            denom = sqrt(maximum(square_avg - grad_avg * grad_avg, 0.0))
        else:
            denom = sqrt(square_avg)
        scaled = g / (denom + scalar(h.eps, param))
        if self.momentum != 0:
            buf = self._state(state, "momentum_buffer") * scalar(h.momentum, param) + scaled
            new_state["momentum_buffer"] = buf
            scaled = buf
        return param - scaled * scalar(h.lr, param), new_state
