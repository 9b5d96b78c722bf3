"""CUDA C++ source for fused groups: one thread per element of the collapsed loop, every
member in registers, rendered from the members' scalar forms (graphnet.ops.scalar) by the
same C renderer the host checks use (graphnet.codegen.scalar).

A source is complete as written: NVRTC compiles it with no preamble and no include path
(``graphnet inspect --kernels cupy -o DIR`` writes exactly this text). Its one function is
``extern "C" __global__ void <name>(...)``:

* a fused group: ``(out, in0, in1, ..., n0, n1, ...)``, ``out`` of the result's dtype over
  the collapsed loop ``n0 x n1 x ...`` (row-major), each input read at its own broadcast
  index;
* a group ending in a reduction: the same with ``out`` a double array over the whole loop
  (the last elementwise member's value); the runtime then sums it over the reduced dims
  in a fixed order, so results do not depend on thread timing as atomics' would;
* a fused_assign: ``(in0, in1, ..., n0, ...)``, writing member ``results[j]`` into input j
  after every member has read its element.

Each thread reads all its inputs before it writes, so a result may reuse a dying input's
memory. The loop is grid-strided over 64-bit indices. Semantics follow the numba loops:
operands cast to their member's dtype by the op's ``operands`` rule, constants typed,
integer arguments of math functions promoted to double (as C's ``<tgmath.h>`` and NumPy
do), and no fast-math.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

from ..ops.registry import get_op
from ..ops.scalar import Binary, Call, Compare, Expr, Logical, Negate, Operand, Select, tree as scalar_tree
from .fused_body import member_dtypes, operand_dtypes
from .scalar import render

#: C++ type of each dtype a generated CUDA kernel handles (float16 needs cuda_fp16.h, which
#: NVRTC does not have without an include path: such groups run through CuPy's ufuncs)
C_TYPES = {"float32": "float", "float64": "double", "int8": "signed char", "int16": "short", "int32": "int",
           "int64": "long long", "uint8": "unsigned char", "bool": "bool"}

#: What every source starts with. Under NVRTC (``__CUDACC__``): integer arguments of the math
#: functions go through double, and the non-finite constants are bit patterns. Elsewhere (the
#: host C++ compiler the tests use) ``<cmath>`` provides both.
PRELUDE = """\
#if defined(__CUDACC__)
#define GN_FN __device__ __forceinline__
#define GN_INF __longlong_as_double(0x7ff0000000000000LL)
#define GN_NAN __longlong_as_double(0x7ff8000000000000LL)
#define GN_INT_MATH(f) template <typename T> static GN_FN double f(T x) { return f((double)x); }
GN_INT_MATH(exp) GN_INT_MATH(log) GN_INT_MATH(sqrt) GN_INT_MATH(tanh) GN_INT_MATH(erf)
GN_INT_MATH(expm1) GN_INT_MATH(fabs) GN_INT_MATH(log1p) GN_INT_MATH(sin) GN_INT_MATH(cos)
#else
#include <cmath>
#define GN_FN static inline
#define GN_INF __builtin_inf()
#define GN_NAN __builtin_nan("")
#endif
"""


class UnsupportedKernel(ValueError):
    """A group the CUDA generator does not render (a dtype or op it has no exact form for);
    the backend runs it through its reference kernel instead and the report says why."""


def literal(value: Any, dtype: str) -> str:
    """A number as a constant of ``dtype``: floats as exact hexadecimal literals, so the value
    in the kernel is the double graphnet holds, rounded once to the dtype as NumPy rounds it."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or hasattr(value, "dtype")):
        raise TypeError(f"a constant in a generated kernel must be a number, got {type(value).__name__}")
    ctype = C_TYPES[dtype]
    if dtype == "bool":
        return "true" if value else "false"
    if isinstance(value, float) or getattr(getattr(value, "dtype", None), "kind", "") == "f":
        number = float(value)
        if math.isnan(number):
            text = "GN_NAN"
        elif math.isinf(number):
            text = "GN_INF" if number > 0 else "(-GN_INF)"
        else:
            text = number.hex()
        return f"(({ctype})({text}))"
    number = int(value)
    if dtype in ("float32", "float64"):
        return f"(({ctype})({number}.0))" if abs(number) < 2 ** 53 else f"(({ctype})({float(number).hex()}))"
    return f"(({ctype})({number}LL))"


def _uses_integer_pow(expr: Expr, operand_types: Sequence[str]) -> bool:
    """Whether a pow in ``expr`` would meet integers (NumPy's integer power is exact; C's pow
    goes through double): such a member is not rendered."""
    if isinstance(expr, Binary):
        if expr.op == "pow" and any(isinstance(part, Operand) and not operand_types[part.index].startswith("float")
                                    for part in (expr.a, expr.b)):
            return True
        return _uses_integer_pow(expr.a, operand_types) or _uses_integer_pow(expr.b, operand_types)
    if isinstance(expr, (Compare, Logical)):
        return _uses_integer_pow(expr.a, operand_types) or _uses_integer_pow(expr.b, operand_types)
    if isinstance(expr, (Negate, Call)):
        return _uses_integer_pow(expr.a, operand_types)
    if isinstance(expr, Select):
        return any(_uses_integer_pow(part, operand_types) for part in (expr.condition, expr.a, expr.b))
    return False


def kernel_name(source_key: str) -> str:
    """A kernel's C name from what determines its source (stable across processes)."""
    return "gn_fused_" + hashlib.sha256(source_key.encode()).hexdigest()[:16]


