"""Data flows one way through the layers: no module imports a layer above its own, not even
inside a function, and the executor protocol imports no kernel library."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "graphnet"

#: graphnet's top-level modules and packages, lowest layer first (docs/architecture.md)
LAYERS = [
    {"version", "errors", "config", "dtypes", "dims", "modes", "interrupts", "distributed"},  # what everything shares
    {"ir"},                                                                # graph IR
    {"tensor", "ops", "nn", "losses", "optim"},                            # declare
    {"plan", "records"},                                                   # plan (plain data)
    {"passes"},                                                            # passes, the lowering
    {"codegen", "kernels"},                                                # kernel generation, kernel libraries
    {"executors"},                                                         # the backend protocol
    {"backends"},                                                          # the backends
    {"compile", "export", "grad", "printing", "render", "report", "debug", "cli", "train", "data", "plots", "prepare", "summary",
     "testing", "replicas", "onnx", "__init__"},                                               # the user's API and tools
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
#: imports forbidden although the ranks would allow them
FORBIDDEN = {"executors": {"kernels", "codegen"}}


def _imports(path: Path) -> set[str]:
    """The graphnet top-level names ``path`` imports, at module level or inside functions."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = module[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target[0] != "graphnet":
                continue
            if len(target) > 1:
                found.add(target[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("graphnet."))
    return found


def _owner(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_module_belongs_to_a_layer():
    owners = {_owner(p) for p in PACKAGE.rglob("*.py")}
    assert owners <= set(RANK), f"modules without a layer: {sorted(owners - set(RANK))}"


def test_no_layer_imports_one_above_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        owner = _owner(path)
        for target in _imports(path) - {owner}:
            if target not in RANK:
                continue
            if RANK[target] > RANK[owner] or target in FORBIDDEN.get(owner, ()):
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports graphnet.{target}")
    assert not wrong, "\n".join(wrong)
