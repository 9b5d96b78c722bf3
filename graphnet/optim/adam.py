"""Adam (L2 weight decay) and AdamW (decoupled weight decay), as ``torch.optim``::

    p = p * (1 - lr * weight_decay)                   (AdamW only)
    g = grad + weight_decay * p                       (Adam only, if weight_decay)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    v_max = max(v_max, v)                             (amsgrad)
    m_hat = m / (1 - beta1 ** step)
    v_hat = (v_max if amsgrad else v) / (1 - beta2 ** step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
"""

from __future__ import annotations

import math
from typing import Any

from graphnet.errors import OptimizerError

from .optimizer import Optimizer, check_number, register

__all__ = ["Adam", "AdamW"]


@register
class Adam(Optimizer):
    """``Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False)``.

    ``weight_decay`` is L2 (added to the gradient). State: ``exp_avg``,
    ``exp_avg_sq`` and, with ``amsgrad``, ``max_exp_avg_sq``.
    """

    name = "adam"
    _decoupled = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        max_grad_norm: float | None = None,
    ) -> None:
        if isinstance(betas, list):  # as read back from JSON
            betas = tuple(betas)
        super().__init__(
            lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            max_grad_norm=max_grad_norm,
        )

    @property
    def state_names(self) -> tuple[str, ...]:  # type: ignore[override]
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if self.amsgrad else names

    def validate(self) -> None:
        super().validate()
        label = self._label()
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise OptimizerError(f"{label}: betas must be a pair (beta1, beta2), got {self.betas!r}")
        for i, beta in enumerate(self.betas):
            check_number(label, f"betas[{i}]", beta, low=0.0, high=1.0, high_open=True)
        check_number(label, "eps", self.eps, low=0.0)
        check_number(label, "weight_decay", self.weight_decay, low=0.0)
        if not isinstance(self.amsgrad, bool):
            raise OptimizerError(f"{label}: amsgrad must be a bool, got {self.amsgrad!r}")

    def update(self, xp: Any, param: Any, grad: Any, state: dict[str, Any], step: int) -> None:
        if step < 1:
            raise OptimizerError(f"{self._label()}: step counts from 1, got {step!r}")
        lr = float(self.lr)
        beta1, beta2 = (float(b) for b in self.betas)
        eps = float(self.eps)
        weight_decay = float(self.weight_decay)
        exp_avg = self._state(state, "exp_avg")
        exp_avg_sq = self._state(state, "exp_avg_sq")

        g = grad
        if weight_decay != 0:
            if self._decoupled:
                param *= 1.0 - lr * weight_decay
            else:
                g = xp.multiply(param, weight_decay)  # g = grad + wd * p, in a fresh array
                g += grad
        tmp = xp.multiply(g, 1.0 - beta1)
        exp_avg *= beta1
        exp_avg += tmp
        xp.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        exp_avg_sq *= beta2
        exp_avg_sq += tmp

        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        second = exp_avg_sq
        if self.amsgrad:
            second = self._state(state, "max_exp_avg_sq")
            xp.maximum(second, exp_avg_sq, out=second)
        # denom = sqrt(v) / sqrt(bc2) + eps ; p -= (lr / bc1) * m / denom
        xp.sqrt(second, out=tmp)
        tmp /= math.sqrt(bias_correction2)
        tmp += eps
        xp.divide(exp_avg, tmp, out=tmp)
        tmp *= lr / bias_correction1
        param -= tmp


@register
class AdamW(Adam):
    """``AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)``.

    Decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the Adam step.
    """

    name = "adamw"
    _decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad, max_grad_norm=max_grad_norm)
