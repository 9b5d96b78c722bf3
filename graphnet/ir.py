"""The graph IR: immutable nodes that point at their inputs, and a Graph view over them.

A ``Node`` is one op application: its op name, input nodes, attributes, result type, and
where the user declared it. Nodes are frozen; passes build new nodes and return new
graphs. A node of a multi-output op has a ``TupleType``; its results are read through
``tuple_get`` nodes. A ``Graph`` is its named outputs, its ordered list of effects
(``assign`` nodes that write variables: running statistics, optimizer updates, the step
counter), the gradients autodiff attached, and every node they reach in topological order.
Nothing rides on a node's fields: a graph lists every effect it has.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import GraphError

#: A dimension is a static size, a symbolic name such as ``"batch"``, or None (unknown).
Dim = int | str | None
Shape = tuple[Dim, ...]

_uids = itertools.count(1)


def next_uid() -> int:
    return next(_uids)


@dataclass(frozen=True)
class TensorType:
    """Shape and dtype of a value. Symbolic dims are names (``"batch"``) or None."""

    shape: Shape
    dtype: str

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


@dataclass(frozen=True)
class TupleType:
    """The results of a multi-output op, read one by one through ``tuple_get`` nodes."""

    types: tuple[TensorType, ...]

    def __str__(self) -> str:
        return "(" + ", ".join(str(t) for t in self.types) + ")"


#: What a shape rule returns: one value, or several for a multi-output op.
ValueType = TensorType | TupleType


class Attrs(Mapping[str, Any]):
    """A frozen, hashable attribute mapping (values must be hashable)."""

    __slots__ = ("_items", "_dict", "_hash")

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._dict = dict(sorted((items or {}).items()))
        self._items = tuple(self._dict.items())
        self._hash: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def __iter__(self):
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._items)
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attrs) and self._items == other._items

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}={v!r}" for k, v in self._items) + "}"


@dataclass(frozen=True, eq=False)
class Node:
    """One op application. Identity-hashed: two nodes are equal only if they are the same."""

    op: str
    inputs: tuple["Node", ...]
    attrs: Attrs
    type: ValueType
    name: str | None = None
    location: str = ""
    scope: str = ""
    role: str = "forward"  # forward | grad | update: rendering and printing tell them apart
    uid: int = field(default_factory=next_uid)

    @property
    def shape(self) -> Shape:
        if isinstance(self.type, TupleType):
            raise GraphError(f"{self.op} has {len(self.type.types)} results: read one with tuple_get")
        return self.type.shape

    @property
    def dtype(self) -> str:
        if isinstance(self.type, TupleType):
            raise GraphError(f"{self.op} has {len(self.type.types)} results: read one with tuple_get")
        return self.type.dtype

    @property
    def types(self) -> tuple[TensorType, ...]:
        """The node's result types: one, or one per result of a multi-output op."""
        return self.type.types if isinstance(self.type, TupleType) else (self.type,)

    def label(self) -> str:
        if self.name:
            return self.name
        if self.op == "variable":
            var = self.attrs["var"]
            return var.name or f"var{var.id}"
        return f"%{self.uid}"

    def __repr__(self) -> str:
        return f"Node({self.label()} = {self.op}({', '.join(i.label() for i in self.inputs)}) : {self.type})"


def topological_order(roots: Iterable[Node]) -> list[Node]:
    """All nodes reachable from ``roots``, each after its inputs (iterative DFS, deterministic)."""
    order: list[Node] = []
    state: dict[int, int] = {}  # uid -> 1 visiting, 2 done
    for root in roots:
        if state.get(root.uid) == 2:
            continue
        stack: list[tuple[Node, int]] = [(root, 0)]
        state[root.uid] = 1
        while stack:
            node, i = stack[-1]
            deps = node.inputs
            if i < len(deps):
                stack[-1] = (node, i + 1)
                child = deps[i]
                s = state.get(child.uid)
                if s is None:
                    state[child.uid] = 1
                    stack.append((child, 0))
                elif s == 1:
                    raise GraphError(f"cycle through node {child!r}")
            else:
                state[node.uid] = 2
                order.append(node)
                stack.pop()
    return order


