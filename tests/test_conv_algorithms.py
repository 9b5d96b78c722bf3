"""Every CPU convolution algorithm (graphnet/kernels/cpu/conv/algorithms.py) against the plain reference
convolution of test_conv_kernels, on its table of shapes (stride, padding, dilation, groups),
in float64 and float32; and how the executor picks among them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_conv_kernels import CONV_CASES, _conv_attrs, _conv_inputs, ref_conv2d, ref_conv2d_grads

import graphnet as gn
from graphnet.backends.numpy import fused_kernels
from graphnet.kernels.cpu.conv import algorithms, chooser

pytestmark = pytest.mark.skipif(not fused_kernels.numba_available(), reason="numba is not installed")

ALL = [(op, name) for op, table in algorithms.ALGORITHMS.items() for name in table]


def _arguments(op, x, w, g):
    return {"conv2d": (x, w), "conv2d_grad_input": (g, w, x), "conv2d_grad_weight": (x, g, w)}[op]


@pytest.fixture(scope="module", params=range(len(CONV_CASES)), ids=lambda i: f"case{i}")
def case(request):
    x, w = _conv_inputs(CONV_CASES[request.param], seed=request.param)
    attrs = _conv_attrs(CONV_CASES[request.param])
    y = ref_conv2d(x, w, attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
    g = np.random.default_rng(7 + request.param).standard_normal(y.shape)
    dx, dw = ref_conv2d_grads(x, w, g, attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
    return x, w, g, attrs, {"conv2d": y, "conv2d_grad_input": dx, "conv2d_grad_weight": dw}


def _applicable(op, algorithm, x, w, g, attrs):
    """The algorithm's kernel; None, after checking that it refuses them (ValueError) instead
    of computing something else, when it does not take these shapes."""
    kernel, applies = algorithms.ALGORITHMS[op][algorithm]
    if not applies(x.shape, w.shape, attrs):
        with pytest.raises(ValueError):
            kernel(*_arguments(op, x, w, g), **attrs)
        return None
    return kernel


@pytest.mark.parametrize("op,algorithm", ALL)
def test_algorithm_matches_reference_float64(case, op, algorithm):
    x, w, g, attrs, expected = case
    kernel = _applicable(op, algorithm, x, w, g, attrs)
    if kernel is None:
        return
    result = kernel(*_arguments(op, x, w, g), **attrs)
    assert result.shape == expected[op].shape and result.dtype == np.float64 and result.flags.c_contiguous
    np.testing.assert_allclose(result, expected[op], rtol=0, atol=1e-11)


@pytest.mark.parametrize("op,algorithm", ALL)
def test_algorithm_writes_into_out_with_a_shared_workspace(case, op, algorithm):
    x, w, g, attrs, expected = case
    kernel = _applicable(op, algorithm, x, w, g, attrs)
    if kernel is None:
        return
    workspace = algorithms.Workspace()
    out = np.full(expected[op].shape, np.nan)
    for _ in range(2):  # the second call reuses the workspace the first one grew
        assert kernel(*_arguments(op, x, w, g), out=out, workspace=workspace, **attrs) is out
        np.testing.assert_allclose(out, expected[op], rtol=0, atol=1e-11)
    strided = np.full(expected[op].shape[::-1], np.nan).T  # an out= that is not C-contiguous
    assert kernel(*_arguments(op, x, w, g), out=strided, workspace=workspace, **attrs) is strided
    np.testing.assert_allclose(strided, expected[op], rtol=0, atol=1e-11)


def test_workspace_arrays_are_aligned_and_grow_once():
    workspace = algorithms.Workspace()
    workspace.array((64,), np.float32)
    size = workspace.nbytes
    a = workspace.array((3, 5), np.float32)
    b = workspace.array((2, 2), np.float64, offset=128)
    assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and b.ctypes.data - a.ctypes.data == 128
    assert workspace.nbytes == size  # both fit in what the first request grew
    a[...] = 1.0
    c = workspace.array((1000,), np.float32, offset=64)  # grows: a keeps the old buffer alive
    c[...] = 2.0
    assert (a == 1.0).all() and workspace.nbytes > size


@pytest.mark.parametrize("op,algorithm", ALL)
def test_algorithm_float32_and_strided_inputs(op, algorithm):
    # groups 2, stride (2, 1), padding (1, 2); for pointwise, the strided 1x1 case; for nhwc (one
    # group only), stride (3, 2), padding (1, 0), dilation (1, 2)
    index = {"pointwise": len(CONV_CASES) - 1, "nhwc": 5}.get(algorithm, 1)
    x, w = _conv_inputs(CONV_CASES[index], seed=3)
    attrs = _conv_attrs(CONV_CASES[index])
    y = ref_conv2d(x, w, attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
    g = np.random.default_rng(5).standard_normal(y.shape)
    dx, dw = ref_conv2d_grads(x, w, g, attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
    expected = {"conv2d": y, "conv2d_grad_input": dx, "conv2d_grad_weight": dw}[op]
    assert _applicable(op, algorithm, x, w, g, attrs) is not None
    # a transposed-then-transposed-back input is not C-contiguous
    x32 = np.asfortranarray(x.astype(np.float32))
    g32 = np.asfortranarray(g.astype(np.float32))
    result = algorithms.ALGORITHMS[op][algorithm][0](*_arguments(op, x32, w.astype(np.float32), g32), **attrs)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4)


def test_cost_rule_and_candidates():
    attrs = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
    assert chooser.rule("conv2d", (64, 1, 28, 28), (10, 1, 5, 5), attrs) == "batched_gemm"
    assert chooser.rule("conv2d", (128, 64, 4, 4), (64, 64, 3, 3), attrs) == "nhwc"
    assert chooser.rule("conv2d_grad_input", (64, 10, 12, 12), (20, 10, 5, 5), attrs) == "nhwc"
    assert chooser.rule("conv2d", (64, 4, 12, 12), (8, 4, 3, 3), attrs) == "xp"
    assert chooser.rule("conv2d_grad_input", (64, 4, 12, 12), (8, 4, 3, 3), attrs) == "batched_gemm"
    grouped = dict(attrs, groups=2)
    assert chooser.rule("conv2d", (64, 32, 8, 8), (32, 16, 3, 3), grouped) == "xp"
    assert "nhwc" not in chooser.candidates("conv2d", (64, 32, 8, 8), (32, 16, 3, 3), grouped)
    assert set(chooser.candidates("conv2d", (2, 3, 8, 8), (4, 3, 3, 3), attrs)) == {
        "xp", "batched_gemm", "shifted", "nhwc"}
    pointwise = (128, 16, 28, 28), (16, 16, 1, 1)
    assert set(chooser.candidates("conv2d", *pointwise, attrs)) == {
        "xp", "batched_gemm", "pointwise", "shifted", "nhwc"}
    strided = dict(attrs, stride=(2, 2))
    assert [chooser.rule(op, *pointwise, strided) for op in algorithms.CONV_OPS] == [
        "pointwise", "batched_gemm", "pointwise"]  # a strided 1x1's input gradient scatters through col2im
    assert chooser.rule("conv2d_grad_input", *pointwise, attrs) == "pointwise"


def _training_plan():
    gn.manual_seed(0)
    x = gn.placeholder("x", (None, 1, 10, 10))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    model = gn.nn.Sequential(gn.nn.Conv2d(1, 4, 3, padding=1), gn.nn.ReLU(), gn.nn.Conv2d(4, 6, 3, stride=2),
                             gn.nn.Flatten(), gn.nn.Linear(6 * 4 * 4, 3))
    return gn.compile({"loss": gn.losses.cross_entropy(model(x), labels)}, optimizer=gn.optim.SGD(lr=0.1))


def _feeds(batch):
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((batch, 1, 10, 10)).astype(np.float32),
            "labels": rng.integers(0, 3, batch)}


@pytest.mark.parametrize("autotune", [False, True])
def test_executor_records_its_choices(tmp_path, monkeypatch, autotune):
    monkeypatch.setenv("GRAPHNET_CACHE_DIR", str(tmp_path))
    with gn.config.options(autotune=autotune):
        plan = _training_plan()
        plan.run(_feeds(8))
        plan.run(_feeds(5))  # a new batch size is a new shape: chosen again
    chosen = plan.report.codegen["conv_algorithms"]
    assert len(chosen) == 2 * 5  # 2 forward convs, 2 weight gradients, 1 input gradient; at 2 batch sizes
    how = {entry.split("(")[1].rstrip(")") for entry in chosen.values()}
    assert how == ({"timed"} if autotune else {"rule"})
    stored = tmp_path / "kernels" / chooser.DECISIONS_FILE
    assert stored.exists() == autotune
    if autotune:
        assert set(json.loads(stored.read_text())) == set(chosen)
        with gn.config.options(autotune=True):
            again = _training_plan()
            again.run(_feeds(8))
        assert {v.split("(")[1] for v in again.report.codegen["conv_algorithms"].values()} == {"cached)"}


def test_stored_choices_are_untrusted(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHNET_CACHE_DIR", str(tmp_path))
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / chooser.DECISIONS_FILE).write_text("[1, 2")
    with gn.config.options(autotune=True):
        plan = _training_plan()
        plan.run(_feeds(4))
    stored = json.loads((tmp_path / "kernels" / chooser.DECISIONS_FILE).read_text())
    stored = {key: "__import__('os')" for key in stored}
    (tmp_path / "kernels" / chooser.DECISIONS_FILE).write_text(json.dumps(stored))
    with gn.config.options(autotune=True):
        plan = _training_plan()
        plan.run(_feeds(4))
    assert all(v.endswith("(timed)") for v in plan.report.codegen["conv_algorithms"].values())


def test_algorithms_agree_in_training(tmp_path, monkeypatch):
    """Training with the cost rule's choices gives what the shared kernels give."""
    monkeypatch.setenv("GRAPHNET_CACHE_DIR", str(tmp_path))
    losses = {}
    for codegen in ("numba", "numpy"):
        with gn.config.options(codegen=codegen, autotune=False):
            plan = _training_plan()
            losses[codegen] = [float(plan.run(_feeds(6))["loss"]) for _ in range(4)]
    np.testing.assert_allclose(losses["numba"], losses["numpy"], rtol=1e-5)


