"""The graphnet command: render, inspect, run; one-line errors and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphnet as gn
from graphnet.cli import main
from graphnet.export import FORMAT_VERSION

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    gn.manual_seed(0)
    x = gn.placeholder("x", ("batch", 1, 8, 8))
    labels = gn.placeholder("labels", ("batch",), dtype="int64")
    model = gn.nn.Sequential(gn.nn.Conv2d(1, 2, 3), gn.nn.ReLU(), gn.nn.Flatten(), gn.nn.Linear(72, 3))
    logits = model(x)
    train = gn.compile({"loss": gn.losses.cross_entropy(logits, labels), "logits": logits},
                       optimizer=gn.optim.Adam(lr=1e-2))
    path = tmp_path / "plan.gnp"
    train.save(path)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphnet.cli", *args], capture_output=True, text=True, timeout=120)


def test_inspect_lists_inputs_outputs_parameters_ops_and_version(plan_file, capsys):
    assert main(["inspect", str(plan_file)]) == 0
    out = capsys.readouterr().out
    for text in (f"format version {FORMAT_VERSION}", "kind: training", "x: float32[batch,1,8,8]", "labels: int64[batch]",
                 "loss: float32[]", "0.weight: float32[2,1,3,3]", "3.bias: float32[3]", "conv2d x1", "adam",
                 f"{plan_file.stat().st_size:,} bytes"):
        assert text in out, text
    assert main(["inspect", "--json", str(plan_file)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parameter_count"] == 2 * 9 + 2 + 72 * 3 + 3
    writes = gn.load(plan_file).plan.state_writes()
    assert len(writes) == 4 * 3 + 1  # parameter, Adam's two moments; the step counter


def test_run_prints_or_saves_outputs(plan_file, tmp_path, capsys):
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(5, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", xb)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 0, 1]))
    args = ["run", str(plan_file), "--input", f"x={tmp_path / 'x.npy'}", "-i", f"labels={tmp_path / 'y.npy'}"]
    assert main(args) == 0
    assert "logits: float32[5, 3]" in capsys.readouterr().out
    assert main(args + ["--output-dir", str(tmp_path / "out")]) == 0
    expected = gn.load(plan_file).run(x=xb, labels=np.array([0, 1, 2, 0, 1]))
    assert np.array_equal(np.load(tmp_path / "out" / "logits.npy"), expected["logits"])


@needs_dot
def test_render_writes_images_collapsed_and_per_pass(plan_file, tmp_path):
    svg = tmp_path / "graph.svg"
    assert main(["render", str(plan_file), "-o", str(svg)]) == 0
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    assert main(["render", str(plan_file), "-o", str(tmp_path / "small.png"), "--collapse"]) == 0
    assert (tmp_path / "small.png").read_bytes().startswith(b"\x89PNG")
    assert main(["render", str(plan_file), "-o", str(tmp_path / "p.svg"), "--passes"]) == 0
    stages = sorted(p.name for p in tmp_path.glob("p.*.svg"))
    assert len(stages) >= 5 and any("autodiff" in s for s in stages)


@pytest.mark.parametrize("args, message", [
    (["inspect", "{missing}"], "cannot read plan file"),
    (["inspect", "{folder}"], "is a folder"),
    (["inspect", "{garbage}"], "not a valid plan file"),
    (["run", "{plan}"], "missing feed"),
    (["run", "{plan}", "--input", "x"], "NAME=FILE.npy"),
    (["run", "{plan}", "--input", "x={garbage}"], "cannot read input 'x'"),
    (["run", "{plan}", "--executor", "tpu"], "unknown executor"),
])
def test_errors_are_one_line_on_stderr_with_status_1(plan_file, tmp_path, args, message):
    (tmp_path / "garbage.bin").write_bytes(b"\x00" * 64)
    names = {"missing": tmp_path / "none.gnp", "folder": tmp_path, "garbage": tmp_path / "garbage.bin",
             "plan": plan_file}
    result = _cli(*[a.format(**names) for a in args])
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_usage_errors_exit_2_and_help_works():
    assert _cli("frobnicate").returncode == 2
    assert _cli("render", "plan.gnp").returncode == 2  # -o is required
    for command in ([], ["render"], ["inspect"], ["run"]):
        result = _cli(*command, "--help")
        assert result.returncode == 0 and "usage: graphnet" in result.stdout


def test_console_script_is_declared():
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert 'graphnet = "graphnet.cli:main"' in text
