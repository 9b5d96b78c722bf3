"""The gradient of a composite op, kept as one node until the composite itself is expanded.

``gn.grad`` through a composite (batch_norm) cannot always expand it at once: its mode may
be a module's switch that only ``gn.compile`` resolves. So the gradient rule of every
composite declares a ``composite_vjp`` node holding the composite's attributes (its mode
included, which ``resolve_modes`` resolves like any other) and, when the ``decompose`` pass
expands it, it becomes d <g, f(x)> / dx through f's decomposition, ``g`` held constant.
"""

from __future__ import annotations

from typing import Any

from ..errors import ShapeError
from ..ir import TensorType, TupleType
from .registry import defop, get_op

_OWN = ("vjp_of", "wanted", "has_g")


def split_attrs(attrs: Any) -> tuple[str, tuple[bool, ...], tuple[bool, ...], dict[str, Any]]:
    """(composite op name, which inputs get a gradient, which results have one, the composite's attrs)."""
    inner = {k: v for k, v in attrs.items() if k not in _OWN}
    return attrs["vjp_of"], attrs["wanted"], attrs["has_g"], inner


def _infer(*types: Any, **attrs: Any) -> TensorType | TupleType:
    try:
        name, wanted, has_g, inner = split_attrs(attrs)
    except KeyError as exc:
        raise ShapeError(f"composite_vjp needs the attribute {exc}") from None
    opdef = get_op(name)
    if opdef.decompose is None or name == "composite_vjp":
        raise ShapeError(f"{name!r} is not a composite op")
    n_in = len(wanted)
    if not any(wanted) or len(types) != n_in + sum(has_g):
        raise ShapeError(f"composite_vjp of {name}: {n_in} inputs, {sum(has_g)} gradients, got {len(types)} values")
    out = opdef.infer(*types[:n_in], **inner)
    outs = out.types if isinstance(out, TupleType) else (out,)
    if len(has_g) != len(outs) or [t for t, h in zip(outs, has_g) if h] != list(types[n_in:]):
        raise ShapeError(f"composite_vjp of {name}: the gradients do not match its results {out}")
    grads = tuple(t for t, w in zip(types[:n_in], wanted) if w)
    return grads[0] if len(grads) == 1 else TupleType(grads)


# decompose=None: the expansion needs autodiff, which lives above the ops (passes/autodiff.py
# expands it; the decompose pass calls that).
defop("composite_vjp", category="composite", infer=_infer, kernel=None,
      doc="d <g, f(x)> / dx for a composite f, expanded with f by the decompose pass.")
