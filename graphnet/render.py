"""Pictures of graphs: Graphviz drawings of declared graphs, compiled plans and each compile pass.

Printing a graph (``printing.py``) shows one equation a line, which is exact but hides the
shape of the network: where the skip connections join, which module a node belongs to,
how the backward pass mirrors the forward one. A drawing shows that at a glance. Each op
is one box (op name, label, key attributes), coloured by its role (forward, gradient,
update); placeholders, parameters, constants and optimizer state each have their own
shape; edges carry the producer's dtype and shape; modules are nested clusters. With
``collapse=True`` each module becomes one box per role, so a ResNet's training graph fits
on a screen; with ``passes=True`` one file is written per compile pass.

``to_dot`` only builds DOT text (no dependency). ``render`` and ``svg`` lay it out with the
``graphviz`` Python package (``pip install graphnet[viz]``) and the ``dot`` program
(``apt-get install graphviz``); a ``.dot`` file is written without either.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from . import config, ir
from .compile import SERVICES, CompiledPlan
from .errors import GraphnetError
from .ir import Graph, Node
from .ops.control import Body
from .nn.module import Module
from .passes import default_pipeline, verify
from .printing import make_graph
from .tensor import Tensor, placeholder

__all__ = ["RenderError", "render", "svg", "to_dot", "ROLE_COLORS", "LEAF_COLORS"]

#: Fill colour of an op box by ``node.role``.
ROLE_COLORS = {"forward": "#e3eefc", "grad": "#fbd5d5", "update": "#e4d7fb"}
#: Fill colours of the leaves and of optimizer state.
LEAF_COLORS = {"placeholder": "#bfe8bf", "parameter": "#ffd479", "state": "#fff0c2",
               "constant": "#e2e2e2", "optimizer": "#cdb8f2", "output": "#ffffff"}
#: Cluster backgrounds by role, lighter to darker with nesting depth.
_CLUSTER_FILLS = {"forward": ("#f6f9fe", "#ecf2fc", "#e1eaf9"), "grad": ("#fef6f6", "#fcecec", "#f9e1e1"),
                  "update": ("#f9f6fe", "#f1ebfc", "#e9e0fa")}
_DEFAULT_ATTRS = {"dilation": (1, 1), "groups": 1}
_LEAVES = ("placeholder", "variable", "constant")
_FORMATS = ("png", "svg", "pdf", "dot", "gv")


class RenderError(GraphnetError):
    """A graph could not be drawn: an object that is not a graph, an unknown format, or no Graphviz."""


class _NoGraphviz(RenderError):
    """The graphviz package or the ``dot`` program is missing (``svg`` then returns None)."""


# --- what to draw ---------------------------------------------------------------------------


def _graph_of(obj: Any, inputs: Any = None) -> tuple[Graph, Any, Graph]:
    """(graph to draw, optimizer or None, graph before any pass) for anything ``to_dot`` accepts."""
    if isinstance(obj, CompiledPlan):
        return obj.graph, obj.optimizer, obj.source
    if isinstance(obj, Graph):
        return obj, None, obj
    if isinstance(obj, Module):
        graph = make_graph(_call_module(obj, inputs))
        return graph, None, graph
    if isinstance(obj, Tensor) or (isinstance(obj, (list, tuple, Mapping)) and obj):
        values = obj.values() if isinstance(obj, Mapping) else [obj] if isinstance(obj, Tensor) else obj
        for value in values:
            if not isinstance(value, Tensor):
                raise RenderError(f"cannot draw a {type(obj).__name__} holding a {type(value).__name__}; "
                                  "expected Tensors")
        graph = make_graph(obj)
        return graph, None, graph
    raise RenderError(f"cannot draw a {type(obj).__name__}: pass a Tensor (or a list/dict of them), a Graph, "
                      "a CompiledPlan, or a Module with inputs=")


def _call_module(module: Module, inputs: Any) -> Any:
    """Declare ``module(inputs)`` in eval mode; a shape tuple becomes a float32 placeholder "x"."""
    if inputs is None:
        raise RenderError(f"to draw a {type(module).__name__}, pass inputs= (a placeholder Tensor or a shape "
                          "tuple such as (None, 1, 28, 28))")
    if isinstance(inputs, Tensor):
        args: list[Any] = [inputs]
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, Tensor) for t in inputs):
        args = list(inputs)
    elif isinstance(inputs, (list, tuple)):
        args = [placeholder("x", tuple(inputs))]
    else:
        raise RenderError(f"inputs= must be a Tensor or a shape tuple, got {type(inputs).__name__}")
    saved = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        return module(*args)
    finally:
        for m, mode in saved:
            m.training = mode


# --- labels ---------------------------------------------------------------------------------


def _q(text: str) -> str:
    """A quoted DOT string; newlines become centred line breaks."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_fmt(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _attr_lines(node: Node) -> list[str]:
    """Key attributes, one ``k=v`` a line; bulky ones (values, variables, long shapes) left out."""
    lines = []
    if node.op in ("fused", "fused_assign"):  # a fused group: its members, in order
        return [" > ".join(op for op, _, _ in node.attrs["body"])[:60]]
    for key, value in node.attrs.items():
        if key in ("value", "var", "name") or _DEFAULT_ATTRS.get(key, ...) == value:
            continue
        if key == "shape" and (not isinstance(value, tuple) or len(value) > 4):
            continue
        text = f"{key}={_fmt(value)}"
        lines.append(text if len(text) <= 28 else text[:25] + "...")
    return lines


