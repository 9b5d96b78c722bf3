"""Symbolic dimensions that must agree, checked against the feeds before a plan runs.

Each ``None`` in a placeholder's shape is a dimension of its own, known only at run time.
Shape rules that need two dims equal (matmul's inner dims, cross-entropy's scores and
labels, concat, a bias) unify them; broadcasting two of them requires each to be 1 or the
result; a static size meeting one binds it. ``DimConstraints`` is what the compiler
learned (``graphnet.passes.dim_constraints``); ``check`` holds a run's feeds against it, so
``labels`` of 3 rows with ``x`` of 2 is a ``FeedError`` naming both before anything runs,
not a broadcasting error from inside a kernel.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from .errors import FeedError


class Sym(str):
    """A placeholder's unknown dim (``feed``'s dim ``axis``), or one derived by broadcasting."""

    feed: str | None
    axis: int

    def __new__(cls, text: str, feed: str | None = None, axis: int = -1) -> "Sym":
        sym = super().__new__(cls, text)
        sym.feed, sym.axis = feed, axis
        return sym

    def describe(self) -> str:
        return f"{self.feed}'s dim {self.axis}" if self.feed is not None else "a broadcast dim"


@dataclass
class DimConstraints:
    """Plain data: which feed dims are which symbol, which symbols are one, what binds them."""

    feed_dims: list[tuple[str, int, str]] = field(default_factory=list)  # (feed, axis, symbol)
    parent: dict[str, str] = field(default_factory=dict)                 # union-find over symbols
    static: dict[str, tuple[int, str]] = field(default_factory=dict)     # class -> (size, where)
    broadcasts: list[tuple[tuple[Any, ...], str, str]] = field(default_factory=list)  # (inputs, result, where)
    origin: dict[str, str] = field(default_factory=dict)                 # symbol -> description
    # (dims, minimum, where, what): the product of ``dims`` must be at least ``minimum``
    at_least: list[tuple[tuple[Any, ...], int, str, str]] = field(default_factory=list)

    def find(self, sym: str) -> str:
        root = sym
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        return root

    def union(self, a: str, b: str, where: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        if rb in self.static:
            self.bind(ra, *self.static.pop(rb))

    def bind(self, sym: str, size: int, where: str) -> None:
        root = self.find(sym)
        self.static.setdefault(root, (size, where))

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Raise FeedError unless the feeds' ``shapes`` satisfy every constraint."""
        if not self.feed_dims:
            return
        values: dict[str, tuple[int, str]] = {}  # class -> (size, who set it)
        for feed, axis, sym in self.feed_dims:
            shape = shapes.get(feed)
            if shape is None or axis >= len(shape):  # a graph (from a file) whose feeds differ: nothing to hold
                continue
            size = shape[axis]
            root = self.find(sym)
            if root in values and values[root][0] != size:
                raise FeedError(f"feed {feed!r}: dim {axis} is {size}, but it is {values[root][1]} "
                                f"({values[root][0]})")
            values.setdefault(root, (size, f"{feed}'s dim {axis}"))
        for root, (size, where) in self.static.items():
            if root in values and values[root][0] != size:
                raise FeedError(f"{values[root][1]} is {values[root][0]}, but {where} needs {size}")
        for inputs, result, where in self.broadcasts:
            sizes = [d if isinstance(d, int) else values.get(self.find(d), (None,))[0] for d in inputs]
            if any(s is None for s in sizes):
                continue
            top = max(sizes)
            bad = [(d, s) for d, s in zip(inputs, sizes) if s not in (1, top)]
            if bad:
                named = ", ".join(f"{self._name(d, values)} = {s}" for d, s in zip(inputs, sizes))
                raise FeedError(f"dims {named} do not broadcast at {where}")
            if not result:
                continue
            root = self.find(result)
            if root in values and values[root][0] != top:
                raise FeedError(f"{values[root][1]} is {values[root][0]}, but broadcasting at {where} gives {top}")
            values.setdefault(root, (top, f"the broadcast at {where}"))
        for dims, minimum, where, what in self.at_least:
            sizes = [d if isinstance(d, int) else values.get(self.find(d), (None,))[0] for d in dims]
            if any(s is None for s in sizes):
                continue
            product = 1
            for s in sizes:
                product *= s
            if product < minimum:
                named = " * ".join(f"{self._name(d, values)} = {s}" if not isinstance(d, int) else str(d)
                                   for d, s in zip(dims, sizes))
                raise FeedError(f"{where}: {what}; this run gives {product} ({named})")

    def _name(self, d: Any, values: Mapping[str, tuple[int, str]]) -> str:
        if isinstance(d, int):
            return str(d)
        return self.origin.get(d) or values.get(self.find(d), (0, str(d)))[1]


# --- recording, while the compiler re-runs the shape rules with one Sym per unknown dim ---------

_recording: list[tuple[DimConstraints, list[str]]] = []  # (constraints, [where the current rule runs])
_modes: list[Any] = []  # the train/eval mode the plan being recorded is compiled in


@contextlib.contextmanager
def recording(constraints: DimConstraints, mode: Any = None) -> Iterator[list[str]]:
    """Shape rules run inside record what they require of Syms into ``constraints``; ``mode``
    is the plan's train/eval mode (graphnet.modes.resolve), for rules whose requirements
    depend on it."""
    where: list[str] = [""]
    _recording.append((constraints, where))
    _modes.append(mode)
    try:
        yield where
    finally:
        _recording.pop()
        _modes.pop()


def recording_mode() -> tuple[bool, Any]:
    """(whether requirements are being recorded, the mode of the plan they are for)."""
    return bool(_recording), _modes[-1] if _modes else None


def record_at_least(dims: tuple[Any, ...], minimum: int, what: str) -> None:
    """Require the product of ``dims`` to be at least ``minimum`` at run time (``what`` says
    why, for the FeedError); nothing when not recording."""
    if _recording:
        constraints, where = _recording[-1]
        constraints.at_least.append((tuple(dims), minimum, where[0], what))


def record_equal(a: Any, b: Any) -> bool:
    """Called by ``dims_equal``: True when a Sym is involved and the equality was recorded."""
    if not _recording or not (isinstance(a, str) or isinstance(b, str)):
        return False
    constraints, where = _recording[-1]
    if isinstance(a, str) and isinstance(b, str):
        if not (isinstance(a, Sym) or isinstance(b, Sym)):
            return False  # two names the user chose: equal only if the same (as declared)
        constraints.union(a, b, where[0])
    elif isinstance(a, int) or isinstance(b, int):
        name, size = (a, b) if isinstance(a, str) else (b, a)
        constraints.bind(name, size, where[0])
    else:
        return False  # an unknown dim: nothing to learn
    return True


def record_broadcast(dims: list[Any], result: Any) -> Any:
    """Called by ``broadcast_dims`` with the dims it met (1s aside) and the result it would give;
    returns the result to use: a fresh Sym for two different Syms."""
    if not _recording or not any(isinstance(d, Sym) for d in dims):
        return result
    constraints, where = _recording[-1]
    distinct = list(dict.fromkeys(d for d in dims if d is not None))
    if len(distinct) <= 1:
        return result
    if result is None:
        result = Sym(f"bcast{len(constraints.broadcasts)}")
        constraints.origin[result] = f"the broadcast at {where[0]}"
    constraints.broadcasts.append((tuple(distinct), result if isinstance(result, str) else "", where[0]))
    return result
