"""graphnet.render: DOT text for every kind of graph, and pictures laid out by Graphviz's ``dot``."""

from __future__ import annotations

import importlib.util
import re
import shutil
import struct
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import graphnet as gn
from graphnet import config
from graphnet.passes import default_pipeline
from graphnet.render import LEAF_COLORS, ROLE_COLORS, RenderError, render, svg, to_dot

ROOT = Path(__file__).resolve().parent.parent
HAVE_DOT = shutil.which("dot") is not None and importlib.util.find_spec("graphviz") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="needs Graphviz: apt-get install graphviz, pip install graphviz")


# --- graphs -----------------------------------------------------------------------------------


def seed_cnn() -> gn.nn.Module:
    return gn.nn.Sequential(
        gn.nn.Conv2d(1, 10, 5), gn.nn.MaxPool2d(2, 2), gn.nn.ReLU(),
        gn.nn.Conv2d(10, 20, 5), gn.nn.MaxPool2d(2, 2), gn.nn.ReLU(),
        gn.nn.Flatten(), gn.nn.Linear(320, 120), gn.nn.ReLU(), gn.nn.Linear(120, 10))


@pytest.fixture(scope="module")
def seed_plan() -> gn.CompiledPlan:
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 1, 28, 28))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    return gn.compile(gn.losses.cross_entropy(seed_cnn()(x), labels), optimizer=gn.optim.RMSprop(lr=1e-3))


@pytest.fixture(scope="module")
def resnet_plan() -> gn.CompiledPlan:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from resnet import ResNet
    finally:
        sys.path.remove(str(ROOT / "examples"))
    gn.manual_seed(0)
    x = gn.placeholder("x", ("batch", 1, 28, 28))
    labels = gn.placeholder("labels", ("batch",), dtype="int64")
    return gn.compile(gn.losses.cross_entropy(ResNet()(x), labels), optimizer=gn.optim.Adam(lr=1e-3))


# --- reading DOT and pictures -----------------------------------------------------------------


def node_statements(dot: str) -> dict[str, str]:
    """DOT node id -> its statement (edges and graph/node/edge defaults left out)."""
    found = {}
    for line in dot.splitlines():
        m = re.match(r"\s*([A-Za-z_]\w*) \[", line)
        if m and "->" not in line and m.group(1) not in ("graph", "node", "edge"):
            found[m.group(1)] = line
    return found


def edges(dot: str) -> list[tuple[str, str]]:
    return re.findall(r"^\s*(\w+) -> (\w+) ", dot, flags=re.M)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def svg_texts(path: Path) -> list[str]:
    """The text drawn in an SVG picture, one string per <text> element."""
    return [el.text or "" for el in ET.parse(path).getroot().iter() if el.tag.endswith("}text")]


