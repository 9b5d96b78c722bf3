"""OpDef and the op registry, and ``apply``: the one way a node is declared.

An op is defined once, in one place: its shape/dtype rule (``infer``), its gradient rule
written with graphnet ops (``grad``, so gradients are graphs and can be differentiated
again), and one array kernel written against an array module ``xp`` (``kernel``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import GraphError, ShapeError
from ..ir import Attrs, Node, TensorType, ValueType
from .attrs import check_attrs

InferRule = Callable[..., ValueType]  # infer(*input_types, **attrs) -> TensorType | TupleType
GradRule = Callable[..., Sequence[Any]]  # grad(g, out, inputs, **attrs) -> one Tensor|None per input
Kernel = Callable[..., Any]  # kernel(xp, *arrays, **attrs) -> array (a tuple for multi-output ops)
Decomposition = Callable[..., Any]  # decompose(*input_tensors, **attrs) -> Tensor or tuple of Tensors
#: scalar(*operands, **attrs) -> an expression tree (graphnet.ops.scalar): an elementwise op on one
#: element of each operand, from which kernel generators render fused loops in their languages.
ScalarForm = Callable[..., Any]

#: What an op is, for the passes and backends that treat kinds of ops alike (fusion, memory
#: planning, ONNX export, the executors).
CATEGORIES = ("leaf", "elementwise", "reduction", "layout", "blas", "conv", "random", "effect", "composite",
              "collective", "other")


@dataclass(frozen=True)
class OpDef:
    """Everything graphnet knows about one op: its contract with passes and backends.

    ``category``: one of ``CATEGORIES``. ``views``: pairs (output index, input index) whose
    arrays may share memory (a kernel may return a view of, or the very array of, that
    input). ``writes``: indices of inputs the kernel overwrites (``assign`` writes its
    target). ``accepts_out``: the kernel takes ``out=`` and writes its result there.
    ``decompose``: for a composite op, its expansion into primitive ops (composites keep
    their identity in the declared graph, for ONNX export and folding, and are expanded by
    the ``decompose`` pass before autodiff). ``state_updates(outs, ins, **attrs)``: for an
    op that owns state (batch norm's running statistics), the (variable, new value) pairs
    one run writes; the ``state_updates`` pass turns them into ordered ``assign`` effects.
    ``scalar``: for an elementwise op, its form on one element (see ``ScalarForm``); ops
    without one still fuse, but their groups run through the NumPy fallback.
    ``operands``: how a generated kernel types an elementwise op's operands before its scalar
    form reads them: "result" (cast to the result's dtype), "common" (to the operands'
    promoted dtype: comparisons), "condition" (the first is a bool, the rest cast to the
    result's: ``where``), "as_is" (``cast``). ``recompute``: cheap enough that fusion may
    compute it again in each group that reads it rather than keep its value. ``reduction``:
    for a reduction a fused group may end in, how its loop accumulates ("sum", "mean",
    "sum_to"); None for every other op.
    ``shape_only``: indices of inputs the kernel reads only the shape and dtype of (the
    ``like`` of ``sum_like``, ``x`` of ``conv2d_grad_input``): reading them does not keep
    their values alive, so the memory plan may reuse their storage before such a step.
    """

    name: str
    infer: InferRule
    kernel: Kernel | None
    grad: GradRule | None = None
    doc: str = ""
    category: str = "other"
    views: tuple[tuple[int, int], ...] = ()
    writes: tuple[int, ...] = ()
    accepts_out: bool = False
    decompose: Decomposition | None = None
    state_updates: Callable[..., Sequence[tuple[Any, Any]]] | None = None
    attrs: Mapping[str, str] | None = None
    scalar: ScalarForm | None = None
    shape_only: tuple[int, ...] = ()
    operands: str = "result"
    recompute: bool = False
    reduction: str | None = None

    @property
    def random(self) -> bool:
        """The kernel takes ``rng=``; never merged by CSE nor folded."""
        return self.category == "random"

    @property
    def effect(self) -> bool:
        """Writes to state; scheduled after every pure step, never merged nor removed."""
        return self.category == "effect"


REGISTRY: dict[str, OpDef] = {}

#: How generated kernels type an elementwise op's operands (``OpDef.operands``).
OPERAND_RULES = ("result", "common", "condition", "as_is")


def defop(
    name: str,
    *,
    infer: InferRule,
    kernel: Kernel | None,
    grad: GradRule | None = None,
    category: str = "other",
    views: Sequence[tuple[int, int]] = (),
    writes: Sequence[int] = (),
    accepts_out: bool = False,
    decompose: Decomposition | None = None,
    state_updates: Callable[..., Sequence[tuple[Any, Any]]] | None = None,
    attrs: Mapping[str, str] | None = None,
    scalar: ScalarForm | None = None,
    shape_only: Sequence[int] = (),
    operands: str = "result",
    recompute: bool = False,
    reduction: str | None = None,
    doc: str = "",
) -> OpDef:
    """Register an op. Names are unique; re-registering is a programming error."""
    if name in REGISTRY:
        raise GraphError(f"op {name!r} is already registered")
    if operands not in OPERAND_RULES:
        raise GraphError(f"op {name!r}: operands {operands!r} is not one of {OPERAND_RULES}")
    if category not in CATEGORIES:
        raise GraphError(f"op {name!r}: category {category!r} is not one of {CATEGORIES}")
    opdef = OpDef(name, infer, kernel, grad, doc, category, tuple(views), tuple(writes), accepts_out, decompose,
                  state_updates, None if attrs is None else dict(attrs), scalar, tuple(shape_only), operands,
                  recompute, reduction)
    REGISTRY[name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise GraphError(f"unknown op {name!r}") from None


# --- declaration context: module path, role, and the user's source line ---------------

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_scope_stack: list[str] = []
_context: dict[str, Any] = {"role": "forward", "location": None, "scope": None}


@contextlib.contextmanager
def scope(path: str) -> Iterator[None]:
    """Nodes declared inside carry this module path (``features.3``)."""
    _scope_stack.append(path)
    try:
        yield
    finally:
        _scope_stack.pop()


@contextlib.contextmanager
def derived_from(node: Node, role: str, scope: str | None = None) -> Iterator[None]:
    """Nodes declared inside (by autodiff, optimizers) inherit ``node``'s location and scope
    (or ``scope``, for a parameter's update drawn inside its module)."""
    saved = dict(_context)
    _context.update(role=role, location=node.location, scope=node.scope if scope is None else scope)
    try:
        yield
    finally:
        _context.clear()
        _context.update(saved)


def current_scope() -> str:
    if _context["scope"] is not None:
        return _context["scope"]
    return _scope_stack[-1] if _scope_stack else ""


def user_location() -> str:
    """``file:line`` of the innermost caller outside the graphnet package."""
    if _context["location"] is not None:
        return _context["location"]
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
            return f"{os.path.basename(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return "<graphnet>"


def _fmt_shape(t: ValueType) -> str:
    if not isinstance(t, TensorType):
        return str(t)
    return "(" + ", ".join("None" if d is None else repr(d) if isinstance(d, str) else str(d) for d in t.shape) + (
        ",)" if len(t.shape) == 1 else ")"
    ) + f" {t.dtype}"


def make_node(op: str, inputs: Sequence[Node], attrs: dict[str, Any] | None = None, name: str | None = None) -> Node:
    """Check the op's shape rule against ``inputs`` and return the new node.

    A rule violation raises ``ShapeError`` naming the op, module path, input shapes and
    the user's file:line: errors surface where the op is declared, not at run time.
    """
    opdef = get_op(op)
    attrs = attrs or {}
    types = [i.type for i in inputs]
    try:
        check_attrs(op, opdef.attrs, attrs)
        out_type = opdef.infer(*types, **attrs)
    except ShapeError as exc:
        where = current_scope()
        shapes = ", ".join(_fmt_shape(t) for t in types)
        raise type(exc)(
            f"{op}{f' in {where}' if where else ''} at {user_location()}: inputs {shapes}: {exc}"
        ) from None
    return Node(
        op=op,
        inputs=tuple(inputs),
        attrs=Attrs(attrs),
        type=out_type,
        name=name,
        location=user_location(),
        scope=current_scope(),
        role=_context["role"],
    )
