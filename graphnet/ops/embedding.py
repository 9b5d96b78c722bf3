"""Embedding: rows of a table picked by integer indices; the gradient scatters back into the table."""

from __future__ import annotations

from typing import Any

from .. import dtypes
from ..errors import DTypeError, FeedError, ShapeError
from ..ir import TensorType
from ..tensor import Tensor
from .common import declare
from .registry import defop


def _infer(weight: TensorType, indices: TensorType) -> TensorType:
    if weight.ndim != 2:
        raise ShapeError(f"the embedding table must be (num_embeddings, embedding_dim), got {weight.shape}")
    if not dtypes.is_int(indices.dtype):
        raise DTypeError(f"embedding indices must be integers, got {indices.dtype}")
    return TensorType(indices.shape + weight.shape[1:], weight.dtype)


def _check(xp: Any, indices: Any, rows: int) -> None:
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= rows):
        raise FeedError(f"embedding indices must lie in [0, {rows}), got values from {int(indices.min())} "
                        f"to {int(indices.max())}")


def _kernel(xp: Any, weight: Any, indices: Any) -> Any:
    _check(xp, indices, weight.shape[0])
    return xp.take(weight, indices, axis=0)


def _grad_kernel(xp: Any, g: Any, indices: Any, weight: Any) -> Any:
    out = xp.zeros(weight.shape, dtype=g.dtype)
    xp.add.at(out, indices.reshape(-1), g.reshape(-1, weight.shape[1]))  # repeated indices accumulate
    return out


defop("embedding", attrs={}, category="other", infer=_infer, kernel=_kernel,
      grad=lambda g, out, ins: (declare("embedding_grad", [g, ins[1], ins[0]]), None),
      doc="weight[indices]: (V, D) and integer (...) -> (..., D).")
defop("embedding_grad", attrs={}, category="other", infer=lambda g, idx, w: w, kernel=_grad_kernel,
      grad=lambda h, out, ins: (_embedding(h, ins[1]), None, None),
      doc="The gradient of embedding with respect to its table: g scattered (added) into rows.")


def _embedding(table: Tensor, indices: Tensor) -> Tensor:
    return declare("embedding", [table, indices])


def embedding(indices: Tensor, weight: Tensor) -> Tensor:
    """As PyTorch's ``F.embedding``: integer indices (...) and a table (V, D) -> (..., D)."""
    return _embedding(weight, indices)
