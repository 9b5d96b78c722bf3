"""The CuPy backend: typed errors where it cannot run, the Variable/device protocol (pure, on
the CPU), and, on a machine with a GPU, the same numbers as the NumPy backend."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import graphnet as gn
from graphnet.backends.cupy import availability
from graphnet.tensor import Variable


def _gpu_reason() -> str | None:
    try:
        availability.require_gpu()
    except availability.CupyUnavailableError as exc:
        return str(exc)
    return None


GPU_REASON = _gpu_reason()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"no usable GPU: {GPU_REASON}")


def _mlp_plan(executor: str, seed: int = 0, optimizer=None):
    gn.manual_seed(seed)
    model = gn.nn.Sequential(gn.nn.Linear(10, 32), gn.nn.GELU(), gn.nn.Linear(32, 32), gn.nn.ReLU(),
                             gn.nn.LayerNorm(32), gn.nn.Linear(32, 3))
    x = gn.placeholder("x", (None, 10))
    y = gn.placeholder("y", (None,), dtype="int64")
    loss = gn.losses.cross_entropy(model(x), y)
    return gn.compile(loss, optimizer=optimizer or gn.optim.Adam(lr=1e-2, max_grad_norm=1.0), executor=executor)


def _batch(n: int = 16):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 10)).astype(np.float32), rng.integers(0, 3, n)


@pytest.mark.skipif(GPU_REASON is None, reason="a GPU is usable here")
def test_asking_for_cupy_here_says_what_is_missing():
    with pytest.raises(availability.CupyUnavailableError) as caught:
        _mlp_plan("cupy")
    assert isinstance(caught.value, gn.GraphnetError)
    assert "cupy-cuda12x" in str(caught.value) and "cupy-cuda13x" in str(caught.value)


def test_without_cupy_the_error_says_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # what a machine without CuPy gives: ImportError
    with pytest.raises(availability.CupyMissingError, match="not installed"):
        _mlp_plan("cupy")
    from graphnet.executors import available_executors

    assert "cupy" in available_executors()


def test_with_cupy_but_no_gpu_the_error_names_the_gpu():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pytest.skip("CuPy is not installed here")
    if GPU_REASON is None:
        pytest.skip("a GPU is usable here")
    with pytest.raises(availability.GpuUnavailableError, match="no GPU is usable"):
        availability.require_gpu()


class _Holder:
    """Stands in for a device executor: holds a newer value and copies it out when asked."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = value
        self.fetches = 0

    def fetch(self, host: np.ndarray) -> None:
        self.fetches += 1
        host[...] = self.value


def test_a_variable_fetches_a_device_value_only_when_the_host_reads_it():
    var = Variable(np.zeros(3, np.float32))
    holder = _Holder(np.array([1, 2, 3], np.float32))
    var.hand_to_device(holder, holder.fetch)
    assert var.held_by() is holder and holder.fetches == 0
    np.testing.assert_array_equal(var.peek(), 0)  # an upload's read does not fetch
    version = var.host_version
    np.testing.assert_array_equal(var.data, [1, 2, 3])
    assert holder.fetches == 1 and var.held_by() is None and var.host_version > version
    var.data  # noqa: B018 - a second read fetches nothing more
    assert holder.fetches == 1


def test_assigning_a_variable_drops_the_device_value():
    var = Variable(np.zeros(2))
    holder = _Holder(np.ones(2))
    var.hand_to_device(holder, holder.fetch)
    var.data = np.full(2, 5.0)
    assert var.held_by() is None and holder.fetches == 0
    np.testing.assert_array_equal(var.data, 5.0)


# --- on a GPU --------------------------------------------------------------------------------

