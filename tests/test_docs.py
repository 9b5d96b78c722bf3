"""The code shown in README.md and docs/ runs: each file's Python blocks, in order."""

import pathlib
import re

import pytest

import graphnet as gn

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path, capsys):
    if "gn.data.FashionMNIST(" in path.read_text() and gn.data.find_root("fashion-mnist") is None:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)  # noqa: S102 - our own docs
    assert blocks or path.parent.name == "reference"