#: Hooks the display layers register (graphnet.printing, graphnet.render), so that the IR
#: prints and draws itself without importing the layers above it.
DISPLAY: dict[str, Callable[[Any], Any]] = {}


@dataclass(frozen=True)
class Graph:
    """Outputs (named), effects (ordered), gradients, and every node they reach in topological order.

    ``effects`` are ``assign`` nodes, run after every pure node, in this order.
    ``grads`` pairs each trainable variable node with its gradient: autodiff sets them,
    clipping rewrites them, the optimizer-update pass turns them into effects.
    """

    outputs: tuple[Node, ...]
    output_names: tuple[str, ...]
    effects: tuple[Node, ...] = ()
    nodes: tuple[Node, ...] = ()
    grads: tuple[tuple[Node, Node], ...] = ()

    @staticmethod
    def build(outputs: Sequence[Node], output_names: Sequence[str], effects: Sequence[Node] = (),
              grads: Sequence[tuple[Node, Node]] = ()) -> "Graph":
        grads = tuple((p, g) for p, g in grads)
        roots = list(outputs) + list(effects) + [n for pair in grads for n in pair]
        return Graph(tuple(outputs), tuple(output_names), tuple(effects), tuple(topological_order(roots)), grads)

    def with_outputs(self, outputs: Sequence[Node], output_names: Sequence[str] | None = None) -> "Graph":
        return Graph.build(outputs, output_names or self.output_names, self.effects, self.grads)

    def users(self) -> dict[int, list[Node]]:
        """uid -> the nodes that read it."""
        result: dict[int, list[Node]] = {n.uid: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                result[i.uid].append(n)
        return result

    def count(self, op: str | None = None) -> int:
        return len(self.nodes) if op is None else sum(1 for n in self.nodes if n.op == op)

    def __str__(self) -> str:
        text = DISPLAY.get("text")
        return text(self) if text is not None else repr(self)

    def __repr__(self) -> str:
        return f"<Graph {len(self.nodes)} nodes, outputs {list(self.output_names)}, {len(self.effects)} effects>"

    def _repr_svg_(self) -> str | None:
        """Notebooks draw it (None without Graphviz's ``dot``, so they fall back to text)."""
        svg = DISPLAY.get("svg")
        return svg(self) if svg is not None else None


def with_inputs(node: Node, inputs: tuple[Node, ...]) -> Node:
    """``node`` reading ``inputs`` instead (itself when nothing changes)."""
    if inputs == node.inputs:
        return node
    return replace(node, inputs=inputs, uid=next_uid())


def rebuild(graph: Graph, rewrite: Callable[[Node, tuple[Node, ...]], Node | None]) -> Graph:
    """Map every node in topological order through ``rewrite(node, new_inputs)``.

    ``rewrite`` returns a replacement node, or None to keep the node (with its inputs
    swapped for their replacements). Passes are written with this one helper.
    """
    mapping: dict[int, Node] = {}
    for node in graph.nodes:
        new_inputs = tuple(mapping[i.uid] for i in node.inputs)
        replacement = rewrite(node, new_inputs)
        mapping[node.uid] = with_inputs(node, new_inputs) if replacement is None else replacement
    outputs = tuple(mapping[o.uid] for o in graph.outputs)
    effects = tuple(mapping[e.uid] for e in graph.effects)
    grads = tuple((mapping[p.uid], mapping[g.uid]) for p, g in graph.grads)
    # keep nodes nothing reads any more: removing them is dead-code elimination's job
    nodes = tuple(topological_order(list(outputs) + list(effects) + list(mapping.values())))
    return Graph(outputs, graph.output_names, effects, nodes, grads)