@pytest.mark.parametrize("op,algorithm", [(op, name) for op, name in ALL if op != "conv2d_grad_input"])
def test_inputs_no_window_reads_do_not_reach_the_result(op, algorithm):
    """A non-finite input that no window reads (the last row and column at stride 2) changes
    nothing: algorithms that compute extra columns must not multiply it by a zero."""
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7))
    w = np.random.default_rng(1).standard_normal((4, 3, 2, 2))
    attrs = {"stride": (2, 2), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
    g = np.random.default_rng(2).standard_normal((2, 4, 3, 3))
    kernel = _applicable(op, algorithm, x, w, g, attrs)
    if kernel is None:
        return
    clean = kernel(*_arguments(op, x, w, g), **attrs)
    x[:, :, 6, :] = np.nan
    x[:, :, :, 6] = np.inf
    np.testing.assert_allclose(kernel(*_arguments(op, x, w, g), **attrs), clean, rtol=0, atol=1e-12)


@pytest.mark.parametrize("op,algorithm", ALL)
def test_algorithms_with_sixteen_channels_or_more(op, algorithm):
    """16 channels and up take the channels-last copies' pixel-at-a-time loops."""
    case = (2, 16, 7, 6, 5, 3, 3, (2, 1), (1, 1), (1, 1), 1)
    x, w = _conv_inputs(case, seed=11)
    attrs = _conv_attrs(case)
    y = ref_conv2d(x, w, attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
    g = np.random.default_rng(12).standard_normal(y.shape)
    dx, dw = ref_conv2d_grads(x, w, g, attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
    kernel = _applicable(op, algorithm, x, w, g, attrs)
    if kernel is None:
        return
    expected = {"conv2d": y, "conv2d_grad_input": dx, "conv2d_grad_weight": dw}[op]
    np.testing.assert_allclose(kernel(*_arguments(op, x, w, g), **attrs), expected, rtol=0, atol=1e-11)


@pytest.mark.parametrize("op,algorithm", ALL)
def test_algorithm_split_by_images_among_threads(case, op, algorithm, monkeypatch):
    """Inside a splitting run every convolution, however small, cuts its images into one part
    per thread, each part in its own workspace: the results match the reference, and
    ``out=`` (contiguous or not) is written."""
    from graphnet.kernels.cpu import threads

    x, w, g, attrs, expected = case
    if _applicable(op, algorithm, x, w, g, attrs) is None:
        return
    monkeypatch.setattr(chooser, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(threads, "count", lambda: 3)  # three parts, on any machine
    kernel = chooser.ConvKernel(op, attrs, autotune=False)
    kernel._chosen[(x.shape, w.shape, x.dtype.str)] = algorithms.ALGORITHMS[op][algorithm][0]
    with threads.splitting():
        assert chooser.parts(op, x.shape, w.shape, attrs) == min(3, x.shape[0])
        fresh = kernel(*_arguments(op, x, w, g))
        strided = np.full(expected[op].shape[::-1], np.nan).T
        assert kernel(*_arguments(op, x, w, g), out=strided) is strided
    assert len(kernel.workspaces) == min(3, x.shape[0])
    for result in (fresh, strided):
        np.testing.assert_allclose(result, expected[op], rtol=0, atol=1e-11)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize("algorithm", ["batched_gemm", "nhwc"])
@pytest.mark.parametrize("op", list(algorithms.ALGORITHMS))
def test_chunk_loops_compiled_and_in_python(case, op, algorithm, compiled, monkeypatch):
    """The per-image and channels-last loops over chunks, one image per chunk: compiled whole
    (BLAS called from numba; the weight gradient summing images with beta = 1 between
    flushes) and in Python (where numpy's BLAS cannot be called by address) agree with the
    reference."""
    from graphnet.kernels.cpu.conv import nhwc

    x, w, g, attrs, expected = case
    kernel = _applicable(op, algorithm, x, w, g, attrs)
    if kernel is None:
        return
    module = nhwc if algorithm == "nhwc" else algorithms
    if compiled and not module._gemm_address(x):
        pytest.skip("numpy's BLAS here is not an OpenBLAS with 64-bit integers: the chunks run in Python")
    if not compiled:
        monkeypatch.setattr(module, "_gemm_address", lambda *arrays: 0)
    if algorithm == "nhwc":
        monkeypatch.setitem(nhwc.CHUNK_BYTES, op, 1)
    else:
        monkeypatch.setattr(algorithms, "CHUNK_BYTES", 1)
    out = np.full(expected[op].shape, np.nan)
    assert kernel(*_arguments(op, x, w, g), out=out, workspace=algorithms.Workspace(), **attrs) is out
    np.testing.assert_allclose(out, expected[op], rtol=0, atol=1e-11)


def test_by_default_two_processes_train_bit_identically():
    """Algorithms are chosen from the shapes alone unless GRAPHNET_AUTOTUNE=1: two processes
    training the same residual network from the same seed end with identical parameters."""
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    examples = str(Path(__file__).resolve().parent.parent / "examples")
    child = f'''
import hashlib, sys, numpy as np
sys.path.insert(0, {examples!r})
import graphnet as gn
from resnet import ResNet
assert not gn.config.flags.autotune
gn.manual_seed(0)
x = gn.placeholder("x", (None, 1, 28, 28)); labels = gn.placeholder("labels", (None,), dtype="int64")
train = gn.compile(gn.losses.cross_entropy(ResNet(widths=(8, 16, 16))(x), labels), optimizer=gn.optim.Adam(lr=1e-3), seed=0)
rng = np.random.default_rng(0)
for step in range(3):
    train.run(x=rng.standard_normal((32, 1, 28, 28)).astype(np.float32), labels=rng.integers(0, 10, 32))
digest = hashlib.sha256()
for name in sorted(train.variables):
    digest.update(np.ascontiguousarray(train.variables[name].data).tobytes())
print(digest.hexdigest())
'''
    env = {k: v for k, v in __import__("os").environ.items() if k != "GRAPHNET_AUTOTUNE"}
    digests = {subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=300,
                              check=True).stdout.strip() for _ in range(2)}
    assert len(digests) == 1 and len(next(iter(digests))) == 64


def _edit_choices(path, edit):
    """Rewrite the plan file at ``path`` with ``edit`` applied to its header's kernel choices."""
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(path), "numpy") as f:
        header = json.loads(f.metadata()["graphnet"])
    edit(header["kernel_choices"])
    save_file(load_file(str(path)), str(path), metadata={"graphnet": json.dumps(header)})


def test_a_loaded_plan_runs_the_algorithms_it_trained_with(tmp_path, monkeypatch):
    """A plan records each convolution's algorithm; loaded where the rule would choose
    otherwise (a later graphnet's rule, or timing), it still runs them: the next steps are
    bit-identical to the saving process's."""
    monkeypatch.setenv("GRAPHNET_CACHE_DIR", str(tmp_path))
    by_rule = _training_plan()
    by_rule.run(_feeds(8))
    rule = chooser.rule
    monkeypatch.setattr(chooser, "rule", lambda op, x, w, attrs: chooser.candidates(op, x, w, attrs)[-1])
    plan = _training_plan()
    plan.run(_feeds(8))
    trained_with = plan.executor.kernel_choices()
    assert len(trained_with) == 5 and trained_with.keys() == by_rule.executor.kernel_choices().keys()
    assert sum(name != by_rule.executor.kernel_choices()[key] for key, name in trained_with.items()) >= 3
    plan.save(tmp_path / "plan.gnp")
    monkeypatch.setattr(chooser, "rule", rule)
    loaded = gn.load(tmp_path / "plan.gnp")
    for _ in range(2):
        assert plan.run(_feeds(8))["loss"].tobytes() == loaded.run(_feeds(8))["loss"].tobytes()
    for name in plan.variables:
        assert plan.variables[name].data.tobytes() == loaded.variables[name].data.tobytes(), name
    report = loaded.report.codegen["conv_algorithms"]
    assert report == {key: f"{name} (plan)" for key, name in trained_with.items()}
    loaded.run(_feeds(5))  # shapes the plan never ran: the rule
    assert sum(v.endswith("(rule)") for v in loaded.report.codegen["conv_algorithms"].values()) == 5
    loaded.save(tmp_path / "again.gnp")  # the choices travel on
    assert set(trained_with.items()) <= set(gn.load(tmp_path / "again.gnp").executor.kernel_choices().items())


@pytest.mark.parametrize("edit,fault", [
    (lambda c: c["choices"].update({next(iter(c["choices"])): "os.system"}), "not an algorithm"),
    (lambda c: c["choices"].update({"eval x[1] w[1] float32": "xp"}), "not an op"),
    (lambda c: c.update(choices=[1, 2]), "kernel_choices"),
    (lambda c: c.update(extra=1), "kernel_choices"),
    (lambda c: c["choices"].update({"conv2d " + "x" * 5000: "xp"}), "kernel choice key"),
])
def test_hostile_kernel_choices_are_refused(tmp_path, monkeypatch, edit, fault):
    monkeypatch.setenv("GRAPHNET_CACHE_DIR", str(tmp_path))
    plan = _training_plan()
    plan.run(_feeds(4))
    plan.save(tmp_path / "plan.gnp")
    _edit_choices(tmp_path / "plan.gnp", edit)
    with pytest.raises(gn.PlanFileError, match=fault):
        gn.load(tmp_path / "plan.gnp")


def test_another_backends_choices_are_not_applied(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHNET_CACHE_DIR", str(tmp_path))
    plan = _training_plan()
    plan.run(_feeds(4))
    plan.save(tmp_path / "plan.gnp")
    _edit_choices(tmp_path / "plan.gnp", lambda c: c.update(executor="cupy", choices={"gemm": "cublas-algo-7"}))
    loaded = gn.load(tmp_path / "plan.gnp")
    assert loaded.executor.kernel_choices() == {}
    loaded.run(_feeds(4))
    assert all(v.endswith("(rule)") for v in loaded.report.codegen["conv_algorithms"].values())
