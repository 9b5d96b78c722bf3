"""NAdam (Adam with Nesterov momentum), as ``torch.optim.NAdam`` (``psi = 0.96``)::

    p = p * (1 - lr * weight_decay)                   (decoupled_weight_decay)
    g = grad + weight_decay * p                       (otherwise, if weight_decay)
    mu_t      = beta1 * (1 - 0.5 * psi ** (step * momentum_decay))
    mu_next   = beta1 * (1 - 0.5 * psi ** ((step + 1) * momentum_decay))
    mu_product = mu_product * mu_t                    (the product of every mu so far)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = sqrt(v / (1 - beta2 ** step)) + eps
    p = p - lr * (1 - mu_t) / (1 - mu_product) * g / denom
          - lr * mu_next / (1 - mu_product * mu_next) * m / denom

``mu_product`` depends on every step's ``beta1`` and ``momentum_decay`` (both may change
between runs), so it is state, as in PyTorch: one scalar per parameter (shape ``()``, in the
parameter's dtype, starting at 1).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from graphnet.ops import cast, pow, sqrt

from graphnet.errors import OptimizerError

from .optimizer import HyperParams, Optimizer, check_number, register, scalar

__all__ = ["NAdam"]

#: NAdam's momentum schedule base (PyTorch's 0.96)
PSI = 0.96


class _AdamFamily(Optimizer):
    """Shared validation, weight decay and moments of NAdam and RAdam (graphnet.optim.radam)."""

    structural_zeros = ("weight_decay",)

    def validate(self) -> None:
        super().validate()
        label = self._label()
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise OptimizerError(f"{label}: betas must be a pair (beta1, beta2), got {self.betas!r}")
        for i, beta in enumerate(self.betas):
            check_number(label, f"betas[{i}]", beta, low=0.0, high=1.0, high_open=True)
        check_number(label, "eps", self.eps, low=0.0)
        check_number(label, "weight_decay", self.weight_decay, low=0.0)
        if not isinstance(self.decoupled_weight_decay, bool):
            raise OptimizerError(f"{label}: decoupled_weight_decay must be a bool, got "
                                 f"{self.decoupled_weight_decay!r}")

    def _decay(self, param: Any, grad: Any, h: HyperParams) -> tuple[Any, Any]:
        """(param, grad) after weight decay: decoupled shrinks the parameter, else L2 adds to the gradient."""
        if self.weight_decay == 0:
            return param, grad
        if self.decoupled_weight_decay:
            return param * scalar(1.0 - h.lr * h.weight_decay, param), grad
        return param, param * scalar(h.weight_decay, param) + grad

    def _moments(self, state: Mapping[str, Any], g: Any, param: Any, h: HyperParams) -> tuple[Any, Any]:
        beta1, beta2 = h.betas
        exp_avg = self._state(state, "exp_avg") * scalar(beta1, param) + g * scalar(1.0 - beta1, param)
        exp_avg_sq = self._state(state, "exp_avg_sq") * scalar(beta2, param) + g * g * scalar(1.0 - beta2, param)
        return exp_avg, exp_avg_sq


@register
class NAdam(_AdamFamily):
    """``NAdam(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
    decoupled_weight_decay=False)``.

    State: ``exp_avg``, ``exp_avg_sq`` (like the parameter) and ``mu_product`` (a scalar).
    """

    name = "nadam"

    def __init__(
        self,
        params: Any = None,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
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
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            max_grad_norm=max_grad_norm,
        )

    state_names = ("exp_avg", "exp_avg_sq", "mu_product")

    def init_state(self, param: Any) -> dict[str, Any]:
        return {"exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param),
                "mu_product": np.ones((), dtype=np.asarray(param).dtype)}

    def validate(self) -> None:
        super().validate()
        check_number(self._label(), "momentum_decay", self.momentum_decay, low=0.0)

    def update(self, param: Any, grad: Any, state: Mapping[str, Any], step: Any,
               h: HyperParams) -> tuple[Any, dict[str, Any]]:
        beta1, beta2 = h.betas
        param, g = self._decay(param, grad, h)
        mu = beta1 * (1.0 - 0.5 * pow(PSI, step * h.momentum_decay))
        mu_next = beta1 * (1.0 - 0.5 * pow(PSI, (step + 1.0) * h.momentum_decay))
        old_product = self._state(state, "mu_product")
        if old_product.ndim != 0:
            raise OptimizerError(f"{self._label()}: mu_product must be a scalar state, got shape {old_product.shape}")
        mu_product = scalar(cast(old_product, "float64") * mu, param)
        # the coefficients read the stored (parameter-dtype) product back, as PyTorch does
        product64 = mu_product if mu_product.dtype == "float64" else cast(mu_product, "float64")
        exp_avg, exp_avg_sq = self._moments(state, g, param, h)
        bias_correction2 = 1.0 - pow(beta2, step)
        denom = sqrt(exp_avg_sq / scalar(bias_correction2, param)) + scalar(h.eps, param)
        grad_coef = h.lr * (1.0 - mu) / (1.0 - product64)
        avg_coef = h.lr * mu_next / (1.0 - product64 * mu_next)
        new_param = param - g / denom * scalar(grad_coef, param) - exp_avg / denom * scalar(avg_coef, param)
        return new_param, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "mu_product": mu_product}