@needs_gpu
def test_training_on_the_gpu_matches_numpy():
    x, y = _batch()
    cpu, gpu = _mlp_plan("numpy"), _mlp_plan("cupy")
    for _ in range(5):
        want, got = cpu.run(x=x, y=y)["loss"], gpu.run(x=x, y=y)["loss"]
        np.testing.assert_allclose(got, want, rtol=1e-4)
    for name, value in cpu.state_dict().items():
        np.testing.assert_allclose(gpu.state_dict()[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@needs_gpu
def test_every_fused_group_runs_as_a_generated_cuda_kernel():
    plan = _mlp_plan("cupy")
    x, y = _batch()
    plan.run(x=x, y=y)
    summary = plan.executor.codegen_summary()
    assert summary["cuda_kernels"] > 0 and not summary["reference_groups"], summary


@needs_gpu
def test_device_outputs_stay_on_the_device():
    import cupy

    plan = _mlp_plan("cupy")
    x, y = _batch()
    assert isinstance(plan.run(x=x, y=y, device_outputs=True)["loss"], cupy.ndarray)
    assert isinstance(plan.run(x=x, y=y)["loss"], np.ndarray)


@needs_gpu
def test_a_plan_trained_on_the_gpu_resumes_on_numpy(tmp_path):
    x, y = _batch()
    gpu = _mlp_plan("cupy")
    for _ in range(3):
        gpu.run(x=x, y=y)
    gpu.save(tmp_path / "p.gnplan")
    cpu = gn.load(tmp_path / "p.gnplan")
    np.testing.assert_allclose(cpu.run(x=x, y=y)["loss"], gpu.run(x=x, y=y)["loss"], rtol=1e-4)


def test_every_array_function_the_reference_kernels_call_exists_in_cupy():
    """The reference kernels run on CuPy unchanged: each ``xp.<name>`` they use is in CuPy."""
    import re
    from pathlib import Path

    cupy = pytest.importorskip("cupy", reason="CuPy is not installed here")
    root = Path(__file__).resolve().parents[1] / "graphnet"
    names = set()
    for folder in ("ops", "executors", "backends/cupy"):
        for path in (root / folder).rglob("*.py"):
            names.update(re.findall(r"\bxp\.([A-Za-z_][A-Za-z_0-9.]*)", path.read_text()))
    missing = []
    for name in sorted(names):
        found = cupy
        for part in name.split("."):
            found = getattr(found, part, None)
            if found is None:
                missing.append(name)
                break
    assert len(names) > 50 and not missing, missing


def test_the_cupy_peak_formula_counts_its_own_kernels_scratch():
    """Computed from the plan and the CuPy kernel table alone (no GPU): the reference im2col
    convolutions' temporaries, and a double buffer over the loop of each group ending in a sum."""
    from graphnet.backends.cupy.executor import CupyExecutor
    from graphnet.backends.cupy.kernel_table import TABLE

    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 1, 12, 12))
    y = gn.placeholder("y", (None,), dtype="int64")
    model = gn.nn.Sequential(gn.nn.Conv2d(1, 4, 3), gn.nn.ReLU(), gn.nn.Flatten(), gn.nn.Linear(400, 3))
    plan = gn.compile(gn.losses.cross_entropy(model(x), y), optimizer=gn.optim.SGD(lr=0.1)).plan
    fixed, per_item = CupyExecutor.peak_formula(plan)
    assert per_item > 0
    assert CupyExecutor.peak_bytes(plan, {"x": (8, 1, 12, 12), "y": (8,)}) == pytest.approx(fixed + 8 * per_item, rel=0.01)
    conv = next(step for step in plan.steps if step.op == "conv2d")
    _, scratch = TABLE.workspace(plan, conv, [(8, 1, 12, 12), (4, 1, 3, 3)])
    assert scratch >= 8 * 9 * 100 * 4  # the im2col matrix: N x (C kh kw) x (Ho Wo) floats
    summed = [step for step in plan.steps if step.op == "fused" and len(step.attrs["body"]) > 1
              and step.attrs["body"][-1][0] in ("sum", "sum_to", "mean")]
    for step in summed:
        shapes = [tuple(d if isinstance(d, int) else 8 for d in plan.buffers[n].shape) for n in step.inputs]
        assert TABLE.workspace(plan, step, shapes)[1] > 0
