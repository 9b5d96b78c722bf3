"""Elementwise ops: arithmetic with NumPy broadcasting, activations, comparisons, where."""

from __future__ import annotations

import math
from typing import Any

from .. import dtypes
from ..errors import DTypeError, ShapeError
from ..ir import TensorType
from ..tensor import Tensor
from .common import broadcast_shapes, declare, require_float, sum_to, unary_float, unary_same
from .conv_kernels import erf as erf_kernel
from . import scalar as S
from .registry import defop


def _binary_infer(a: TensorType, b: TensorType, **_: Any) -> TensorType:
    return TensorType(broadcast_shapes(a.shape, b.shape), dtypes.promote(a.dtype, b.dtype))


def _compare_infer(a: TensorType, b: TensorType, **_: Any) -> TensorType:
    return TensorType(broadcast_shapes(a.shape, b.shape), "bool")


def _where_infer(c: TensorType, a: TensorType, b: TensorType, **_: Any) -> TensorType:
    if c.dtype != "bool":
        raise DTypeError(f"condition must be bool, got {c.dtype}")
    return TensorType(broadcast_shapes(c.shape, a.shape, b.shape), dtypes.promote(a.dtype, b.dtype))


def _unbroadcast(grads: tuple[Tensor | None, ...], inputs: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    return tuple(None if g is None else sum_to(g, x) for g, x in zip(grads, inputs))


# --- binary arithmetic --------------------------------------------------------------------

defop("add", recompute=True, scalar=lambda a, b: a + b, attrs={}, category="elementwise", infer=_binary_infer, accepts_out=True, kernel=lambda xp, a, b, out=None: xp.add(a, b, out=out),
      grad=lambda g, out, ins: _unbroadcast((g, g), ins))
defop("sub", recompute=True, scalar=lambda a, b: a - b, attrs={}, category="elementwise", infer=_binary_infer, accepts_out=True, kernel=lambda xp, a, b, out=None: xp.subtract(a, b, out=out),
      grad=lambda g, out, ins: _unbroadcast((g, neg(g)), ins))
defop("mul", recompute=True, scalar=lambda a, b: a * b, attrs={}, category="elementwise", infer=_binary_infer, accepts_out=True, kernel=lambda xp, a, b, out=None: xp.multiply(a, b, out=out),
      grad=lambda g, out, ins: _unbroadcast((g * ins[1], g * ins[0]), ins))
def _div_infer(a: TensorType, b: TensorType) -> TensorType:
    out = _binary_infer(a, b)
    # true division of integers gives floats, as in NumPy
    return out if dtypes.is_float(out.dtype) else TensorType(out.shape, "float64")


defop("div", recompute=True, scalar=lambda a, b: a / b, attrs={}, category="elementwise", infer=_div_infer, accepts_out=True, kernel=lambda xp, a, b, out=None: xp.divide(a, b, out=out),
      grad=lambda g, out, ins: _unbroadcast((g / ins[1], neg(g * out / ins[1])), ins))


def _pow_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    a, b = ins
    da = g * b * pow(a, b - 1)
    db = g * out * log(a) if dtypes.is_float(b.dtype) else None
    return _unbroadcast((da, db), ins)


defop("pow", scalar=lambda a, b: a ** b, attrs={}, category="elementwise", infer=_binary_infer, accepts_out=True, kernel=lambda xp, a, b, out=None: xp.power(a, b, out=out), grad=_pow_grad)
defop("maximum", recompute=True, scalar=lambda a, b: S.where(a.ge(b) | a.ne(a), a, b), attrs={}, category="elementwise", infer=_binary_infer, accepts_out=True, kernel=lambda xp, a, b, out=None: xp.maximum(a, b, out=out),
      grad=lambda g, out, ins: _unbroadcast(
          (where(ins[0] >= ins[1], g, 0.0), where(ins[0] >= ins[1], 0.0, g)), ins))
defop("minimum", recompute=True, scalar=lambda a, b: S.where(a.le(b) | a.ne(a), a, b), attrs={}, category="elementwise", infer=_binary_infer, accepts_out=True, kernel=lambda xp, a, b, out=None: xp.minimum(a, b, out=out),
      grad=lambda g, out, ins: _unbroadcast(
          (where(ins[0] <= ins[1], g, 0.0), where(ins[0] <= ins[1], 0.0, g)), ins))


def add(a: Any, b: Any) -> Tensor:
    """``a + b`` with NumPy broadcasting."""
    return declare("add", [a, b])


def sub(a: Any, b: Any) -> Tensor:
    """``a - b`` with NumPy broadcasting."""
    return declare("sub", [a, b])


def mul(a: Any, b: Any) -> Tensor:
    """``a * b`` with NumPy broadcasting."""
    return declare("mul", [a, b])


def div(a: Any, b: Any) -> Tensor:
    """``a / b`` with NumPy broadcasting (true division)."""
    return declare("div", [a, b])


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001 - NumPy's name
    """``a ** b`` with NumPy broadcasting."""
    return declare("pow", [a, b])


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum; the gradient goes to ``a`` on ties."""
    return declare("maximum", [a, b])


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise minimum; the gradient goes to ``a`` on ties."""
    return declare("minimum", [a, b])


# --- comparisons and where ------------------------------------------------------------------

#: comparison op (named as NumPy's ufunc) -> its symbol in scalar forms
_COMPARISONS = {"equal": "==", "not_equal": "!=", "less": "<", "less_equal": "<=", "greater": ">",
                "greater_equal": ">="}
for _name, _symbol in _COMPARISONS.items():
    defop(_name, attrs={}, category="elementwise", infer=_compare_infer, accepts_out=True, operands="common", recompute=True,
          kernel=(lambda u: lambda xp, a, b, out=None: getattr(xp, u)(a, b, out=out))(_name),
          scalar=(lambda sym: lambda a, b: S.Compare(sym, a, b))(_symbol))


def equal(a: Any, b: Any) -> Tensor:
    """Boolean mask ``a == b``."""
    return declare("equal", [a, b])


def not_equal(a: Any, b: Any) -> Tensor:
    """Boolean mask ``a != b``."""
    return declare("not_equal", [a, b])


def less(a: Any, b: Any) -> Tensor:
    """Boolean mask ``a < b``."""
    return declare("less", [a, b])


def less_equal(a: Any, b: Any) -> Tensor:
    """Boolean mask ``a <= b``."""
    return declare("less_equal", [a, b])


def greater(a: Any, b: Any) -> Tensor:
    """Boolean mask ``a > b``."""
    return declare("greater", [a, b])


def greater_equal(a: Any, b: Any) -> Tensor:
    """Boolean mask ``a >= b``."""
    return declare("greater_equal", [a, b])


def _where_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    c, a, b = ins
    return (None,) + _unbroadcast((where(c, g, 0.0), where(c, 0.0, g)), (a, b))


defop("where", recompute=True, operands="condition", scalar=lambda cond, a, b: S.where(cond, a, b), attrs={}, category="elementwise", infer=_where_infer, kernel=lambda xp, c, a, b: xp.where(c, a, b), grad=_where_grad)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` (bool) holds, else ``b``; all three broadcast."""
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    from ..tensor import as_tensor

    a_t = as_tensor(a, like)
    b_t = as_tensor(b, like)
    return declare("where", [condition, a_t, b_t])


# --- unary ----------------------------------------------------------------------------------

def _cast_infer(t: TensorType, *, dtype: str) -> TensorType:
    return TensorType(t.shape, dtype)


defop("cast", recompute=True, operands="as_is", scalar=lambda x, dtype: x, attrs={"dtype": "dtype"}, category="elementwise", infer=_cast_infer, kernel=lambda xp, x, dtype: x.astype(dtype),
      grad=lambda g, out, ins, dtype: (cast(g, ins[0].dtype) if dtypes.is_float(ins[0].dtype) else None,))


def cast(x: Tensor, dtype: Any) -> Tensor:
    """``x`` converted to ``dtype``."""
    return declare("cast", [x], {"dtype": dtypes.canonical(dtype)})


defop("neg", recompute=True, scalar=lambda x: -x, attrs={}, category="elementwise", infer=unary_same, accepts_out=True, kernel=lambda xp, x, out=None: xp.negative(x, out=out), grad=lambda g, out, ins: (neg(g),))
defop("exp", scalar=S.exp, attrs={}, category="elementwise", infer=unary_float, accepts_out=True, kernel=lambda xp, x, out=None: xp.exp(x, out=out), grad=lambda g, out, ins: (g * out,))
defop("log", scalar=S.log, attrs={}, category="elementwise", infer=unary_float, accepts_out=True, kernel=lambda xp, x, out=None: xp.log(x, out=out), grad=lambda g, out, ins: (g / ins[0],))
defop("sqrt", recompute=True, scalar=S.sqrt, attrs={}, category="elementwise", infer=unary_float, accepts_out=True, kernel=lambda xp, x, out=None: xp.sqrt(x, out=out), grad=lambda g, out, ins: (g * 0.5 / out,))
# x - x: +0.0 for either zero, as np.sign gives, and NaN for NaN
defop("sign", recompute=True, scalar=lambda x: S.where(x.gt(0), 1, S.where(x.lt(0), -1, x - x)), attrs={}, category="elementwise", infer=unary_same, accepts_out=True, kernel=lambda xp, x, out=None: xp.sign(x, out=out), grad=lambda g, out, ins: (None,))
defop("abs", recompute=True, scalar=S.fabs, attrs={}, category="elementwise", infer=unary_same, accepts_out=True, kernel=lambda xp, x, out=None: xp.abs(x, out=out), grad=lambda g, out, ins: (g * sign(ins[0]),))
# g * mask rather than where(mask, g, 0): NumPy multiplies by a bool mask ~15x faster
defop("relu", recompute=True, scalar=lambda x: S.where(x.gt(0) | x.ne(x), x, 0), attrs={}, category="elementwise", infer=unary_same, accepts_out=True,
      kernel=lambda xp, x, out=None: xp.maximum(x, x.dtype.type(0), out=out),
      # masked by the output (out > 0 exactly where x > 0): the input then has one reader, the
      # ReLU, and fuses with whatever computed it (a residual add)
      grad=lambda g, out, ins: (g * greater(out, 0.0),))
defop("sigmoid", scalar=lambda x: (S.tanh(x * 0.5) + 1) * 0.5, attrs={}, category="elementwise", infer=unary_float, kernel=lambda xp, x: (xp.tanh(x * 0.5) + 1) * 0.5,
      grad=lambda g, out, ins: (g * out * (1.0 - out),))
defop("tanh", scalar=S.tanh, attrs={}, category="elementwise", infer=unary_float, accepts_out=True, kernel=lambda xp, x, out=None: xp.tanh(x, out=out), grad=lambda g, out, ins: (g * (1.0 - out * out),))
defop("sin", scalar=S.sin, attrs={}, category="elementwise", infer=unary_float, kernel=lambda xp, x: xp.sin(x),
      grad=lambda g, out, ins: (g * cos(ins[0]),))
defop("cos", scalar=S.cos, attrs={}, category="elementwise", infer=unary_float, kernel=lambda xp, x: xp.cos(x),
      grad=lambda g, out, ins: (neg(g * sin(ins[0])),))


def _leaky_kernel(xp: Any, x: Any, alpha: float) -> Any:
    return xp.where(x > 0, x, x * x.dtype.type(alpha))


defop("leaky_relu", scalar=lambda x, alpha: S.where(x.gt(0), x, x * alpha), attrs={"alpha": "float"}, category="elementwise", infer=unary_float, kernel=_leaky_kernel,
      grad=lambda g, out, ins, alpha: (where(ins[0] > 0, g, g * alpha),))


def _elu_kernel(xp: Any, x: Any, alpha: float) -> Any:
    # where, not minimum: elu(-0.0) is -0.0 (minimum(-0.0, 0) may give +0.0)
    return xp.where(x > 0, x, xp.expm1(xp.where(x > 0, 0, x)) * x.dtype.type(alpha))


defop("elu", scalar=lambda x, alpha: S.where(x.gt(0), x, S.expm1(x) * alpha), attrs={"alpha": "float"}, category="elementwise", infer=unary_float, kernel=_elu_kernel,
      grad=lambda g, out, ins, alpha: (where(ins[0] > 0, g, g * (out + alpha)),))
defop("erf", scalar=S.erf, attrs={}, category="elementwise", infer=unary_float, kernel=erf_kernel,
      grad=lambda g, out, ins: (g * (2.0 / math.sqrt(math.pi)) * exp(neg(ins[0] * ins[0])),))

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_C = math.sqrt(2.0 / math.pi)


def _gelu_kernel(xp: Any, x: Any, approximate: str) -> Any:
    half = x.dtype.type(0.5)
    if approximate == "tanh":
        inner = x.dtype.type(_TANH_C) * (x + x.dtype.type(0.044715) * x * x * x)
        return half * x * (1 + xp.tanh(inner))
    return half * x * (1 + erf_kernel(xp, x * x.dtype.type(_SQRT_HALF)))


def _gelu_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...], approximate: str) -> tuple[Tensor]:
    x = ins[0]
    if approximate == "tanh":
        inner = _TANH_C * (x + 0.044715 * x * x * x)
        t = tanh(inner)
        d_inner = _TANH_C * (1.0 + 3 * 0.044715 * x * x)
        return (g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner),)
    # the CDF is the forward's own output over x (gelu(x) = x * cdf(x)): no second erf
    cdf = where(x != 0.0, out / where(x != 0.0, x, 1.0), 0.5)
    pdf = _INV_SQRT_2PI * exp(x * x * -0.5)
    return (g * (cdf + x * pdf),)


def _gelu_scalar(x: S.Expr, approximate: str) -> S.Expr:
    if approximate == "tanh":
        return 0.5 * x * (1 + S.tanh(_TANH_C * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1 + S.erf(x * _SQRT_HALF))


def _gelu_infer(t: TensorType, *, approximate: str) -> TensorType:
    require_float(t)
    if approximate not in ("none", "tanh"):
        raise DTypeError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return t


defop("gelu", scalar=_gelu_scalar, attrs={"approximate": "str"}, category="elementwise", infer=_gelu_infer, kernel=_gelu_kernel, grad=_gelu_grad)


def _softplus_kernel(xp: Any, x: Any, beta: float, threshold: float) -> Any:
    bx = x * x.dtype.type(beta)
    # exp of at most the threshold: the elements above it are x itself, and need not overflow
    soft = xp.log1p(xp.exp(xp.minimum(bx, x.dtype.type(threshold)))) / x.dtype.type(beta)
    return xp.where(bx > threshold, x, soft)


def _softplus_infer(t: TensorType, *, beta: float, threshold: float) -> TensorType:
    require_float(t)
    if beta == 0:
        raise ShapeError("softplus: beta must not be 0")
    return t


# PyTorch's softplus: log(1 + exp(beta x)) / beta, and x itself where beta x > threshold
defop("softplus", attrs={"beta": "float", "threshold": "float"}, category="elementwise", infer=_softplus_infer,
      kernel=_softplus_kernel,
      scalar=lambda x, beta, threshold: S.where((x * beta).gt(threshold), x, S.log1p(S.exp(x * beta)) / beta),
      grad=lambda g, out, ins, beta, threshold: (where(ins[0] * beta > threshold, g, g * sigmoid(ins[0] * beta)),))


def neg(x: Any) -> Tensor:
    """``-x``."""
    return declare("neg", [x])


def exp(x: Any) -> Tensor:
    """``e ** x``."""
    return declare("exp", [x])


def log(x: Any) -> Tensor:
    """Natural logarithm."""
    return declare("log", [x])


def sqrt(x: Any) -> Tensor:
    """Square root."""
    return declare("sqrt", [x])


def sign(x: Any) -> Tensor:
    """-1, 0 or 1 by the sign of ``x`` (zero gradient)."""
    return declare("sign", [x])


def abs(x: Any) -> Tensor:  # noqa: A001 - NumPy's name
    """Absolute value (gradient ``sign(x)``)."""
    return declare("abs", [x])


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)``."""
    return declare("relu", [x])


def sigmoid(x: Tensor) -> Tensor:
    """Logistic function ``1 / (1 + exp(-x))``, computed stably."""
    return declare("sigmoid", [x])


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return declare("tanh", [x])


def sin(x: Any) -> Tensor:
    """Sine (radians), elementwise; float inputs. Gradient ``cos(x)``."""
    return declare("sin", [x])


def cos(x: Any) -> Tensor:
    """Cosine (radians), elementwise; float inputs. Gradient ``-sin(x)``."""
    return declare("cos", [x])


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """``x`` where positive, else ``negative_slope * x`` (PyTorch's default slope)."""
    return declare("leaky_relu", [x], {"alpha": float(negative_slope)})


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """``x`` where positive, else ``alpha * (exp(x) - 1)``."""
    return declare("elu", [x], {"alpha": float(alpha)})


def erf(x: Tensor) -> Tensor:
    """The error function."""
    return declare("erf", [x])


def silu(x: Tensor) -> Tensor:
    """``x * sigmoid(x)`` (also called swish)."""
    return x * sigmoid(x)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit ``x * Phi(x)``; ``approximate="tanh"`` as in PyTorch."""
    return declare("gelu", [x], {"approximate": approximate})


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta * x)) / beta``, and ``x`` itself where ``beta * x > threshold`` (PyTorch's)."""
    return declare("softplus", [x], {"beta": float(beta), "threshold": float(threshold)})


def mish(x: Tensor) -> Tensor:
    """``x * tanh(softplus(x))``."""
    return x * tanh(softplus(x))


def prelu(x: Tensor, weight: Tensor) -> Tensor:
    """``x`` where positive, else ``weight * x``, as PyTorch's ``F.prelu``: ``weight`` (1,) is one slope for
    every element; ``weight`` (C,) one per channel of x (N, C, ...) (channel axis 1)."""
    from .shape import reshape

    if weight.ndim != 1 or not isinstance(weight.shape[0], int):
        raise ShapeError(f"prelu: weight must have a static shape (1,) or (C,), got {weight.shape}")
    count = weight.shape[0]
    if count == 1:
        slope = reshape(weight, ())
    else:
        if x.ndim < 2 or (isinstance(x.shape[1], int) and x.shape[1] != count):
            raise ShapeError(f"prelu: {count} slopes need input (N, {count}, ...), got {x.shape}")
        slope = reshape(weight, (1, count) + (1,) * (x.ndim - 2))
    return where(x > 0.0, x, x * slope)


#: the public functional forms of this file (graphnet.ops and graphnet export them all, so an
#: elementwise op is one ``defop`` and its function here)
__all__ = sorted(name for name, value in list(globals().items())
                 if callable(value) and getattr(value, "__module__", None) == __name__ and not name.startswith("_"))
