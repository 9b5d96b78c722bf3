"""Loops in the graph: ``scan`` (JAX's ``lax.scan``), whose body is a traced subgraph.

``gn.scan(f, init, xs)`` traces ``f(carry, x) -> (carry, y)`` once into a :class:`Body`: a
graph whose placeholders are the body's arguments (the carry, one slice of each ``xs``, and
every outer value the function read: parameters, tensors computed outside) and whose
outputs are the new carry and ``y``. The ``scan`` node reads the initial carry, the ``xs``
and those outer values, and gives the final carry and the ``ys`` stacked along a new
leading axis. Plan size and compile time do not grow with the sequence length.

The gradient is a second, reverse ``scan``: its body recomputes one step of ``f`` from the
carry that entered it (saved by the forward scan as an extra output, its *history*) and
takes that step's vector-Jacobian product, summing the outer values' gradients in its
carry. The backward body is built by autodiff, which lives above the ops: it is a Body
whose graph is made on first use by the builder graphnet.passes registers in
``BODY_BUILDERS``.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Sequence

from .. import dtypes
from ..errors import GradientError, ShapeError
from ..ir import Graph, Node, TensorType, TupleType, next_uid, topological_order
from ..tensor import Tensor, placeholder
from .common import declare, dims_equal
from .registry import defop, get_op
from .tuples import tuple_get

#: builders of bodies made lazily: "vjp" (the backward body; graphnet.passes registers it)
BODY_BUILDERS: dict[str, Callable[..., Graph]] = {}

_body_ids = itertools.count()


class Body:
    """A traced step function as a graph.

    Arguments are placeholders named ``arg0``, ``arg1``, ... in order: ``n_carry`` carries,
    ``n_xs`` slices of the scanned inputs, then ``n_consts`` outer values. Outputs: the new
    carry (typed as the carry), then the per-step values stacked into the ``ys``. Compared
    and hashed by identity (a node's attributes hold it); ``graph`` may be built on first
    use (the backward body)."""

    def __init__(self, arg_types: Sequence[TensorType], n_carry: int, n_xs: int,
                 out_types: Sequence[TensorType], graph: Graph | None = None,
                 build: Callable[[], Graph] | None = None, base: "Body | None" = None,
                 history: bool = False) -> None:
        self.arg_types = tuple(arg_types)
        self.n_carry, self.n_xs = n_carry, n_xs
        self.n_consts = len(self.arg_types) - n_carry - n_xs
        self.out_types = tuple(out_types)
        self._graph = graph
        self._build = build
        self.base = base if base is not None else self  # the body a history variant extends
        self.history = history
        self.id = next(_body_ids)
        #: the traced body this one derives from (a pass's rewrite, a history variant): scans over
        #: the same origin and inputs compute the same loop (merge_scans)
        self.origin = self.base.origin if base is not None else self.id
        #: the backward pass makes this body's values again rather than saving them (scan's checkpoint)
        self.checkpoint = False
        #: for a backward body: (the forward body, carry_f, xs_f, consts_f) it was made from
        self.vjp_of: tuple[Body, tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
        self._history: Body | None = None
        self._runners: dict[int, Any] = {}

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            graph = self._build()
            types = tuple(o.type for o in graph.outputs)
            if types != self.out_types:
                raise GradientError(f"scan body {self.id}: its built graph gives {types}, not {self.out_types}")
            self._graph = graph
        return self._graph

    @property
    def n_ys(self) -> int:
        return len(self.out_types) - self.n_carry

    def with_graph(self, graph: Graph) -> "Body":
        """The same body computed by ``graph`` (a pass's rewrite of it)."""
        body = Body(self.arg_types, self.n_carry, self.n_xs, self.out_types, graph=graph,
                    base=self.base if self.history else None, history=self.history)
        body.checkpoint, body.vjp_of, body.origin = self.checkpoint, self.vjp_of, self.origin
        return body

    def with_history(self) -> "Body":
        """This body, also giving the carry that entered each step as extra per-step outputs
        (one per carry): what the backward scan reads. One per body, so that the forward scan
        and the gradient's history scan can be merged into one."""
        if self._history is None:
            def build() -> Graph:
                args = {n.attrs["name"]: n for n in self.graph.nodes if n.op == "placeholder"}
                carries = [args.get(f"arg{i}") or placeholder(f"arg{i}", self.arg_types[i].shape,
                                                               self.arg_types[i].dtype).node
                           for i in range(self.n_carry)]
                outputs = list(self.graph.outputs) + carries
                return Graph.build(outputs, [f"out{i}" for i in range(len(outputs))])
            self._history = Body(self.arg_types, self.n_carry, self.n_xs,
                                 self.out_types + self.arg_types[:self.n_carry], build=build, base=self,
                                 history=True)
        return self._history

    def runner(self, xp: Any) -> "_Runner":
        runner = self._runners.get(id(xp))
        if runner is None:
            runner = self._runners[id(xp)] = _Runner(self, xp)
        return runner

    def __repr__(self) -> str:
        size = f"{len(self._graph.nodes)} nodes" if self._graph is not None else "built on use"
        return f"<scan body {self.id}: {size}>"


class _Runner:
    """Runs a body's graph once per call with each op's own kernel (the reference path)."""

    def __init__(self, body: Body, xp: Any) -> None:
        graph = body.graph
        slot = {}
        self.program: list[tuple[Callable[..., Any], tuple[int, ...], int, int]] = []
        self.args: list[tuple[int, int]] = []  # (argument index, slot)
        self.constants: list[tuple[int, Any]] = []
        for node in graph.nodes:
            slot[node.uid] = len(slot)
            if node.op == "placeholder":
                self.args.append((int(node.attrs["name"][3:]), slot[node.uid]))
            elif node.op == "constant":
                self.constants.append((slot[node.uid], xp.asarray(node.attrs["value"].array)))
            elif node.op == "tuple_get":  # (a one-result op's kernel gives the array itself, as steps hold it)
                single = len(node.inputs[0].types) == 1
                self.program.append((None, (slot[node.inputs[0].uid],), slot[node.uid],
                                     -1 if single else node.attrs["index"]))
            else:
                opdef = get_op(node.op)
                if opdef.kernel is None or opdef.random or opdef.effect or node.op == "variable":
                    raise ShapeError(f"scan body: op {node.op!r} cannot run inside a loop body")
                kernel = opdef.kernel
                attrs = dict(node.attrs)
                self.program.append((functools.partial(kernel, xp, **attrs),
                                     tuple(slot[i.uid] for i in node.inputs), slot[node.uid], -1))
        self.size = len(slot)
        self.outputs = tuple(slot[o.uid] for o in graph.outputs)

    def __call__(self, args: Sequence[Any]) -> list[Any]:
        values: list[Any] = [None] * self.size
        for index, at in self.args:
            values[at] = args[index]
        for at, value in self.constants:
            values[at] = value
        for fn, ins, out, index in self.program:
            if fn is not None:
                values[out] = fn(*[values[i] for i in ins])
            else:
                values[out] = values[ins[0]] if index < 0 else values[ins[0]][index]
        return [values[i] for i in self.outputs]


def _scan_infer(*types: TensorType, body: Body, length: Any, reverse: bool) -> TupleType:
    nc, nx = body.n_carry, body.n_xs
    if len(types) != len(body.arg_types):
        raise ShapeError(f"scan takes {len(body.arg_types)} inputs for its body, got {len(types)}")
    steps = length
    for i, t in enumerate(types[nc:nc + nx]):
        if t.ndim < 1:
            raise ShapeError(f"scan: xs[{i}] must have a leading axis to scan over, got {t}")
        if steps is None:
            steps = t.shape[0]
        elif not dims_equal(t.shape[0], steps):
            raise ShapeError(f"scan: xs[{i}] has {t.shape[0]} steps, expected {steps}")
    for i, (given, want) in enumerate(zip(types, body.arg_types)):
        inner = TensorType(given.shape[1:], given.dtype) if nc <= i < nc + nx else given
        if inner.dtype != want.dtype or inner.ndim != want.ndim:
            raise ShapeError(f"scan: input {i} is {inner}, its body was traced for {want}")
    carry = types[:nc]
    ys = tuple(TensorType((steps,) + t.shape, t.dtype) for t in body.out_types[nc:])
    return TupleType(tuple(carry) + ys)


def _scan_kernel(xp: Any, *arrays: Any, body: Body, length: Any, reverse: bool) -> tuple[Any, ...]:
    nc, nx = body.n_carry, body.n_xs
    carry = list(arrays[:nc])
    xs = arrays[nc:nc + nx]
    consts = list(arrays[nc + nx:])
    steps = xs[0].shape[0] if xs else int(length)
    run = body.runner(xp)
    ys: list[Any] = [xp.empty((steps,) + tuple(d if isinstance(d, int) else 0 for d in t.shape), t.dtype)
                     for t in body.out_types[nc:]] if steps == 0 else []
    for i in range(steps):
        t = steps - 1 - i if reverse else i
        outs = run(carry + [x[t] for x in xs] + consts)
        carry = outs[:nc]
        if not ys:
            ys = [xp.empty((steps,) + tuple(y.shape), y.dtype) for y in outs[nc:]]
        for stacked, y in zip(ys, outs[nc:]):
            stacked[t] = y
    # a carry the body passed through unchanged is an input's array: the result owns its own
    carry = [xp.array(c, copy=True) if any(c is a or getattr(c, "base", None) is a for a in arrays) else c
             for c in carry]
    results = tuple(carry) + tuple(ys)
    return results[0] if len(results) == 1 else results  # one result: the array, as a step holds it


def _scan_grad(gs: Sequence[Tensor | None], outs: Sequence[Tensor], ins: Sequence[Tensor], *, body: Body,
               length: Any, reverse: bool) -> tuple[Tensor | None, ...]:
    """The reverse scan: per step (last first), the VJP of the body at the carry that entered
    that step, read from the forward scan's history."""
    nc, nx, nk, ny = body.n_carry, body.n_xs, body.n_consts, body.n_ys
    floating = [dtypes.is_float(t.dtype) for t in body.arg_types]
    carry_f = [i for i in range(nc) if floating[i]]
    xs_f = [i for i in range(nc, nc + nx) if floating[i]]
    consts_f = [i for i in range(nc + nx, nc + nx + nk) if floating[i]]
    history = declare("scan", list(ins), {"body": body.with_history(), "length": length, "reverse": reverse})
    carries_seen = [tuple_get(history, nc + ny + i) for i in range(nc)]

    def cotangent(g: Tensor | None, like: Tensor) -> Tensor:
        return g if g is not None else like * 0.0

    ct_carry = [cotangent(gs[i], outs[i]) for i in carry_f]
    ct_ys = [cotangent(gs[nc + j], outs[nc + j]) for j in range(ny)]
    zeros = [ins[i] * 0.0 for i in consts_f]
    backward = vjp_body(body, tuple(carry_f), tuple(xs_f), tuple(consts_f))
    inputs = ct_carry + zeros + list(ins[nc:nc + nx]) + carries_seen + ct_ys + list(ins[nc + nx:])
    node = declare("scan", inputs, {"body": backward, "length": length, "reverse": not reverse})
    grads: list[Tensor | None] = [None] * len(ins)
    for k, i in enumerate(carry_f):
        grads[i] = tuple_get(node, k)
    for k, i in enumerate(consts_f):
        grads[i] = tuple_get(node, len(carry_f) + k)
    for k, i in enumerate(xs_f):
        grads[i] = tuple_get(node, len(carry_f) + len(consts_f) + k)
    return tuple(grads)


def vjp_body(body: Body, carry_f: tuple[int, ...], xs_f: tuple[int, ...], consts_f: tuple[int, ...]) -> Body:
    """The backward scan's body for ``body``: carry (the carry's cotangent, the outer values'
    summed gradients), per step (the step's xs, the carry that entered it, the ys'
    cotangents), outer values (as the forward's) -> (the previous carry's cotangent, the
    sums plus this step's, the xs' gradients). Its graph is built on first use."""
    nc, nx, ny = body.n_carry, body.n_xs, body.n_ys
    types = body.arg_types
    arg_types = ([types[i] for i in carry_f] + [types[i] for i in consts_f]
                 + list(types[nc:nc + nx]) + list(types[:nc]) + list(body.out_types[nc:])
                 + list(types[nc + nx:]))
    out_types = [types[i] for i in carry_f] + [types[i] for i in consts_f] + [types[i] for i in xs_f]
    builder = BODY_BUILDERS.get("vjp")
    if builder is None:
        raise GradientError("scan gradients need graphnet.passes (import graphnet)")
    backward = Body(arg_types, len(carry_f) + len(consts_f), nx + nc + ny, out_types,
                    build=lambda: builder(body, carry_f, xs_f, consts_f))
    backward.vjp_of = (body, carry_f, xs_f, consts_f)
    return backward


defop("scan", attrs={"body": "any", "length": "any", "reverse": "bool"}, category="other",
      infer=_scan_infer, kernel=_scan_kernel, grad=_scan_grad,
      doc="A loop over the leading axis of xs: (init carries, xs, outer values) -> (final carries, stacked ys).")


# --- tracing ------------------------------------------------------------------------------------

def _flat(value: Any, what: str) -> tuple[list[Tensor], bool]:
    """``value`` as a list of tensors and whether it was one tensor (None: no tensors)."""
    if value is None:
        return [], False
    if isinstance(value, Tensor):
        return [value], True
    if isinstance(value, (tuple, list)) and all(isinstance(v, Tensor) for v in value):
        return list(value), False
    raise ShapeError(f"scan: {what} must be a Tensor or a tuple/list of Tensors, got {type(value).__name__}")


def _pack(values: Sequence[Tensor], single: bool, empty_is_none: bool = False) -> Any:
    if single:
        return values[0]
    if empty_is_none and not values:
        return None
    return tuple(values)


def scan(f: Callable[[Any, Any], tuple[Any, Any]], init: Any, xs: Any = None, length: int | None = None,
         reverse: bool = False, checkpoint: bool = False) -> tuple[Any, Any]:
    """JAX's ``lax.scan``: ``f(carry, x) -> (carry, y)`` applied along the leading axis of ``xs``.

    ``init``: the first carry (a Tensor or a tuple of Tensors); ``xs``: a Tensor or tuple of
    Tensors of shape (T, ...), or None with ``length=T``. Returns ``(final carry, ys)``, the
    ``ys`` stacked to (T, ...) like ``f``'s ``y`` (a Tensor, a tuple, or None). ``f`` is traced
    once: the plan holds one body however long the sequence; it may read any tensor from
    outside (parameters, values computed before). ``reverse=True`` runs from the last step
    to the first (the ys keep their positions).

    Training saves, per step, the carry that entered it and the values of ``f`` that are
    costly to make again (matrix products); ``checkpoint=True`` saves only the carries and
    makes the rest again in the backward loop (less memory, more time), as
    ``jax.checkpoint`` around the body.
    """
    carry, carry_single = _flat(init, "init")
    xs_list, xs_single = _flat(xs, "xs")
    if not xs_list and length is None:
        raise ShapeError("scan needs xs or length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
        raise ShapeError(f"scan: length must be a non-negative int, got {length!r}")
    for i, x in enumerate(xs_list):
        if x.ndim < 1:
            raise ShapeError(f"scan: xs[{i}] must have a leading axis to scan over, got shape {x.shape}")
    start = next_uid()
    carry_args = [placeholder(f"arg{i}", c.shape, c.dtype) for i, c in enumerate(carry)]
    x_args = [placeholder(f"arg{len(carry) + i}", x.shape[1:], x.dtype) for i, x in enumerate(xs_list)]
    result = f(_pack(carry_args, carry_single), _pack(x_args, xs_single, empty_is_none=True))
    if not isinstance(result, tuple) or len(result) != 2:
        raise ShapeError("scan: f must return a pair (new carry, y)")
    new_carry, new_carry_single = _flat(result[0], "the carry f returns")
    ys, ys_single = _flat(result[1], "the y f returns")
    if len(new_carry) != len(carry) or new_carry_single != carry_single:
        raise ShapeError(f"scan: f must return a carry shaped like init ({len(carry)} tensors), "
                         f"got {len(new_carry)}")
    for i, (old, new) in enumerate(zip(carry, new_carry)):
        if old.dtype != new.dtype or old.ndim != new.ndim or not all(
                dims_equal(a, b) or not isinstance(a, int) or not isinstance(b, int)
                for a, b in zip(old.shape, new.shape)):
            raise ShapeError(f"scan: carry {i} enters f as {old.dtype}{list(old.shape)} and leaves it as "
                             f"{new.dtype}{list(new.shape)}; a carry keeps its type")
    graph, outer = _close(start, [t.node for t in new_carry + ys], len(carry) + len(xs_list))
    arg_types = [t.node.type for t in carry_args + x_args] + [n.type for n in outer]
    body = Body(arg_types, len(carry), len(xs_list), [o.type for o in graph.outputs], graph=graph)
    body.checkpoint = bool(checkpoint)
    node = declare("scan", [*carry, *xs_list, *[Tensor(n) for n in outer]],
                   {"body": body, "length": length if not xs_list else None, "reverse": bool(reverse)})
    finals = [tuple_get(node, i) for i in range(len(carry))]
    stacked = [tuple_get(node, len(carry) + j) for j in range(len(ys))]
    return _pack(finals, carry_single), _pack(stacked, ys_single, empty_is_none=True)


def _close(start: int, outputs: list[Node], first_const: int) -> tuple[Graph, list[Node]]:
    """The body graph over ``outputs``: every node made before ``start`` that the body reads
    (a parameter, a placeholder, a value computed outside; constants stay inside) becomes an
    argument placeholder, numbered from ``first_const``. Returns the graph and those outer
    nodes, in argument order."""
    outer: list[Node] = []
    mapping: dict[int, Node] = {}

    def argument(node: Node) -> Node:
        if node.uid not in mapping:
            mapping[node.uid] = placeholder(f"arg{first_const + len(outer)}", node.type.shape,
                                            node.type.dtype).node
            outer.append(node)
        return mapping[node.uid]

    inside: dict[int, Node] = {}
    for node in topological_order(outputs):
        if node.uid < start and node.op != "constant":
            continue
        inputs = tuple(inside.get(i.uid) or argument(i) if i.uid < start and i.op != "constant" else inside[i.uid]
                       for i in node.inputs)
        inside[node.uid] = node if inputs == node.inputs else Node(
            node.op, inputs, node.attrs, node.type, node.name, node.location, node.scope, node.role)
    final = [inside[o.uid] if o.uid in inside else argument(o) for o in outputs]
    for node in topological_order(final):
        opdef = get_op(node.op)
        if opdef.random or opdef.effect:
            raise ShapeError(f"scan: {node.op} (declared at {node.location}) cannot run inside a loop body")
    return Graph.build(final, [f"out{i}" for i in range(len(final))]), outer


# --- cond and while_loop ------------------------------------------------------------------------------

def _trace(fn: Callable[..., Any], operands: Sequence[Tensor], what: str) -> tuple[Graph, list[Node], bool]:
    """``fn`` traced on placeholders for ``operands``: its graph (outer values as further
    arguments), those outer values, and whether it returned one tensor."""
    start = next_uid()
    args = [placeholder(f"arg{i}", o.shape, o.dtype) for i, o in enumerate(operands)]
    outs, single = _flat(fn(*args), what)
    graph, outer = _close(start, [t.node for t in outs], len(operands))
    return graph, outer, single


def _share_outer(graphs: list[tuple[Graph, list[Node]]], first: int) -> tuple[list[Graph], list[Node]]:
    """Several traced functions over one list of outer values (the union, in first-use
    order): each graph's outer arguments renumbered into it."""
    consts: list[Node] = []
    for _, outer in graphs:
        consts += [o for o in outer if all(o is not c for c in consts)]
    renumbered = []
    for graph, outer in graphs:
        names = {f"arg{first + j}": f"arg{first + next(k for k, c in enumerate(consts) if c is o)}"
                 for j, o in enumerate(outer)}
        mapping: dict[int, Node] = {}
        for node in graph.nodes:
            if node.op == "placeholder" and names.get(node.attrs["name"], node.attrs["name"]) != node.attrs["name"]:
                mapping[node.uid] = placeholder(names[node.attrs["name"]], node.type.shape, node.type.dtype).node
            else:
                inputs = tuple(mapping[i.uid] for i in node.inputs)
                mapping[node.uid] = node if inputs == node.inputs else Node(
                    node.op, inputs, node.attrs, node.type, node.name, node.location, node.scope, node.role)
        renumbered.append(Graph.build([mapping[o.uid] for o in graph.outputs], graph.output_names))
    return renumbered, consts


def _same_types(a: Sequence[TensorType], b: Sequence[TensorType]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.ndim == y.ndim and all(dims_equal(p, q) or not (isinstance(p, int) and isinstance(q, int))
                                                        for p, q in zip(x.shape, y.shape)) for x, y in zip(a, b))


def _results(node: Tensor, count: int, single: bool) -> Any:
    values = [tuple_get(node, i) for i in range(count)]
    return values[0] if single else tuple(values)


def _own(xp: Any, values: Sequence[Any], inputs: Sequence[Any]) -> tuple[Any, ...]:
    """Results that are (views of) inputs copied, so that a step's result owns its memory."""
    return tuple(xp.array(v, copy=True) if any(v is a or getattr(v, "base", None) is a for a in inputs) else v
                 for v in values)


def _cond_infer(pred: TensorType, *types: TensorType, true_body: Body, false_body: Body) -> TupleType:
    if pred.shape != () or pred.dtype != "bool":
        raise ShapeError(f"cond: the predicate must be a bool scalar, got {pred}")
    for body in (true_body, false_body):
        if len(types) != len(body.arg_types) or not _same_types(types, body.arg_types):
            raise ShapeError(f"cond: its operands {list(map(str, types))} are not what its branches were traced for")
    if not _same_types(true_body.out_types, false_body.out_types):
        raise ShapeError(f"cond: the branches give {list(map(str, true_body.out_types))} and "
                         f"{list(map(str, false_body.out_types))}; they must give the same types")
    return TupleType(true_body.out_types)


def _cond_kernel(xp: Any, pred: Any, *arrays: Any, true_body: Body, false_body: Body) -> Any:
    body = true_body if bool(pred) else false_body
    results = _own(xp, body.runner(xp)(list(arrays)), arrays)
    return results[0] if len(results) == 1 else results


def _cond_grad(gs: Sequence[Tensor | None], outs: Sequence[Tensor], ins: Sequence[Tensor], *, true_body: Body,
               false_body: Body) -> tuple[Tensor | None, ...]:
    """The branch taken's vector-Jacobian product, chosen by the same predicate."""
    wanted = tuple(i for i, t in enumerate(true_body.arg_types) if dtypes.is_float(t.dtype))
    cts = [g if g is not None else o * 0.0 for g, o in zip(gs, outs)]
    bodies = [branch_vjp_body(b, wanted) for b in (true_body, false_body)]
    node = declare("cond", [ins[0], *ins[1:], *cts], {"true_body": bodies[0], "false_body": bodies[1]})
    grads: list[Tensor | None] = [None] * len(ins)
    for k, i in enumerate(wanted):
        grads[1 + i] = tuple_get(node, k)
    return tuple(grads)


def branch_vjp_body(body: Body, wanted: tuple[int, ...]) -> Body:
    """(the body's arguments, its outputs' cotangents) -> the gradients of the ``wanted``
    arguments; built on first use (graphnet.passes)."""
    builder = BODY_BUILDERS.get("branch_vjp")
    if builder is None:
        raise GradientError("cond gradients need graphnet.passes (import graphnet)")
    return Body(body.arg_types + body.out_types, 0, 0, [body.arg_types[i] for i in wanted],
                build=lambda: builder(body, wanted))


defop("cond", attrs={"true_body": "any", "false_body": "any"}, category="other", infer=_cond_infer,
      kernel=_cond_kernel, grad=_cond_grad,
      doc="One of two traced branches, chosen by a bool scalar at run time: (pred, operands, outer values) -> results.")


def cond(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any], *operands: Tensor) -> Any:
    """JAX's ``lax.cond``: ``true_fn(*operands)`` where the bool scalar ``pred`` holds at run time,
    else ``false_fn(*operands)``. Both are traced once and must give the same types (a
    Tensor or a tuple of Tensors); only the branch taken runs. Differentiable (the gradient
    takes the same branch). A Python bool ``pred`` simply calls one of them."""
    if isinstance(pred, bool):
        return true_fn(*operands) if pred else false_fn(*operands)
    if not isinstance(pred, Tensor) or pred.shape != () or pred.dtype != "bool":
        raise ShapeError(f"cond: the predicate must be a bool scalar Tensor, got {pred!r}")
    if not all(isinstance(o, Tensor) for o in operands):
        raise ShapeError("cond: operands must be Tensors")
    graph_t, outer_t, single_t = _trace(true_fn, operands, "the true branch's result")
    graph_f, outer_f, single_f = _trace(false_fn, operands, "the false branch's result")
    (graph_t, graph_f), consts = _share_outer([(graph_t, outer_t), (graph_f, outer_f)], len(operands))
    if single_t != single_f or len(graph_t.outputs) != len(graph_f.outputs):
        raise ShapeError("cond: the branches must return the same structure (a Tensor, or tuples of one length)")
    arg_types = [o.node.type for o in operands] + [c.type for c in consts]
    bodies = [Body(arg_types, 0, 0, [o.type for o in g.outputs], graph=g) for g in (graph_t, graph_f)]
    node = declare("cond", [pred, *operands, *[Tensor(c) for c in consts]],
                   {"true_body": bodies[0], "false_body": bodies[1]})
    return _results(node, len(graph_t.outputs), single_t)


def _while_infer(*types: TensorType, cond_body: Body, body: Body) -> TupleType:
    count = body.n_carry
    if not _same_types(types, body.arg_types) or not _same_types(types, cond_body.arg_types):
        raise ShapeError("while_loop: its inputs are not what its functions were traced for")
    if len(cond_body.out_types) != 1 or cond_body.out_types[0].shape != () or cond_body.out_types[0].dtype != "bool":
        raise ShapeError(f"while_loop: cond_fn must give a bool scalar, got {list(map(str, cond_body.out_types))}")
    return TupleType(tuple(types[:count]))


def _while_kernel(xp: Any, *arrays: Any, cond_body: Body, body: Body) -> Any:
    count = body.n_carry
    carry, consts = list(arrays[:count]), list(arrays[count:])
    test, step = cond_body.runner(xp), body.runner(xp)
    while bool(test(carry + consts)[0]):
        carry = step(carry + consts)
    results = _own(xp, carry, arrays)
    return results[0] if len(results) == 1 else results


def _while_grad(*args: Any, **attrs: Any) -> Any:
    raise GradientError("while_loop has no gradient: how many steps it takes is known only when it runs. "
                        "Use gn.scan with a bound (length=N), and gn.cond inside it to stop updating the carry")


defop("while_loop", attrs={"cond_body": "any", "body": "any"}, category="other", infer=_while_infer,
      kernel=_while_kernel, grad=_while_grad,
      doc="body_fn applied to the carry while cond_fn holds: (init carries, outer values) -> final carries.")


def while_loop(cond_fn: Callable[[Any], Any], body_fn: Callable[[Any], Any], init: Any) -> Any:
    """JAX's ``lax.while_loop``: ``body_fn`` applied to the carry while ``cond_fn(carry)`` (a bool
    scalar) holds; returns the final carry (shaped like ``init``: a Tensor or a tuple). Both
    functions are traced once. Forward only: its gradient raises GradientError (use
    ``gn.scan`` with a bound)."""
    carry, single = _flat(init, "init")
    if not carry:
        raise ShapeError("while_loop needs a carry")
    pack = (lambda args: args[0]) if single else (lambda args: tuple(args))
    graph_c, outer_c, _ = _trace(lambda *a: cond_fn(pack(a)), carry, "cond_fn's result")
    graph_b, outer_b, single_b = _trace(lambda *a: body_fn(pack(a)), carry, "body_fn's result")
    if single_b != single or len(graph_b.outputs) != len(carry) or not _same_types(
            [o.type for o in graph_b.outputs], [c.node.type for c in carry]):
        raise ShapeError("while_loop: body_fn must return a carry of init's structure and types")
    (graph_c, graph_b), consts = _share_outer([(graph_c, outer_c), (graph_b, outer_b)], len(carry))
    arg_types = [c.node.type for c in carry] + [c.type for c in consts]
    test = Body(arg_types, len(carry), 0, [o.type for o in graph_c.outputs], graph=graph_c)
    step = Body(arg_types, len(carry), 0, [o.type for o in graph_b.outputs], graph=graph_b)
    node = declare("while_loop", [*carry, *[Tensor(c) for c in consts]], {"cond_body": test, "body": step})
    return _results(node, len(carry), single)
