"""RAdam (rectified Adam), as ``torch.optim.RAdam``::

    p = p * (1 - lr * weight_decay)                   (decoupled_weight_decay)
    g = grad + weight_decay * p                       (otherwise, if weight_decay)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2 ** step / (1 - beta2 ** step)
    if rho_t > 5:
        rect = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
        p = p - lr * m / (1 - beta1 ** step) * rect * sqrt(1 - beta2 ** step) / (sqrt(v) + eps)
    else:
        p = p - lr * m / (1 - beta1 ** step)

The ``rho_t > 5`` test is on float64 scalars of the plan (it depends on the step), chosen
by ``where`` at run time.
"""

from __future__ import annotations

from typing import Any, Mapping

from graphnet.ops import pow, sqrt, where

from .nadam import _AdamFamily
from .optimizer import HyperParams, register, scalar

__all__ = ["RAdam"]


@register
class RAdam(_AdamFamily):
    """``RAdam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False)``.

    State: ``exp_avg``, ``exp_avg_sq``.
    """

    name = "radam"
    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Any = None,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
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
            decoupled_weight_decay=decoupled_weight_decay,
            max_grad_norm=max_grad_norm,
        )

    def update(self, param: Any, grad: Any, state: Mapping[str, Any], step: Any,
               h: HyperParams) -> tuple[Any, dict[str, Any]]:
        beta1, beta2 = h.betas
        param, g = self._decay(param, grad, h)
        exp_avg, exp_avg_sq = self._moments(state, g, param, h)
        bias_correction1 = 1.0 - pow(beta1, step)
        beta2_t = pow(beta2, step)
        bias_correction2 = 1.0 - beta2_t
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho_t = rho_inf - 2.0 * step * beta2_t / bias_correction2
        rectified = rho_t > 5.0
        # the rectification is only read where rho_t > 5 (then rho_inf >= rho_t > 5: every factor is
        # positive); elsewhere it is 1, so no step computes an Inf or NaN (check_numerics stays quiet)
        one = scalar(1.0, step)
        denominator = where(rectified, (rho_inf - 4.0) * (rho_inf - 2.0) * rho_t, one)
        rect = sqrt(where(rectified, (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / denominator, one))
        # p -= lr / bc1 * m * (rect * sqrt(bc2) / (sqrt(v) + eps)   if rectified   else 1)
        adaptive = where(rectified, rect * sqrt(bias_correction2), 0.0)
        plain = where(rectified, scalar(0.0, step), scalar(1.0, step))
        step_size = scalar(h.lr / bias_correction1, param)
        scale = scalar(adaptive, param) / (sqrt(exp_avg_sq) + scalar(h.eps, param)) + scalar(plain, param)
        return param - exp_avg * step_size * scale, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