def element_function(body: Sequence[tuple[str, tuple[int, ...], tuple]], input_dtypes: Sequence[str],
                     out_dtypes: Sequence[str], results: Sequence[int], name: str = "gn_element") -> str:
    """``GN_FN void name(const T0 x0, ..., R0* r0, ...)``: the members of ``body`` on one element
    of each input, storing member ``results[j]`` (cast to ``out_dtypes[j]``) through ``rj``.
    Raises UnsupportedKernel for a dtype or op without an exact C form."""
    for dtype in list(input_dtypes) + list(out_dtypes):
        if dtype not in C_TYPES:
            raise UnsupportedKernel(f"{dtype} has no C type in generated CUDA kernels")
    member_dtype = member_dtypes(body, input_dtypes)
    params = [f"const {C_TYPES[d]} x{k}" for k, d in enumerate(input_dtypes)]
    params += [f"{C_TYPES[d]}* r{j}" for j, d in enumerate(out_dtypes)]
    lines = [f"GN_FN void {name}({', '.join(params)})", "{"]
    for i, ((op, args, attrs), result) in enumerate(zip(body, member_dtype)):
        opdef = get_op(op)
        if opdef.scalar is None:
            raise UnsupportedKernel(f"{op} has no scalar form")
        if result not in C_TYPES:
            raise UnsupportedKernel(f"{op} gives {result}, which has no C type in generated CUDA kernels")
        operands = [(f"x{-a - 1}", input_dtypes[-a - 1]) if a < 0 else (f"v{a}", member_dtype[a]) for a in args]
        wanted = operand_dtypes(op, [d for _, d in operands], result)
        texts = [text if want is None or want == have else f"(({C_TYPES[want]})({text}))"
                 for (text, have), want in zip(operands, wanted)]
        expr = scalar_tree(opdef.scalar, len(texts), dict(attrs))
        if _uses_integer_pow(expr, [w or d for (_, d), w in zip(operands, wanted)]):
            raise UnsupportedKernel(f"{op} raises integers to a power (C's pow is not exact there)")
        rendered = render(expr, "c", texts, lambda value, t=result: literal(value, t))
        lines.append(f"    const {C_TYPES[result]} v{i} = ({C_TYPES[result]})({rendered});")
    for j, (member, dtype) in enumerate(zip(results, out_dtypes)):
        lines.append(f"    *r{j} = ({C_TYPES[dtype]})(v{member});")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _index(span: Sequence[bool]) -> str:
    """The row-major offset of an input spanning the loop dims marked True."""
    text = ""
    for d, runs in enumerate(span):
        if runs:
            text = f"i{d}" if not text else f"({text}) * n{d} + i{d}"
    return text or "0"


def kernel_source(body: Sequence[tuple[str, tuple[int, ...], tuple]], input_dtypes: Sequence[str],
                  spans: Sequence[tuple[bool, ...]], out_dtype: str | None,
                  results: Sequence[int] | None = None, accumulate: tuple[bool, ...] | None = None,
                  name: str | None = None) -> str:
    """The complete CUDA source of one fused step's kernel (see the module's docstring for the
    three signatures). ``spans[k][d]``: input k runs along loop dim d. ``accumulate``: for a
    group ending in a reduction, whose reduction the runtime does. Raises UnsupportedKernel
    for a group without an exact CUDA form."""
    rank = len(spans[0]) if spans else 1
    members = tuple(body[:-1]) if accumulate is not None else tuple(body)
    if results is not None:
        writes = [(f"a{j}", input_dtypes[j], member) for j, member in enumerate(results)]
    else:
        writes = [("out", "float64" if accumulate is not None else out_dtype, len(members) - 1)]
    key = repr((members, tuple(input_dtypes), tuple(map(tuple, spans)), out_dtype, results, accumulate))
    name = name or kernel_name(key)
    element = element_function(members, input_dtypes, [d for _, d, _ in writes], [m for _, _, m in writes],
                               name=f"{name}_element")
    written = {target for target, _, _ in writes}
    params = [] if results is not None else [f"{C_TYPES[writes[0][1]]}* out"]
    params += [f"{'' if f'a{k}' in written else 'const '}{C_TYPES[d]}* a{k}" for k, d in enumerate(input_dtypes)]
    params += [f"const long long n{d}" for d in range(rank)]
    lines = [f"// graphnet fused kernel: {', '.join(op for op, _, _ in body)}",
             f"// inputs {', '.join(input_dtypes)}; loop dims spanned per input: "
             + ", ".join("".join("1" if s else "0" for s in span) for span in spans),
             PRELUDE, element,
             f'extern "C" __global__ void {name}({", ".join(params)})', "{",
             f"    const long long total = {' * '.join(f'n{d}' for d in range(rank))};",
             "    const long long stride = (long long)gridDim.x * blockDim.x;",
             "    for (long long flat = (long long)blockIdx.x * blockDim.x + threadIdx.x; flat < total; "
             "flat += stride) {"]
    if rank > 1:
        lines.append("        long long rest = flat;")
    for d in reversed(range(rank)):
        if d == 0:
            lines.append(f"        const long long i0 = {'rest' if rank > 1 else 'flat'};")
        else:
            lines.append(f"        const long long i{d} = rest % n{d}; rest /= n{d};")
    args = [f"a{k}[{_index(span)}]" for k, span in enumerate(spans)]
    args += ["&out[flat]"] if results is None else [f"&a{j}[flat]" for j in range(len(results))]
    if results is not None:  # read every input before writing any (a variable read by the group)
        for k, dtype in enumerate(input_dtypes):
            lines.append(f"        const {C_TYPES[dtype]} x{k} = {args[k]};")
        args[:len(input_dtypes)] = [f"x{k}" for k in range(len(input_dtypes))]
    lines.append(f"        {name}_element({', '.join(args)});")
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"
