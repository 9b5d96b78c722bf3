"""Attribute declarations: each op names its attributes and their kinds beside its shape rule.

The declaration path (``make_node``) and the plan loader check a node's attributes against
them, so an unknown attribute, a missing one, or one of the wrong type (``axis=True``, a
string for an int: ``True == 1`` does not pass) is a ShapeError before any rule or kernel
sees it.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import dtypes
from ..errors import ShapeError

#: The kinds an attribute may have.
KINDS = ("int", "float", "bool", "str", "dtype", "pair", "ints", "pairs", "shape", "dims", "key", "mode", "bools",
         "any")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _valid(kind: str, value: Any) -> bool:
    if kind == "any":
        return True
    if kind == "int":
        return _is_int(value)
    if kind == "float":
        return isinstance(value, float) or _is_int(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dtype":
        return isinstance(value, str) and value in dtypes.DTYPES
    if kind == "pair":
        return isinstance(value, tuple) and len(value) == 2 and all(_is_int(v) for v in value)
    if kind == "ints":
        return isinstance(value, tuple) and all(_is_int(v) for v in value)
    if kind == "bools":
        return isinstance(value, tuple) and all(isinstance(v, bool) for v in value)
    if kind == "pairs":
        return isinstance(value, tuple) and all(_valid("pair", v) for v in value)
    if kind == "shape":
        return isinstance(value, tuple) and all(_is_int(v) or isinstance(v, str) for v in value)
    if kind == "dims":  # a placeholder's shape: sizes, names and unknown (None) dims
        return isinstance(value, tuple) and all(_is_int(v) or isinstance(v, str) or v is None for v in value)
    if kind == "key":
        return isinstance(value, tuple) and all(
            isinstance(k, tuple) and len(k) == 3 and all(v is None or _is_int(v) for v in k) for k in value)
    if kind == "mode":
        from ..modes import ModeSwitch

        return isinstance(value, (bool, ModeSwitch))
    raise ShapeError(f"unknown attribute kind {kind!r}")


def check_attrs(op: str, spec: Mapping[str, str] | None, attrs: Mapping[str, Any]) -> None:
    """Raise ShapeError unless ``attrs`` has exactly the declared names, each of its kind."""
    if spec is None:
        return
    unknown = sorted(set(attrs) - set(spec))
    missing = sorted(set(spec) - set(attrs))
    if unknown or missing:
        parts = ([f"unknown attribute(s) {unknown}"] if unknown else []) + (
            [f"missing attribute(s) {missing}"] if missing else [])
        raise ShapeError(f"{op}: {'; '.join(parts)}; it takes {sorted(spec) or 'none'}")
    for name, kind in spec.items():
        if not _valid(kind, attrs[name]):
            raise ShapeError(f"{op}: attribute {name}={attrs[name]!r} is not a valid {kind}")
