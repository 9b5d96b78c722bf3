"""Scalar forms: an elementwise op on one element of each operand, as a small expression tree.

An op's ``scalar`` field is a function ``scalar(*operands, **attrs) -> Expr`` written with the
builders below (``where(x.gt(0) | x.ne(x), x, 0)`` is ReLU that keeps NaN). It is plain data
that every kernel generator renders into its own language: graphnet.codegen.scalar turns it
into Python text for numba and into C for CUDA (and for a C compiler, which the tests use to
check the C form on machines without a GPU). Numbers in a tree (``0``, an attribute such as
``alpha``) are constants of the result's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

#: The functions a scalar form may call, each of one argument and C99/CUDA's name for it.
FUNCTIONS = ("exp", "log", "sqrt", "tanh", "erf", "expm1", "fabs", "log1p", "sin", "cos")
BINARY = ("+", "-", "*", "/", "pow")
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
LOGICAL = ("or", "and")


class Expr:
    """A node of a scalar form. Arithmetic operators build trees; comparisons are methods
    (``a.lt(b)``) so that ``==`` keeps its meaning, and ``|``, ``&`` join conditions."""

    def _binary(self, op: str, other: Any, swap: bool = False) -> Expr:
        a, b = self, lift(other)
        return Binary(op, b, a) if swap else Binary(op, a, b)

    def __add__(self, other: Any) -> Expr:
        return self._binary("+", other)

    def __radd__(self, other: Any) -> Expr:
        return self._binary("+", other, True)

    def __sub__(self, other: Any) -> Expr:
        return self._binary("-", other)

    def __rsub__(self, other: Any) -> Expr:
        return self._binary("-", other, True)

    def __mul__(self, other: Any) -> Expr:
        return self._binary("*", other)

    def __rmul__(self, other: Any) -> Expr:
        return self._binary("*", other, True)

    def __truediv__(self, other: Any) -> Expr:
        return self._binary("/", other)

    def __rtruediv__(self, other: Any) -> Expr:
        return self._binary("/", other, True)

    def __pow__(self, other: Any) -> Expr:
        return self._binary("pow", other)

    def __neg__(self) -> Expr:
        return Negate(self)

    def __or__(self, other: Any) -> Expr:
        return Logical("or", self, lift(other))

    def __and__(self, other: Any) -> Expr:
        return Logical("and", self, lift(other))

    def eq(self, other: Any) -> Expr:
        return Compare("==", self, lift(other))

    def ne(self, other: Any) -> Expr:
        return Compare("!=", self, lift(other))

    def lt(self, other: Any) -> Expr:
        return Compare("<", self, lift(other))

    def le(self, other: Any) -> Expr:
        return Compare("<=", self, lift(other))

    def gt(self, other: Any) -> Expr:
        return Compare(">", self, lift(other))

    def ge(self, other: Any) -> Expr:
        return Compare(">=", self, lift(other))


@dataclass(frozen=True, eq=False)
class Operand(Expr):
    """Operand ``index`` of the op, already in the dtype the op's ``operands`` rule gives it."""

    index: int


@dataclass(frozen=True, eq=False)
class Const(Expr):
    """A number, as a constant of the result's dtype."""

    value: float | int


@dataclass(frozen=True, eq=False)
class Binary(Expr):
    op: str
    a: Expr
    b: Expr


@dataclass(frozen=True, eq=False)
class Negate(Expr):
    a: Expr


@dataclass(frozen=True, eq=False)
class Compare(Expr):
    op: str
    a: Expr
    b: Expr


@dataclass(frozen=True, eq=False)
class Logical(Expr):
    op: str
    a: Expr
    b: Expr


@dataclass(frozen=True, eq=False)
class Select(Expr):
    """``a`` where ``condition`` holds, else ``b``."""

    condition: Expr
    a: Expr
    b: Expr


@dataclass(frozen=True, eq=False)
class Call(Expr):
    function: str
    a: Expr


def lift(value: Any) -> Expr:
    """An expression for ``value`` (a number becomes a constant of the result's dtype)."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a scalar form holds expressions and numbers, not {type(value).__name__}")
    return Const(value)


def where(condition: Expr, a: Any, b: Any) -> Expr:
    return Select(condition, lift(a), lift(b))


def _function(name: str) -> Callable[[Any], Expr]:
    return lambda a: Call(name, lift(a))


exp, log, sqrt, tanh, erf, expm1, fabs, log1p, sin, cos = (_function(name) for name in FUNCTIONS)


def tree(form: Callable[..., Expr], operands: int, attrs: dict[str, Any]) -> Expr:
    """The expression tree of a scalar form for ``operands`` operands and these attributes."""
    return lift(form(*(Operand(k) for k in range(operands)), **attrs))


def check(expr: Expr, operands: int) -> None:
    """Raise TypeError unless ``expr`` is a well-formed tree over ``operands`` operands."""
    if isinstance(expr, Operand):
        if not 0 <= expr.index < operands:
            raise TypeError(f"operand {expr.index} of {operands}")
    elif isinstance(expr, Const):
        lift(expr.value)
    elif isinstance(expr, (Binary, Compare, Logical)):
        allowed = {Binary: BINARY, Compare: COMPARISONS, Logical: LOGICAL}[type(expr)]
        if expr.op not in allowed:
            raise TypeError(f"{expr.op!r} is not one of {allowed}")
        check(expr.a, operands)
        check(expr.b, operands)
    elif isinstance(expr, Negate):
        check(expr.a, operands)
    elif isinstance(expr, Select):
        for part in (expr.condition, expr.a, expr.b):
            check(part, operands)
    elif isinstance(expr, Call):
        if expr.function not in FUNCTIONS:
            raise TypeError(f"{expr.function!r} is not one of {FUNCTIONS}")
        check(expr.a, operands)
    else:
        raise TypeError(f"{type(expr).__name__} is not a scalar-form node")
