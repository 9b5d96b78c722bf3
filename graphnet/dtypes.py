"""The dtypes graphnet knows, by name, and how they combine."""

from __future__ import annotations

import numpy as np

from .errors import DTypeError

#: Allowed dtype names; plan files and feeds are checked against this table.
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name)
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
}

FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})
INT_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8"})


def canonical(dtype: object) -> str:
    """Name of a dtype given as a string, NumPy dtype or NumPy scalar type."""
    try:
        name = np.dtype(dtype).name  # type: ignore[arg-type]
    except TypeError as exc:
        raise DTypeError(f"unknown dtype {dtype!r}; graphnet knows {sorted(DTYPES)}") from exc
    if name not in DTYPES:
        raise DTypeError(f"unsupported dtype {name!r}; graphnet knows {sorted(DTYPES)}")
    return name


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def is_int(dtype: str) -> bool:
    return dtype in INT_DTYPES


def promote(a: str, b: str) -> str:
    """The dtype of a binary elementwise op on ``a`` and ``b`` (NumPy's promotion)."""
    return canonical(np.promote_types(a, b))
