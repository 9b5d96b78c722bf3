"""The CUDA kernels graphnet generates for fused groups, checked without a GPU.

* Host C++: each elementwise op's element function, exactly as the CUDA generator renders
  it (graphnet.codegen.cuda, host qualifiers from its prelude), compiled with the machine's
  C++ compiler and run over test vectors (NaN, infinities, signed zeros, huge and tiny
  values, integers of both signs, casts), against NumPy's kernel for the op.
* NVRTC: every generated kernel of the reference plans (seed CNN, ResNet with BatchNorm,
  an MLP under every optimizer, one group per elementwise op and dtype) compiles for
  compute_80 and compute_90, and a broken kernel is refused with NVRTC's log.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphnet as gn
from graphnet.codegen import cuda
from graphnet.codegen.fused_body import member_dtypes
from graphnet.errors import GraphnetError
from graphnet.ops.registry import REGISTRY
from helpers import ELEMENTWISE, SCALAR_ATTRS, elementwise_arity

ROOT = Path(__file__).resolve().parents[1]
FLOATS = np.array([-3.5, -1.0, -0.25, -0.0, 0.0, 0.5, 1.0, 2.75, 1e-30, -1e30, 3e38, np.inf, -np.inf, np.nan])
INTEGERS = np.array([-7, -3, -1, 0, 1, 2, 5, 100])
CTYPES = {"float32": ctypes.c_float, "float64": ctypes.c_double, "int32": ctypes.c_int32, "int64": ctypes.c_int64,
          "bool": ctypes.c_bool, "int8": ctypes.c_int8, "uint8": ctypes.c_uint8, "int16": ctypes.c_int16}


def _cases() -> list[tuple[str, tuple[str, ...], dict]]:
    """(op, input dtypes, attrs) for every elementwise op over float32 and float64, the ops that
    take integers over int32 and int64, and cast between every pair of dtypes."""
    cases = []
    for name in ELEMENTWISE:
        attrs = SCALAR_ATTRS.get(name, {})
        for dtype in ("float32", "float64", "int32", "int64"):
            inputs = tuple("bool" if name == "where" and k == 0 else dtype for k in range(elementwise_arity(name)))
            if name == "cast":
                for target in ("float32", "float64", "int32", "int64", "bool", "uint8"):
                    cases.append((name, inputs, {"dtype": target}))
                continue
            body = ((name, tuple(-k - 1 for k in range(len(inputs))), tuple(attrs.items())),)
            try:
                cuda.element_function(body, inputs, member_dtypes(body, inputs), [0])
            except (GraphnetError, cuda.UnsupportedKernel):  # floats only; integer powers (refused below)
                continue
            cases.append((name, inputs, attrs))
    return cases


CASES = _cases()


def _vectors(dtypes: tuple[str, ...], op: str) -> list[np.ndarray]:
    """Every combination of test values for these operand dtypes, one array per operand."""
    pools = []
    for k, dtype in enumerate(dtypes):
        if dtype == "bool":
            pools.append(np.array([False, True]))
        elif dtype.startswith("int"):
            pools.append(INTEGERS)
        else:
            values = FLOATS
            if op == "cast":  # float to integer is undefined in C (and NumPy) outside the range
                values = values[np.isfinite(values) & (np.abs(values) < 1e9)]
            pools.append(values)
    grids = np.meshgrid(*pools, indexing="ij")
    return [g.ravel().astype(d) for g, d in zip(grids, dtypes)]


needs_cxx = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler to check the rendered kernels with")


@needs_cxx
def test_every_element_function_computes_numpys_values_on_the_host(tmp_path: Path):
    """One element function per case, rendered by graphnet.codegen.cuda, called in a host loop."""
    lines = [cuda.PRELUDE]
    results = {}
    for index, (op, dtypes, attrs) in enumerate(CASES):
        body = ((op, tuple(-k - 1 for k in range(len(dtypes))), tuple(sorted(attrs.items()))),)
        out = member_dtypes(body, dtypes)[0]
        results[index] = out
        lines.append(cuda.element_function(body, dtypes, [out], [0], name=f"el{index}"))
        params = ", ".join(f"const {cuda.C_TYPES[d]}* a{k}" for k, d in enumerate(dtypes))
        reads = ", ".join(f"a{k}[i]" for k in range(len(dtypes)))
        lines.append(f'extern "C" void run{index}({params}, {cuda.C_TYPES[out]}* out, long n) '
                     f"{{ for (long i = 0; i < n; ++i) el{index}({reads}, &out[i]); }}")
    source = tmp_path / "elements.cpp"
    source.write_text("\n".join(lines) + "\n")
    library = tmp_path / "elements.so"
    done = subprocess.run(["c++", "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(library),
                           str(source)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    compiled = ctypes.CDLL(str(library))
    checked = 0
    for index, (op, dtypes, attrs) in enumerate(CASES):
        arrays = _vectors(dtypes, op)
        out = np.empty(arrays[0].shape, results[index])
        fn = getattr(compiled, f"run{index}")
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * (len(arrays) + 1) + [ctypes.c_long]
        fn(*[a.ctypes.data for a in arrays], out.ctypes.data, out.size)
        with np.errstate(all="ignore"):
            want = np.asarray(REGISTRY[op].kernel(np, *arrays, **attrs)).astype(results[index])
        where = f"{op}{dtypes}{attrs}"
        if out.dtype.kind == "f":
            assert np.array_equal(np.isnan(out), np.isnan(want)), where
            # float32: libm's float functions against NumPy's, within an ulp or two (absolutely where a
            # value cancels to near zero, as the tanh GELU's does for negative inputs)
            rtol, atol = (1e-12, 1e-300) if out.dtype == np.float64 else (4e-7, 1e-7)
            np.testing.assert_allclose(out, want, rtol=rtol, atol=atol, err_msg=where)
            # the sign of max(-0.0, +0.0) is unspecified (IEEE 754 maxNum; NumPy's SIMD loops differ)
            zeros = (want == 0) & (out == 0) if op not in ("maximum", "minimum") else np.zeros(out.shape, bool)
            assert np.array_equal(np.signbit(out[zeros]), np.signbit(want[zeros])), f"{where}: signed zeros"
        else:
            np.testing.assert_array_equal(out, want, err_msg=where)
        checked += 1
    assert checked == len(CASES) and checked > 100


def test_constants_are_exact_in_their_dtype():
    assert cuda.literal(0.1, "float64") == f"((double)({(0.1).hex()}))"
    assert cuda.literal(0.1, "float32") == f"((float)({(0.1).hex()}))"  # rounded once, as np.float32(0.1)
    assert cuda.literal(float("-inf"), "float32") == "((float)((-GN_INF)))"
    assert cuda.literal(3, "int64") == "((long long)(3LL))"
    assert cuda.literal(True, "bool") if False else cuda.literal(1, "bool") == "true"
    with pytest.raises(TypeError):
        cuda.literal("0; system(1)", "float32")


def test_groups_without_an_exact_form_are_refused():
    with pytest.raises(cuda.UnsupportedKernel, match="float16"):
        cuda.kernel_source((("add", (-1, -2), ()),), ["float16", "float16"], [(True,), (True,)], "float16")
    with pytest.raises(cuda.UnsupportedKernel, match="power"):
        cuda.kernel_source((("pow", (-1, -2), ()),), ["int64", "int64"], [(True,), (True,)], "int64")


# --- NVRTC -----------------------------------------------------------------------------------

def _nvrtc_or_skip():
    from graphnet.backends.cupy import nvrtc
    from graphnet.backends.cupy.availability import CupyUnavailableError

    try:
        nvrtc.version()
    except CupyUnavailableError as exc:
        pytest.skip(f"NVRTC is not available here: {exc}")
    return nvrtc


def _compiles(nvrtc, source: str, name: str) -> None:
    for architecture in nvrtc.ARCHITECTURES:
        nvrtc.compile_ptx(source, architecture, name)


def test_nvrtc_refuses_a_broken_kernel_with_its_log():
    nvrtc = _nvrtc_or_skip()
    with pytest.raises(nvrtc.KernelCompileError, match="undefined"):
        nvrtc.compile_ptx('extern "C" __global__ void k(float* o) { o[0] = not_declared; }', "compute_80")


def test_a_kernel_per_elementwise_op_and_dtype_compiles_with_nvrtc():
    """Each op as a group of one and in a group with a broadcast operand and a final sum."""
    nvrtc = _nvrtc_or_skip()
    sources = []
    for op, dtypes, attrs in CASES:
        arity = len(dtypes)
        body = ((op, tuple(-k - 1 for k in range(arity)), tuple(sorted(attrs.items()))),)
        out = member_dtypes(body, dtypes)[0]
        spans = [(True, True)] + [(False, True)] * (arity - 1)
        sources.append(cuda.kernel_source(body, dtypes, spans, out))
        if out.startswith("float"):
            reduced = body + (("sum", (0,), (("axes", (0,)), ("keepdims", False))),)
            sources.append(cuda.kernel_source(reduced, dtypes, spans, out, accumulate=(False, True)))
    # one source holding them all (distinct names) keeps NVRTC's start-up cost to once per architecture
    joined = "\n".join(s.replace(cuda.PRELUDE, "", 1) if i else s for i, s in enumerate(sources))
    _compiles(nvrtc, joined, "every_op.cu")
    assert len(sources) > 150


def _reference_plans() -> dict[str, gn.CompiledPlan]:
    sys.path.insert(0, str(ROOT / "examples"))
    from mnist_cnn import seed_cnn
    from resnet import ResNet

    def plan(model, shape, optimizer):
        gn.manual_seed(0)
        x = gn.placeholder("x", (None,) + shape)
        y = gn.placeholder("y", (None,), dtype="int64")
        return gn.compile(gn.losses.cross_entropy(model(x), y), optimizer=optimizer)

    plans = {"seed_cnn": plan(seed_cnn(), (1, 28, 28), gn.optim.SGD(lr=0.05, momentum=0.9)),
             "resnet": plan(ResNet(), (1, 28, 28), gn.optim.AdamW(lr=1e-3, max_grad_norm=1.0))}
    for name in gn.optim.available():
        model = gn.nn.Sequential(gn.nn.Linear(12, 16), gn.nn.GELU(), gn.nn.Dropout(0.1), gn.nn.Linear(16, 16),
                                 gn.nn.Tanh(), gn.nn.LayerNorm(16), gn.nn.Linear(16, 4))
        plans[f"mlp_{name}"] = plan(model, (12,), gn.optim.get(name))
    return plans


def test_every_generated_kernel_of_the_reference_plans_compiles_with_nvrtc():
    nvrtc = _nvrtc_or_skip()
    from graphnet.backends.cupy.executor import CupyExecutor

    counts = {}
    for name, plan in _reference_plans().items():
        sources = CupyExecutor.kernel_sources(plan.plan)
        generated = [(label, source) for label, _, source in sources if not source.startswith("// no generated")]
        assert generated, name
        for label, source in generated:
            _compiles(nvrtc, source, f"{name} {label}")
        counts[name] = len(generated)
    assert counts["resnet"] >= 40 and counts["seed_cnn"] >= 8, counts
    assert all(counts[f"mlp_{name}"] >= 3 for name in gn.optim.available()), counts


def test_inspect_writes_kernel_files_that_compile_exactly_as_written(tmp_path: Path):
    from graphnet.cli import main

    from graphnet.executors import get_executor

    plan = _reference_plans()["seed_cnn"]
    path = tmp_path / "seed.gnplan"
    plan.save(path)
    for backend, suffix in (("numpy", ".py"), ("cupy", ".cu")):
        out = tmp_path / backend
        assert main(["inspect", str(path), "--kernels", backend, "-o", str(out)]) == 0
        files = sorted(out.glob(f"*{suffix}"))
        assert len(files) == len(get_executor(backend).kernel_sources(plan.plan)) >= 8
        if backend == "numpy":
            for file in files:
                compile(file.read_text(), str(file), "exec")  # valid Python as written
        else:
            nvrtc = _nvrtc_or_skip()
            for file in files:
                _compiles(nvrtc, file.read_text(), file.name)
