"""Scalars in another tensor's dtype: what optimizer rules and gradient passes mix with values."""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor, constant
from .elementwise import cast


def scalar(value: Any, like: Any) -> Any:
    """A float64 scalar tensor (or Python number) as a scalar of ``like``'s dtype."""
    if isinstance(value, Tensor):
        return value if value.dtype == like.dtype else cast(value, like.dtype)
    return constant(float(value), like.dtype)