def _var_name(node: Node) -> str:
    var = node.attrs["var"]
    return var.name or f"var{var.id}"


def _scope(node: Node) -> str:
    """The module path drawn around ``node``: parameters and their updates join their module."""
    if node.scope:
        return node.scope
    if node.op in ("assign", "fused_assign") and node.inputs and node.inputs[0].op == "variable":
        node = node.inputs[0]
    if node.op == "variable":
        return _var_name(node).rpartition(".")[0]
    return ""


def _is_param_update(node: Node) -> bool:
    return (node.op == "assign" and node.attrs.get("kind") == "param_update") or (
        node.op == "fused_assign" and "param_update" in node.attrs["kinds"])


def _fill(node: Node) -> str:
    if node.op == "variable":
        return LEAF_COLORS["parameter" if node.attrs["var"].trainable else "state"]
    if node.op in _LEAVES:
        return LEAF_COLORS[node.op]
    return ROLE_COLORS.get(node.role, "#ffffff")


def _tooltip(node: Node) -> str:
    """Hover text in SVG: op, value, type, module and the user's ``file:line``."""
    scope = _scope(node)
    text = f"{node.op} {node.label()} : {node.type}" + (f"\nmodule {scope}" if scope else "")
    return f"tooltip={_q(text + (chr(10) + node.location if node.location else ''))}"


def _node_stmt(node: Node, ref: int | None = None) -> str:
    """The DOT statement drawing one node of the full view (``ref``: its cross-reference number)."""
    fill = f'fillcolor="{_fill(node)}", {_tooltip(node)}'
    if node.op == "placeholder":
        return f"n{node.uid} [label={_q(node.attrs['name'])}, shape=ellipse, style=filled, {fill}]"
    if node.op == "variable":
        return f"n{node.uid} [label={_q(_var_name(node))}, shape=box3d, style=filled, {fill}]"
    if node.op == "constant":
        return f"n{node.uid} [label={_q(_const_text(node))}, shape=box, style=filled, fontsize=8, " \
               f"height=0.2, {fill}]"
    lines = [node.op if ref is None else f"{node.op}  #{ref}"]
    if node.name:
        lines.append(node.name)
    elif node.op in ("assign", "fused_assign") and node.inputs and node.inputs[0].op == "variable":
        lines.append(_var_name(node.inputs[0]))
    lines += _attr_lines(node)
    return f"n{node.uid} [label={_q(chr(10).join(lines))}, {fill}]"


