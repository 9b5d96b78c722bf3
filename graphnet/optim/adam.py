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

from typing import Any, Mapping

from graphnet.ops import maximum, pow, sqrt

from graphnet.errors import OptimizerError

from .optimizer import HyperParams, Optimizer, check_number, register, scalar

__all__ = ["Adam", "AdamW"]


@register
class Adam(Optimizer):
    """``Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False)``.

    ``weight_decay`` is L2 (added to the gradient). State: ``exp_avg``,
    ``exp_avg_sq`` and, with ``amsgrad``, ``max_exp_avg_sq``.
    """

    name = "adam"
    structural_zeros = ("weight_decay",)
    _decoupled = False

    def __init__(
        self,
        params: Any = None,
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
            params=params,
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

    def update(self, param: Any, grad: Any, state: Mapping[str, Any], step: Any,
               h: HyperParams) -> tuple[Any, dict[str, Any]]:
        beta1, beta2 = h.betas
        g = grad
        if self.weight_decay != 0:
            if self._decoupled:
                param = param * scalar(1.0 - h.lr * h.weight_decay, param)
            else:
                g = param * scalar(h.weight_decay, param) + grad
        exp_avg = self._state(state, "exp_avg") * scalar(beta1, param) + g * scalar(1.0 - beta1, param)
        exp_avg_sq = self._state(state, "exp_avg_sq") * scalar(beta2, param) + g * g * scalar(1.0 - beta2, param)
        new_state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        bias_correction1 = 1.0 - pow(beta1, step)
        bias_correction2 = 1.0 - pow(beta2, step)
        second = exp_avg_sq
        if self.amsgrad:
            second = maximum(self._state(state, "max_exp_avg_sq"), exp_avg_sq)
            new_state["max_exp_avg_sq"] = second
        # p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
        denom = sqrt(second) / scalar(sqrt(bias_correction2), param) + scalar(h.eps, param)
        return param - exp_avg / denom * scalar(h.lr / bias_correction1, param), new_state


@register
class AdamW(Adam):
    """``AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)``.

    Decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the Adam step.
    """

    name = "adamw"
    _decoupled = True

    def __init__(
        self,
        params: Any = None,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, max_grad_norm=max_grad_norm)