def assert_svg(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag.rsplit("}", 1)[-1] == "svg"


# --- DOT: what the picture says ---------------------------------------------------------------


def test_dot_names_every_op_and_module_cluster(seed_plan, resnet_plan):
    for plan in (seed_plan, resnet_plan):
        dot = to_dot(plan)
        missing = {n.op for n in plan.graph.nodes if not re.search(rf"\b{re.escape(n.op)}\b", dot)}
        assert not missing
        assert dot.count("{") == dot.count("}")
    seed = to_dot(seed_plan)
    assert 'subgraph "cluster_forward:0"' in seed and 'subgraph "cluster_grad:0"' in seed
    assert "float32[?,1,28,28]" in seed  # None dims are '?'
    # nested modules: stage1.conv1 is a cluster inside stage1's, one level deeper
    lines = to_dot(resnet_plan).splitlines()
    outer = next(ln for ln in lines if ln.strip() == 'subgraph "cluster_forward:stage1" {')
    inner = next(ln for ln in lines if ln.strip() == 'subgraph "cluster_forward:stage1.conv1" {')
    assert lines.index(outer) < lines.index(inner)
    assert len(inner) - len(inner.lstrip()) > len(outer) - len(outer.lstrip())


def test_symbolic_dims_attributes_and_leaves():
    gn.manual_seed(0)
    x = gn.placeholder("x", ("batch", 784))
    w = gn.Parameter(np.zeros((784, 10), dtype="float32"), name="w")
    dot = to_dot(gn.sum(gn.matmul(x, w) + 1.5, axis=1))
    assert "float32[batch,784]" in dot and "float32[batch,10]" in dot
    stmts = node_statements(dot)
    x_stmt = stmts[f"n{x.node.uid}"]
    assert 'label="x"' in x_stmt and "shape=ellipse" in x_stmt and LEAF_COLORS["placeholder"] in x_stmt
    w_stmt = stmts[f"n{w.node.uid}"]
    assert 'label="w"' in w_stmt and "shape=box3d" in w_stmt and LEAF_COLORS["parameter"] in w_stmt
    assert any('label="1.5"' in s and LEAF_COLORS["constant"] in s for s in stmts.values())
    assert any('label="sum\\naxes=(1,)' in s for s in stmts.values())


def test_key_attributes_shown(resnet_plan):
    stmts = node_statements(to_dot(resnet_plan)).values()
    assert any(re.search(r'label="conv2d( +#\d+)?\\n', s) and "stride=(2,2)" in s and "padding=(1,1)" in s
               for s in stmts)
    assert any("batch_norm_train" in s and "eps=1e-05" in s for s in stmts)
    assert not any("dilation" in s for s in stmts)  # defaults left out
    assert not any("Variable(" in s for s in stmts)  # bulky attributes left out


def test_role_colours_and_optimizer_state(seed_plan):
    dot = to_dot(seed_plan)
    stmts = node_statements(dot)
    by_role = {}
    for node in seed_plan.graph.nodes:
        if node.op not in ("placeholder", "variable", "constant", "fused"):  # a fused group is a cluster
            by_role.setdefault(node.role, node)
    assert set(by_role) == {"forward", "grad", "update"}
    for role, node in by_role.items():
        assert f'fillcolor="{ROLE_COLORS[role]}"' in stmts[f"n{node.uid}"], role
    assert len(set(ROLE_COLORS.values())) == 3
    updates = [n for n in seed_plan.graph.nodes if (n.op == "assign" and n.attrs["kind"] == "param_update")
               or (n.op == "fused_assign" and "param_update" in n.attrs["kinds"])]
    assert len(updates) == 8  # 4 layers, weight and bias
    for node in updates:
        state = stmts[f"s{node.uid}"]
        assert "shape=cylinder" in state and "square_avg" in state  # RMSprop's slot
        assert (f"s{node.uid}", f"n{node.uid}") in edges(dot)
    assert "gradient op" in stmts["legend"] and "parameter update" in stmts["legend"]


def test_big_training_graph_reads_forward_values_through_references(resnet_plan, seed_plan):
    role = {f"n{n.uid}": n.role for n in resnet_plan.graph.nodes}
    dot = to_dot(resnet_plan)
    cross = [(a, b) for a, b in edges(dot) if role.get(a) == "forward" and role.get(b) in ("grad", "update")]
    assert not cross  # long forward -> backward edges make dot take minutes
    refs = [s for k, s in node_statements(dot).items() if k.startswith("r")]
    assert refs and all("dashed" in s for s in refs)
    assert any(re.search(r'label="#\d+ (batch_norm_train|fused|relu)"', s) for s in refs)  # a forward value
    # a small graph keeps real edges
    role = {f"n{n.uid}": n.role for n in seed_plan.graph.nodes}
    assert any(role.get(a) == "forward" and role.get(b) == "grad" for a, b in edges(to_dot(seed_plan)))


def test_collapsed_view(resnet_plan, seed_plan):
    full = node_statements(to_dot(resnet_plan))
    collapsed = to_dot(resnet_plan, collapse=True)
    boxes = node_statements(collapsed)
    assert len(boxes) * 4 < len(full)
    labels = " ".join(boxes.values())
    for module in ("stem", "stage1", "stage2", "stage3", "pool", "head"):
        assert re.search(rf'label="{module} \(\d+ ops\)', labels), module
        assert re.search(rf'label="{module} \(grad, \d+ ops\)', labels), module
    assert re.search(r'label="stage1 \(update, \d+ ops\)', labels)  # 3 convs + 3 BN (weight, bias)
    pairs = edges(collapsed)
    assert len(pairs) == len(set(pairs))  # one edge per pair of boxes
    assert "float32[batch,16,14,14]" in collapsed
    deeper = node_statements(to_dot(resnet_plan, collapse=True, collapse_depth=2))
    assert len(boxes) < len(deeper) < len(full)
    assert any('label="stage1.conv1 (' in s for s in deeper.values())
    assert any('label="0 (' in s for s in node_statements(to_dot(seed_plan, collapse=True)).values())


def test_accepted_objects_and_errors(seed_plan):
    x = gn.placeholder("x", (None, 4))
    y = gn.relu(x)
    assert "relu" in to_dot(y) and "relu" in to_dot([y, x]) and "relu" in to_dot({"out": y})
    assert 'label="out"' in to_dot({"out": y})
    assert "relu" in to_dot(gn.make_graph(y))
    model = gn.nn.Sequential(gn.nn.Linear(4, 3), gn.nn.Dropout(0.5))
    dot = to_dot(model, inputs=(None, 4))
    assert "matmul" in dot and "float32[?,4]" in dot and "dropout_mask" not in dot  # declared in eval mode
    assert model.training  # and the mode restored
    assert "matmul" in to_dot(model, inputs=x)
    with pytest.raises(RenderError, match="inputs="):
        to_dot(model)
    for bad in (42, "graph", [y, 3], {}, None):
        with pytest.raises(RenderError, match=type(bad).__name__):
            to_dot(bad)
    assert issubclass(RenderError, gn.GraphnetError)
    with pytest.raises(RenderError, match="format"):
        render(seed_plan, "graph.bmp")


# --- pictures ---------------------------------------------------------------------------------


@needs_dot
def test_png_svg_pdf(seed_plan, resnet_plan, tmp_path):
    for name, plan in (("seed", seed_plan), ("resnet", resnet_plan)):
        png = render(plan, tmp_path / f"{name}.png")
        width, height = png_size(Path(png))
        assert width > 100 and height > 100
        assert_svg(Path(render(plan, tmp_path / f"{name}.svg")))
    assert Path(render(seed_plan, tmp_path / "seed.pdf")).read_bytes().startswith(b"%PDF")
    collapsed = Path(render(resnet_plan, tmp_path / "collapsed.svg", collapse=True))
    assert_svg(collapsed)
    assert "stage2 (" in collapsed.read_text()
    assert render(seed_plan, tmp_path / "no_suffix", format="svg") == str(tmp_path / "no_suffix.svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(  # no temporary files left behind
        ["seed.png", "seed.svg", "resnet.png", "resnet.svg", "seed.pdf", "collapsed.svg", "no_suffix.svg"])


@needs_dot
def test_resnet_training_graph_renders_quickly(resnet_plan, tmp_path):
    start = time.perf_counter()
    render(resnet_plan, tmp_path / "resnet.svg")
    assert time.perf_counter() - start < 30  # about 0.4 s; without references, minutes


@needs_dot
def test_per_pass_pictures(seed_plan, tmp_path):
    paths = render(seed_plan, tmp_path / "graph.svg", passes=True)
    names = ["source"] + [p.name for p in default_pipeline(seed_plan.optimizer) if p.level == "graph"]
    expected = [f"graph.{i:02d}-{name.replace('+', '_')}.svg" for i, name in enumerate(names)]
    assert [Path(p).name for p in paths] == expected
    assert any(name.endswith("-autodiff.svg") for name in expected)
    for path in paths:
        assert_svg(Path(path))
    # each title names its pass and the node counts compile recorded for it
    graph_records = [r for r in seed_plan.report if r.name in names]
    assert len(graph_records) == len(names) - 1  # the lowering and plan passes draw no graph
    for i, record in enumerate(graph_records, start=1):
        title = f"{i:02d} {record.name}: {record.nodes_before} -> {record.nodes_after} nodes"
        assert title in svg_texts(Path(paths[i]))
    with config.options(disabled_passes={"cse"}):
        paths = render(seed_plan, tmp_path / "off" / "graph.dot", passes=True)
    assert not any("cse" in Path(p).name for p in paths) and len(paths) == len(names) - 1


@needs_dot
def test_svg_for_notebooks(seed_plan):
    text = svg(seed_plan)
    assert text is not None and ET.fromstring(text).tag.endswith("svg")
    assert "relu" in text


def test_without_dot(seed_plan, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RenderError, match="graphviz") as info:
        render(seed_plan, tmp_path / "graph.png")
    assert "apt-get install graphviz" in str(info.value) and ".dot" in str(info.value)
    assert not (tmp_path / "graph.png").exists()
    assert svg(seed_plan) is None  # notebooks fall back to text
    dot = Path(render(seed_plan, tmp_path / "graph.dot")).read_text()
    assert dot.startswith("digraph") and dot == to_dot(seed_plan)
    paths = render(seed_plan, tmp_path / "stages.gv", passes=True)
    assert all(Path(p).read_text().startswith("digraph") for p in paths)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + ":/usr/bin:/bin")
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(RenderError, match="brew install graphviz"):
        render(seed_plan, tmp_path / "graph.svg")