def _fused_cluster(node: Node) -> str:
    """A fused group as a dashed cluster of its members; the last member (the group's result)
    keeps the node's id, so edges from the group leave from it."""
    body = node.attrs["body"]
    ids = [f"f{node.uid}_{i}" for i in range(len(body) - 1)] + [f"n{node.uid}"]
    fill = f'fillcolor="{_fill(node)}", {_tooltip(node)}'
    parts = [f"label={_q(f'fused ({len(body)} ops, one kernel)')}", 'style="dashed,rounded"', "fontsize=8"]
    for i, (op, args, _) in enumerate(body):
        parts.append(f"{ids[i]} [label={_q(op if i < len(body) - 1 else op + (chr(10) + node.name if node.name else ''))}, "
                     f"{fill}]")
        parts += [f"{ids[a]} -> {ids[i]}" for a in dict.fromkeys(args) if a >= 0]
    return f"subgraph {_q(f'cluster_fused_{node.uid}')} {{ " + "; ".join(parts) + " }"


def _loop_cluster(node: Node, stmt: str) -> str:
    """A loop or branch node inside a dotted cluster with its bodies: each body's ops, their
    edges, and its arguments and results (bodies inside bodies are drawn as their node)."""
    parts = [f"label={_q(f'{node.op}: ' + ', '.join(f'{k} ({len(b.graph.nodes)} nodes)' for k, b in _bodies(node)))}",
             'style="dotted,rounded"', "fontsize=8", stmt]
    for key, body in _bodies(node):
        ids = {n.uid: f"b{node.uid}_{key}_{i}" for i, n in enumerate(body.graph.nodes)}
        for n in body.graph.nodes:
            label = n.attrs["name"] if n.op == "placeholder" else "const" if n.op == "constant" else (
                "fused: " + " > ".join(op for op, _, _ in n.attrs["body"]) if n.op == "fused" else n.op)
            shape = "ellipse" if n.op in ("placeholder", "constant") else "box"
            parts.append(f"{ids[n.uid]} [label={_q(label)}, shape={shape}, fontsize=7]")
            parts += [f"{ids[i.uid]} -> {ids[n.uid]} [arrowsize=0.4]" for i in dict.fromkeys(n.inputs)]
    return f"subgraph {_q(f'cluster_loop_{node.uid}')} {{ " + "; ".join(parts) + " }"


def _bodies(node: Node) -> list[tuple[str, Body]]:
    return [(k, v) for k, v in node.attrs.items() if isinstance(v, Body)]


def _fused_readers(node: Node, src: Node) -> list[str]:
    """The ids of the members of fused ``node`` that read its input ``src``."""
    position = node.inputs.index(src)
    body = node.attrs["body"]
    return [f"f{node.uid}_{i}" if i < len(body) - 1 else f"n{node.uid}"
            for i, (_, args, _) in enumerate(body) if -position - 1 in args] or [f"n{node.uid}"]


def _const_text(node: Node) -> str:
    array = node.attrs["value"].array
    return f"{array.item():g}" if array.size == 1 and array.dtype.kind in "fiub" else f"const {node.type}"


def _stub_label(node: Node, ref: int | None) -> str:
    """What a reference to a forward value says: a leaf's name or value, else ``#12 relu``."""
    if node.op == "placeholder":
        return node.attrs["name"]
    if node.op == "variable":
        return _var_name(node)
    if node.op == "constant":
        return _const_text(node)
    return f"#{ref} {node.op}"


def _state_label(optimizer: Any) -> str | None:
    """The optimizer-state cylinder's text; None when the optimizer is known to keep no state."""
    if optimizer is None:
        return "optimizer state"
    names = tuple(getattr(optimizer, "state_names", ()))
    if not names:
        return None
    return f"{getattr(optimizer, 'name', '') or 'optimizer'} state\n" + ", ".join(names)


