"""Matrix product, batched with NumPy's broadcasting rules."""

from __future__ import annotations

from typing import Any

from .. import dtypes
from ..errors import ShapeError
from ..ir import TensorType
from ..tensor import Tensor, as_tensor
from .common import broadcast_shapes, declare, dims_equal, sum_to
from .registry import defop
from .shape import reshape, swapaxes


def _matmul_infer(a: TensorType, b: TensorType) -> TensorType:
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError("matmul kernel needs inputs of 2 or more dims")
    if not dims_equal(a.shape[-1], b.shape[-2]):
        raise ShapeError(f"inner dims differ: {a.shape[-1]} (last of a) vs {b.shape[-2]} (second-last of b)")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return TensorType(batch + (a.shape[-2], b.shape[-1]), dtypes.promote(a.dtype, b.dtype))


def _matmul_grad(g: Tensor, out: Tensor, ins: tuple[Tensor, ...]) -> tuple:
    a, b = ins
    da = sum_to(matmul(g, swapaxes(b, -1, -2)), a)
    k, m = a.shape[-1], g.shape[-1]
    if b.ndim == 2 and a.ndim > 2 and isinstance(k, int) and isinstance(m, int):
        # a batch of inputs times one matrix (a Linear layer on (T, N, d)): the sum over the batch
        # of a_i^T g_i is one product of the flattened rows, not a batch of products then a sum
        db = sum_to(matmul(swapaxes(reshape(a, (-1, k)), -1, -2), reshape(g, (-1, m))), b)
    else:
        db = sum_to(matmul(swapaxes(a, -1, -2), g), b)
    return da, db


defop("matmul", attrs={}, category="blas", infer=_matmul_infer, accepts_out=True,
      kernel=lambda xp, a, b, out=None: xp.matmul(a, b, out=out), grad=_matmul_grad)


def matmul(a: Any, b: Any) -> Tensor:
    """Matrix product ``a @ b``. (..., n, k) @ (..., k, m) -> (..., n, m); 1-d inputs as in NumPy."""
    a = as_tensor(a)
    b = as_tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: inputs must not be scalars, got shapes {a.shape} and {b.shape}")
    squeeze_a = a.ndim == 1
    squeeze_b = b.ndim == 1
    if squeeze_a:
        a = reshape(a, (1, a.shape[0] if a.shape[0] is not None else -1))
    if squeeze_b:
        b = reshape(b, (b.shape[0] if b.shape[0] is not None else -1, 1))
    out = declare("matmul", [a, b])
    if squeeze_a or squeeze_b:
        from .reduce import squeeze

        out = squeeze(out, ([-2 + out.ndim] if squeeze_a else []) + ([out.ndim - 1] if squeeze_b else []))
    return out
