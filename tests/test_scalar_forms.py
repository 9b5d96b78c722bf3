"""Every elementwise op's scalar form (graphnet.ops.scalar) renders in every language the
package has (graphnet.codegen.scalar) and compiles there: Python text for numba, C for CUDA,
checked here with the system's C compiler (compiled to a shared library and run against the
op's own kernel) where there is one. The numba loops built from the Python text are held to
the members' kernels in tests/test_codegen.py."""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from graphnet.codegen.scalar import LANGUAGES, render
from graphnet.ops import scalar as S
from graphnet.ops.registry import REGISTRY
from helpers import ELEMENTWISE, SCALAR_ATTRS as ATTRS, elementwise_arity

SAMPLES = np.array([-3.5, -1.0, -0.25, 0.0, 0.5, 1.0, 2.75, np.inf, -np.inf, np.nan])
_arity = elementwise_arity


def _tree(name: str, attrs: dict | None = None) -> S.Expr:
    return S.tree(REGISTRY[name].scalar, _arity(name), ATTRS.get(name, {}) if attrs is None else attrs)


def _c_constant(value: float | int) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NAN" if math.isnan(value) else ("INFINITY" if value > 0 else "(-INFINITY)")
    return f"((double)({value!r}))"


def test_every_elementwise_op_has_a_well_formed_scalar_form():
    missing = [name for name in ELEMENTWISE if REGISTRY[name].scalar is None]
    assert not missing, f"elementwise ops without a scalar form: {missing}"
    for name in ELEMENTWISE:
        S.check(_tree(name), _arity(name))


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_scalar_form_renders(language):
    for name in ELEMENTWISE:
        text = render(_tree(name), language, [f"x{k}" for k in range(_arity(name))], _c_constant)
        assert text and "x0" in text, (name, text)


def test_python_forms_compile_and_compute_the_kernels_values():
    for name in ELEMENTWISE:
        if name in ("where", "cast"):
            continue
        arity = _arity(name)
        text = render(_tree(name), "python", [f"x{k}" for k in range(arity)], lambda v: f"np.float64({v!r})")
        fn = eval(compile(f"lambda {', '.join(f'x{k}' for k in range(arity))}: {text}", name, "eval"),
                  {"math": math, "np": np})
        args = np.meshgrid(*([SAMPLES[np.isfinite(SAMPLES)]] * arity))
        with np.errstate(all="ignore"):
            want = REGISTRY[name].kernel(np, *[a.ravel() for a in args], **ATTRS.get(name, {}))
            got = []
            for values in zip(*[a.ravel() for a in args]):
                try:
                    got.append(float(fn(*(np.float64(v) for v in values))))
                except (ValueError, ZeroDivisionError, OverflowError):  # math's domain errors: NumPy gives nan/inf
                    got.append(float(want[len(got)]))
        np.testing.assert_allclose(np.array(got, np.float64), np.asarray(want, np.float64), rtol=1e-12, err_msg=name)


needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to check the C forms with")


@needs_cc
def test_c_forms_compile_and_compute_the_kernels_values(tmp_path: Path):
    """One C function per op over doubles (comparisons return int, ``where`` takes an int
    condition), compiled with ``cc`` into a shared library and called through ctypes."""
    lines = ["#include <tgmath.h>", "#include <math.h>"]
    signatures = {}
    for name in ELEMENTWISE:
        arity = _arity(name)
        params = [("int" if name == "where" and k == 0 else "double") for k in range(arity)]
        result = "int" if REGISTRY[name].operands == "common" else "double"
        body = render(_tree(name), "c", [f"x{k}" for k in range(arity)], _c_constant)
        lines.append(f"{result} gn_{name}({', '.join(f'{t} x{k}' for k, t in enumerate(params))}) "
                     f"{{ return ({result})({body}); }}")
        signatures[name] = (result, params)
    source = tmp_path / "forms.c"
    source.write_text("\n".join(lines) + "\n")
    library = tmp_path / "forms.so"
    done = subprocess.run(["cc", "-std=c99", "-O1", "-shared", "-fPIC", "-o", str(library), str(source), "-lm"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    compiled = ctypes.CDLL(str(library))
    ctype = {"double": ctypes.c_double, "int": ctypes.c_int}
    for name, (result, params) in signatures.items():
        fn = getattr(compiled, f"gn_{name}")
        fn.restype, fn.argtypes = ctype[result], [ctype[t] for t in params]
        arity = len(params)
        if name == "where":
            cases = [(c, a, b) for c in (0, 1) for a in SAMPLES for b in (-2.0, np.nan)]
            want = [a if c else b for c, a, b in cases]
        elif name == "cast":
            cases = [(v,) for v in SAMPLES]
            want = list(SAMPLES)
        else:
            grid = np.meshgrid(*([SAMPLES] * arity))
            cases = list(zip(*[g.ravel() for g in grid]))
            with np.errstate(all="ignore"):
                want = REGISTRY[name].kernel(np, *[np.array([c[k] for c in cases]) for k in range(arity)],
                                             **ATTRS.get(name, {}))
        got = np.array([fn(*case) for case in cases], np.float64)
        np.testing.assert_allclose(got, np.asarray(want, np.float64), rtol=1e-12, err_msg=name)
