"""Renderers of scalar forms (graphnet.ops.scalar): one expression tree, one text per language.

``render(expr, language, operands, constant)``: ``operands[k]`` is the text of operand k (a
variable of the generated kernel, already cast as the op's ``operands`` rule says);
``constant(value)`` the text of a number in the result's dtype. "python" is Python/numba
syntax over ``math``; "c" is C99 with ``<tgmath.h>`` (type-generic ``exp``, ``erf``, ...),
which CUDA C++ also accepts through its overloads.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..ops.scalar import Binary, Call, Compare, Const, Expr, Logical, Negate, Operand, Select

LANGUAGES = ("python", "c")


def render(expr: Expr, language: str, operands: Sequence[str], constant: Callable[[float | int], str]) -> str:
    """The text of ``expr`` in ``language`` (``LANGUAGES``)."""
    if language not in LANGUAGES:
        raise ValueError(f"no renderer for {language!r}; languages: {LANGUAGES}")
    python = language == "python"

    def text(node: Expr) -> str:
        if isinstance(node, Operand):
            return operands[node.index]
        if isinstance(node, Const):
            return constant(node.value)
        if isinstance(node, Negate):
            return f"(-{text(node.a)})"
        if isinstance(node, Binary):
            if node.op == "pow":
                return f"({text(node.a)} ** {text(node.b)})" if python else f"pow({text(node.a)}, {text(node.b)})"
            return f"({text(node.a)} {node.op} {text(node.b)})"
        if isinstance(node, Compare):
            return f"({text(node.a)} {node.op} {text(node.b)})"
        if isinstance(node, Logical):
            joined = node.op if python else {"or": "||", "and": "&&"}[node.op]
            return f"({text(node.a)} {joined} {text(node.b)})"
        if isinstance(node, Select):
            if python:
                return f"({text(node.a)} if {text(node.condition)} else {text(node.b)})"
            return f"({text(node.condition)} ? {text(node.a)} : {text(node.b)})"
        if isinstance(node, Call):
            if python:
                return f"abs({text(node.a)})" if node.function == "fabs" else f"math.{node.function}({text(node.a)})"
            return f"{node.function}({text(node.a)})"
        raise TypeError(f"{type(node).__name__} is not a scalar-form node")

    return text(expr)
