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

from typing import Any

from graphnet.errors import OptimizerError

from .optimizer import Optimizer, check_number, register

__all__ = ["RMSprop"]


@register
class RMSprop(Optimizer):
    """``RMSprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False)``.

    State: ``square_avg``, plus ``momentum_buffer`` when ``momentum`` is
    non-zero and ``grad_avg`` when ``centered``.
    """

    name = "rmsprop"

    def __init__(
        self,
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

    def update(self, xp: Any, param: Any, grad: Any, state: dict[str, Any], step: int) -> None:
        lr = float(self.lr)
        alpha = float(self.alpha)
        eps = float(self.eps)
        weight_decay = float(self.weight_decay)
        momentum = float(self.momentum)
        square_avg = self._state(state, "square_avg")

        g = grad
        if weight_decay != 0:
            g = xp.multiply(param, weight_decay)  # g = grad + wd * p, in a fresh array
            g += grad
        tmp = xp.multiply(g, g)
        tmp *= 1.0 - alpha
        square_avg *= alpha
        square_avg += tmp
        if self.centered:
            grad_avg = self._state(state, "grad_avg")
            xp.multiply(g, 1.0 - alpha, out=tmp)
            grad_avg *= alpha
            grad_avg += tmp
            xp.multiply(grad_avg, grad_avg, out=tmp)
            xp.subtract(square_avg, tmp, out=tmp)
            # Mathematically >= 0; clamp so rounding cannot give sqrt(-tiny) = NaN.
            xp.maximum(tmp, 0.0, out=tmp)
            xp.sqrt(tmp, out=tmp)
        else:
            xp.sqrt(square_avg, out=tmp)
        tmp += eps
        xp.divide(g, tmp, out=tmp)  # g / denom
        if momentum != 0:
            buf = self._state(state, "momentum_buffer")
            buf *= momentum
            buf += tmp
            xp.multiply(buf, lr, out=tmp)
        else:
            tmp *= lr
        param -= tmp