def _legend(kinds: list[str]) -> str:
    """One HTML-table node explaining the colours and shapes in use."""
    rows = {
        "placeholder": (LEAF_COLORS["placeholder"], "placeholder (input fed per run)"),
        "parameter": (LEAF_COLORS["parameter"], "parameter (trainable Variable)"),
        "state": (LEAF_COLORS["state"], "state Variable (running statistics)"),
        "constant": (LEAF_COLORS["constant"], "constant"),
        "forward": (ROLE_COLORS["forward"], "forward op"),
        "grad": (ROLE_COLORS["grad"], "gradient op (autodiff)"),
        "update": (ROLE_COLORS["update"], "parameter update"),
        "optimizer": (LEAF_COLORS["optimizer"], "optimizer state (cylinder)"),
        "reference": ("#ffffff", "dashed: #n, a forward value read here"),
    }
    cells = "".join(f'<tr><td bgcolor="{rows[k][0]}" align="left">{rows[k][1]}</td></tr>' for k in kinds)
    return ('legend [shape=plaintext, style="", fontsize=9, label=<<table border="0" cellborder="1" '
            f'cellspacing="0" cellpadding="3"><tr><td><b>legend</b></td></tr>{cells}</table>>]')


def _kind(node: Node) -> str:
    if node.op == "variable":
        return "parameter" if node.attrs["var"].trainable else "state"
    return node.op if node.op in _LEAVES else node.role


# --- DOT ------------------------------------------------------------------------------------


#: Above this many nodes, the backward pass reads forward values through references (see ``_dot``).
STUB_THRESHOLD = 120


