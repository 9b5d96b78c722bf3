"""Multi-output ops' results: ``tuple_get`` reads one, ``make_tuple`` groups values (used by passes)."""

from __future__ import annotations

from typing import Any

from ..errors import ShapeError
from ..ir import Node, TensorType, TupleType
from ..tensor import Tensor
from .common import declare
from .registry import defop, make_node


def _tuple_get_infer(t: Any, *, index: int) -> TensorType:
    if not isinstance(t, TupleType):
        raise ShapeError("tuple_get reads a result of a multi-output op")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(t.types):
        raise ShapeError(f"result index {index!r} is out of range for {len(t.types)} results")
    return t.types[index]


def _make_tuple_infer(*types: Any) -> TupleType:
    if len(types) < 2 or not all(isinstance(t, TensorType) for t in types):
        raise ShapeError("make_tuple groups two or more single values")
    return TupleType(tuple(types))


# Lowering binds a tuple_get to the buffer its op wrote: neither kernel runs in a plan.
defop("tuple_get", attrs={"index": "int"}, category="layout", views=((0, 0),), infer=_tuple_get_infer, kernel=None, doc="Result ``index`` of a multi-output op.")
defop("make_tuple", attrs={}, category="layout", infer=_make_tuple_infer, kernel=None,
      doc="Values grouped as one multi-output value (what a decomposed multi-output composite becomes).")


def tuple_get(value: Tensor, index: int) -> Tensor:
    """Result ``index`` of the multi-output op ``value``."""
    return declare("tuple_get", [value], {"index": int(index)})


def results(value: Tensor) -> tuple[Tensor, ...]:
    """Every result of the multi-output op ``value``, in order."""
    return tuple(tuple_get(value, i) for i in range(len(value.node.types)))


def make_tuple_node(values: list[Node]) -> Node:
    """A ``make_tuple`` node over ``values`` (passes build it; users never need one)."""
    return make_node("make_tuple", values)