def _dot(graph: Graph, optimizer: Any, collapse_depth: int, title: str, stubs: bool | None = None) -> str:
    """DOT text for ``graph``: the full view (``collapse_depth`` 0) or modules as boxes.

    In a full view with ``stubs`` (by default when it has more than ``STUB_THRESHOLD``
    nodes), a gradient or update node does not draw an edge from a forward value: it reads
    a small dashed reference box (``#12 relu``, a parameter's name) in its own cluster.
    Those edges would run the height of the picture, and ``dot`` spends minutes on them.
    """
    state_label = _state_label(optimizer)
    # where each node is drawn: its own id, or (collapsed) its group's id
    group_of: dict[int, str] = {}
    groups: dict[tuple[str, str], list[Node]] = {}  # (role, module path) -> its nodes
    if collapse_depth > 0:
        for node in graph.nodes:
            scope = _scope(node)
            if scope and node.op not in ("placeholder", "constant"):
                key = (node.role, ".".join(scope.split(".")[:collapse_depth]))
                members = groups.setdefault(key, [])
                members.append(node)
                group_of[node.uid] = group_of[members[0].uid] if len(members) > 1 else f"g{len(groups) - 1}"
    if stubs is None:  # update ops sit beside their parameter: only the forward and backward count
        stubs = sum(1 for n in graph.nodes if n.role != "update") > STUB_THRESHOLD
    stubs = stubs and not collapse_depth

    def where(node: Node) -> str:
        return group_of.get(node.uid, f"n{node.uid}")

    def crosses(src: Node, dst: Node) -> bool:  # an edge drawn as a reference
        return stubs and src.role == "forward" and dst.role != "forward"

    refs: dict[int, int] = {}  # uid of a forward op read by the backward pass -> its number
    referenced = {src.uid for n in graph.nodes for src in n.inputs if crosses(src, n) and src.op not in _LEAVES}
    for node in graph.nodes:
        if node.uid in referenced:
            refs[node.uid] = len(refs) + 1

    clusters: dict[tuple[str, str], list[str]] = {}  # (role, module path) -> statements inside it
    top: list[str] = []

    def place(stmt: str, role: str, scope: str) -> None:
        if not scope:
            top.append(stmt)
            return
        parts = scope.split(".")
        for depth in range(1, len(parts) + 1):
            clusters.setdefault((role, ".".join(parts[:depth])), [])
        clusters[(role, scope)].append(stmt)

    kinds: set[str] = set()
    outputs = {o.uid for o in graph.outputs}
    for node in graph.nodes:
        if node.uid in group_of or (node.op == "constant" and node.uid not in outputs):
            continue  # constants are drawn beside each reader (below), not shared across the picture
        kinds.add(_kind(node))
        stmt = _fused_cluster(node) if node.op == "fused" else _node_stmt(node, refs.get(node.uid))
        place(_loop_cluster(node, stmt) if _bodies(node) else stmt, node.role, _scope(node))
        if _is_param_update(node) and state_label is not None:
            kinds.add("optimizer")
            place(f"s{node.uid} [label={_q(state_label)}, shape=cylinder, style=filled, fontsize=8, "
                  f"fillcolor=\"{LEAF_COLORS['optimizer']}\"]", node.role, _scope(node))
            place(f"s{node.uid} -> n{node.uid} [style=dashed, dir=both, arrowsize=0.5]", node.role, _scope(node))
    for (role, path), members in groups.items():
        gid = group_of[members[0].uid]
        kinds.update(_kind(n) for n in members)
        ops = sum(1 for n in members if n.op != "variable")
        params = sum(1 for n in members if n.op == "variable" and n.attrs["var"].trainable)
        state = len(members) - ops - params
        what = f"{ops} ops" if role == "forward" else f"{role}, {ops} ops"
        extra = ", ".join(t for t in (f"{params} parameters" * bool(params), f"{state} state" * bool(state)) if t)
        label = f"{path} ({what})" + (f"\n{extra}" if extra else "")
        top.append(f"{gid} [label={_q(label)}, shape=box, style=\"rounded,filled,bold\", margin=\"0.2,0.1\", "
                   f"fillcolor=\"{ROLE_COLORS.get(role, '#ffffff')}\"]")
        if role == "update" and state_label is not None:
            kinds.add("optimizer")
            top.append(f"s{gid} [label={_q(state_label)}, shape=cylinder, style=filled, fontsize=8, "
                       f"fillcolor=\"{LEAF_COLORS['optimizer']}\"]")
            top.append(f"s{gid} -> {gid} [style=dashed, dir=both, arrowsize=0.5]")

    # edges, one per (producer box, consumer box), labelled with the producer's type(s)
    edges: dict[tuple[str, str], list[str]] = {}
    stub_ids: dict[tuple[int, str, str], str] = {}
    for node in graph.nodes:
        for src in node.inputs:
            a, b = where(src), where(node)
            if src.op == "constant":
                if node.uid in group_of:
                    continue  # part of the module's box
                a = f"c{src.uid}_{node.uid}"
                kinds.add("constant")
                place(_node_stmt(src).replace(f"n{src.uid} ", f"{a} ", 1), node.role, _scope(node))
            elif crosses(src, node):
                key = (src.uid, node.role, _scope(node))
                if key not in stub_ids:
                    stub_ids[key] = a = f"r{len(stub_ids)}"
                    kinds.add("reference")
                    place(f"{a} [label={_q(_stub_label(src, refs.get(src.uid)))}, shape=box, fontsize=8, "
                          f"height=0.2, style=\"rounded,filled,dashed\", fillcolor=\"{_fill(src)}\", {_tooltip(src)}]",
                          node.role, _scope(node))
                a = stub_ids[key]
            readers = _fused_readers(node, src) if node.op == "fused" and node.uid not in group_of else [b]
            for b in readers:
                if a != b:
                    types = edges.setdefault((a, b), [])
                    if str(src.type) not in types:
                        types.append(str(src.type))
    for i, (name, out) in enumerate(zip(graph.output_names, graph.outputs)):
        top.append(f"out{i} [label={_q(name)}, shape=ellipse, peripheries=2, style=filled, "
                   f"fillcolor=\"{LEAF_COLORS['output']}\"]")
        edges.setdefault((where(out), f"out{i}"), [str(out.type)])

    lines = [
        "digraph graphnet {",
        f"  graph [rankdir=TB, newrank=true, fontname=Helvetica, fontsize=13, labelloc=t, label={_q(title)}, "
        "nodesep=0.2, ranksep=0.3];",
        '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=10, height=0.3, '
        'margin="0.08,0.03", fillcolor=white];',
        '  edge [fontname=Helvetica, fontsize=7, color="#5b5b5b", fontcolor="#3b3b3b", arrowsize=0.6];',
    ]
    lines += [f"  {s};" for s in top]
    _emit_clusters(clusters, lines)
    for (a, b), types in edges.items():
        label = "\n".join(types[:3]) + (f"\n+{len(types) - 3} more" if len(types) > 3 else "")
        lines.append(f"  {a} -> {b} [label={_q(label)}];")
    order = ["placeholder", "parameter", "state", "constant", "forward", "grad", "update", "optimizer", "reference"]
    lines.append("  " + _legend([k for k in order if k in kinds]) + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _emit_clusters(clusters: dict[tuple[str, str], list[str]], lines: list[str]) -> None:
    """Nested ``subgraph cluster_...`` blocks: module "a" holds "a.b"; one tree per role."""
    children: dict[tuple[str, str], list[str]] = {}
    for role, path in clusters:
        children.setdefault((role, path.rpartition(".")[0]), []).append(path)

    def emit(role: str, path: str, depth: int) -> None:
        pad = "  " * depth
        fills = _CLUSTER_FILLS.get(role, _CLUSTER_FILLS["forward"])
        label = path if role == "forward" else f"{path} ({role})"
        lines.append(f"{pad}subgraph {_q(f'cluster_{role}:{path}')} {{")
        lines.append(f"{pad}  graph [label={_q(label)}, labeljust=l, fontsize=9, style=\"rounded,filled\", "
                     f"fillcolor=\"{fills[min(depth - 1, 2)]}\", color=\"#9aa5b1\"];")
        lines.extend(f"{pad}  {s};" for s in clusters[(role, path)])
        for child in children.get((role, path), []):
            emit(role, child, depth + 1)
        lines.append(f"{pad}}}")

    for role, path in clusters:
        if "." not in path:
            emit(role, path, 1)


def _default_title(graph: Graph, optimizer: Any, collapse_depth: int) -> str:
    kind = f"training graph ({getattr(optimizer, 'name', 'optimizer')})" if optimizer is not None else "graph"
    text = f"{kind}: {len(graph.nodes)} nodes, outputs {', '.join(graph.output_names)}"
    return text + (f"; modules collapsed to depth {collapse_depth}" if collapse_depth else "")


def to_dot(obj: Any, *, collapse: bool = False, title: str | None = None, collapse_depth: int = 1,
           inputs: Any = None, stubs: bool | None = None) -> str:
    """DOT source drawing ``obj``: a Tensor, a list/tuple/dict of Tensors, a Graph, a
    CompiledPlan (its compiled graph, with gradients and updates) or a Module (declared on
    ``inputs``, a placeholder Tensor or a shape tuple, in eval mode).

    ``collapse=True`` draws each module (its path cut to ``collapse_depth`` components) as
    one box per role. ``stubs`` (default: above ``STUB_THRESHOLD`` nodes) draws the forward
    values the backward pass reads as small references instead of long edges. Raises
    RenderError for anything else.
    """
    graph, optimizer, _ = _graph_of(obj, inputs)
    depth = max(1, int(collapse_depth)) if collapse else 0
    title = title if title is not None else _default_title(graph, optimizer, depth)
    return _dot(graph, optimizer, depth, title, stubs)


# --- layout and files -----------------------------------------------------------------------

#: The largest side of a PNG, in inches at 96 dpi (SVG and PDF keep the full size).
PNG_MAX_INCHES = 80
_INSTALL = ("the Graphviz 'dot' program was not found; install Graphviz (apt-get install graphviz, "
            "brew install graphviz, or conda install -c conda-forge graphviz). Writing a .dot or .gv "
            "file works without it.")


def _pipe(source: str, fmt: str) -> bytes:
    """Lay out DOT ``source`` with ``dot`` into ``fmt`` bytes."""
    try:
        import graphviz
    except ImportError as exc:
        raise _NoGraphviz("drawing needs the graphviz Python package: pip install graphnet[viz] "
                          "(or pip install graphviz); writing a .dot file works without it") from exc
    if shutil.which("dot") is None:
        raise _NoGraphviz(_INSTALL)
    try:
        return graphviz.Source(source).pipe(format=fmt)
    except graphviz.ExecutableNotFound as exc:
        raise _NoGraphviz(_INSTALL) from exc
    except graphviz.CalledProcessError as exc:
        stderr = (exc.stderr or b"").decode(errors="replace").strip()
        raise RenderError(f"graphviz 'dot' failed to draw the graph: {stderr or exc}") from exc


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(source: str, path: Path, fmt: str) -> str:
    if fmt == "png":  # scale huge pictures down to PNG_MAX_INCHES rather than write 200 megapixels
        size = f'size="{PNG_MAX_INCHES},{PNG_MAX_INCHES}", '
        source = source.replace("graph [rankdir=TB", f"graph [{size}rankdir=TB", 1)
    _write(path, source.encode() if fmt in ("dot", "gv") else _pipe(source, fmt))
    return str(path)


def _stages(graph: Graph, optimizer: Any, mode: str | None = None) -> list[tuple[str, Graph, int]]:
    """(pass name, graph after it, node count before) for each graph pass, as ``run_pipeline``
    runs them, in the compiled plan's mode (its lowering and plan passes make no graph)."""
    stages = [("source", graph, len(graph.nodes))]
    for p in default_pipeline(optimizer, mode):
        if p.level != "graph":
            break
        if p.optional and p.name in config.flags.disabled_passes:
            continue
        before = len(graph.nodes)
        graph = p.fn(graph)
        if config.flags.verify and p.name != "verify":
            verify(graph)
        stages.append((p.name, graph, before))
    return stages


def render(obj: Any, path: str | os.PathLike, format: str | None = None, *,  # noqa: A002 - as graphviz
           collapse: bool = False, passes: bool = False, **kw: Any) -> str | list[str]:
    """Draw ``obj`` (anything ``to_dot`` takes) into ``path``; return the path written.

    The format follows the suffix (png, svg, pdf; .dot/.gv write the DOT source only and
    need no Graphviz) unless ``format`` is given. ``passes=True`` replays the compile
    pipeline from the graph as declared and writes one file per stage,
    ``graph.00-source.svg``, ``graph.01-verify.svg``, ..., returning the list of paths.
    Other keywords (``title``, ``collapse_depth``, ``inputs``, ``stubs``) go to ``to_dot``.
    """
    target = Path(path)
    fmt = (format or target.suffix.lstrip(".")).lower()
    if fmt not in _FORMATS:
        raise RenderError(f"cannot tell the format of {str(path)!r}: use a suffix or format= among {_FORMATS}")
    if not target.suffix:
        target = target.with_suffix(f".{fmt}")
    if not passes:
        return _save(to_dot(obj, collapse=collapse, **kw), target, fmt)
    _, optimizer, source = _graph_of(obj, kw.pop("inputs", None))
    # replay in the plan's mode: "train" or "eval" for every module; per module otherwise
    mode = obj.plan.mode if isinstance(obj, CompiledPlan) and obj.plan.mode in ("train", "eval") else None
    depth = max(1, int(kw.pop("collapse_depth", 1))) if collapse else 0
    prefix, stubs = kw.pop("title", None), kw.pop("stubs", None)
    if kw:
        raise RenderError(f"unexpected keyword arguments: {sorted(kw)}")
    written = []
    for i, (name, stage, before) in enumerate(_stages(source, optimizer, mode)):
        counts = f"{len(stage.nodes)} nodes" if name == "source" else f"{before} -> {len(stage.nodes)} nodes"
        title = f"{prefix + ': ' if prefix else ''}{i:02d} {name}: {counts}"
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        stage_path = target.with_name(f"{target.stem}.{i:02d}-{safe}{target.suffix}")
        written.append(_save(_dot(stage, optimizer, depth, title, stubs), stage_path, fmt))
    return written


def svg(obj: Any, **kw: Any) -> str | None:
    """SVG text drawing ``obj`` (for ``_repr_svg_`` in notebooks); None when Graphviz is missing."""
    try:
        return _pipe(to_dot(obj, **kw), "svg").decode("utf-8")
    except _NoGraphviz:
        return None


ir.DISPLAY["svg"] = svg
SERVICES["svg"] = svg
