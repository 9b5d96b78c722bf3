"""Fused groups compiled to numba kernels: one loop over the result, every member in registers.

A ``fused`` step's body is an expression graph of elementwise members (see
graphnet.ops.fused); each member op states its scalar form beside its definition
(``OpDef.scalar``). This module writes those forms into the body of a loop nest over the
result, compiles it with numba (no fastmath, NumPy's error model, every value cast to its
member's declared dtype, constants typed), and calls it with the step's arrays: one pass
over memory instead of one per member, and no temporaries.

The loop nest is generated for the *collapsed* iteration space: dims of size 1 dropped,
and neighbouring dims merged where every input is either full or broadcast in both, so
a bias over (N, C) is a 2-d loop and BatchNorm's (1, C, 1, 1) over (N, C, H, W) a 3-d one.
Each (group, input dtypes, broadcast pattern) gives one kernel; the source goes to a file
in the kernel cache directory (``GRAPHNET_CACHE_DIR``, else ``~/.cache/graphnet``), so
numba's own cache makes a second process load instead of compile.

Groups with a member that has no scalar form, and every group where numba is missing or
``GRAPHNET_CODEGEN=numpy``, run through the fused op's NumPy kernel instead.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import re
import sys
import threading
import types
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ... import dtypes
from ...codegen import cache
from ...codegen.cache import cache_dir
from ...codegen.fused_body import fused_layout, member_dtypes, operand_dtypes
from ...codegen.scalar import render
from ...ops.registry import get_op
from ...ops.scalar import tree as scalar_tree
from ...kernels.cpu import threads

#: Python names of dtypes inside generated code (numba understands NumPy's scalar types).
_TYPE_NAMES = {"float16": "np.float16", "float32": "np.float32", "float64": "np.float64", "int8": "np.int8",
               "int16": "np.int16", "int32": "np.int32", "int64": "np.int64", "uint8": "np.uint8",
               "bool": "np.bool_"}
_NUMBA_TYPES = {"float32": "float32", "float64": "float64", "int8": "int8", "int16": "int16", "int32": "int32",
                "int64": "int64", "uint8": "uint8", "bool": "boolean"}


@dataclass
class CodegenStats:
    """What generating kernels cost in this process (the compile report shows it)."""

    kernels: int = 0  # distinct kernels made ready (compiled or loaded from the disk cache)
    compile_seconds: float = 0.0
    fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> groups run by NumPy instead

    def fell_back(self, reason: str) -> None:
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1


stats = CodegenStats()
_lock = threading.Lock()
_compiled: dict[str, Any] = {}  # source hash -> numba dispatcher


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def reason_of(exc: BaseException) -> str:
    """An exception as one plain line for the compile report: numba colours its messages with
    terminal escape codes, which a report or a JSON file must not carry."""
    return " ".join(_ANSI.sub("", f"{type(exc).__name__}: {exc}").split())[:200]


@functools.cache
def numba_available() -> bool:
    """Whether numba is installed (asked once: the kernel table and the peak-memory formula
    ask it for every step)."""
    return importlib.util.find_spec("numba") is not None


def kernel_source(body: Sequence[tuple[str, tuple[int, ...], tuple]], input_dtypes: Sequence[str],
                  spans: Sequence[tuple[bool, ...]], out_dtype: str | None,
                  results: Sequence[int] | None = None, accumulate: tuple[bool, ...] | None = None) -> str:
    """Python source of a numba kernel ``kernel(out, in0, in1, ...)`` computing ``body`` over
    the collapsed space (``spans[k][d]``: input k runs along dim d). With ``results`` (a
    fused_assign), ``kernel(in0, in1, ...)`` writes member ``results[j]`` into input j, at
    each element after every member has read it. With ``accumulate`` (a group ending in a
    reduction, whose result runs along the dims marked True), ``kernel(acc, shape, in0, ...)``
    adds the last elementwise member's value into the float64 array ``acc`` over the loop
    ``shape``, and the reduction's own member is left to the caller (the scale of a mean)."""
    rank = len(spans[0]) if spans else 1
    if accumulate is not None:
        body = body[:-1]
    member_dtype = member_dtypes(body, input_dtypes)
    index = [f"i{d}" for d in range(rank)]
    head = [] if results is not None else ["acc", "shape"] if accumulate is not None else ["out"]
    params = ", ".join(head + [f"a{k}" for k in range(len(input_dtypes))])
    extent_of = "shape" if accumulate is not None else "out" if results is None else "a0"
    lines = ["import math", "import numba", "import numpy as np", "",
             "", "@numba.njit(cache=True, error_model='numpy', nogil=True)",
             f"def kernel({params}):",
             f"    {', '.join(f'n{d}' for d in range(rank))}{',' if rank == 1 else ''} = "
             f"{extent_of}{'' if accumulate is not None else '.shape'}"]
    indent = "    "
    for d in range(rank):
        lines.append(f"{indent}for i{d} in range(n{d}):")
        indent += "    "
    values: list[tuple[str, str]] = []  # (expression, dtype) of each input, then each member

    def cast(expr: str, have: str, want: str) -> str:
        return expr if have == want else f"{_TYPE_NAMES[want]}({expr})"

    for k, dtype in enumerate(input_dtypes):
        at = ", ".join(index[d] if spans[k][d] else "0" for d in range(rank))
        lines.append(f"{indent}x{k} = a{k}[{at}]")
    for i, ((op, args, attrs), result) in enumerate(zip(body, member_dtype)):
        operands = [(f"x{-a - 1}", input_dtypes[-a - 1]) if a < 0 else (f"v{a}", member_dtype[a]) for a in args]
        wanted = operand_dtypes(op, [d for _, d in operands], result)
        texts = [e if want is None else cast(e, d, want) for (e, d), want in zip(operands, wanted)]
        constant = (lambda value, t=result: f"{_TYPE_NAMES[t]}({_literal(value)})")
        expr = render(scalar_tree(get_op(op).scalar, len(texts), dict(attrs)), "python", texts, constant)
        lines.append(f"{indent}v{i} = {_TYPE_NAMES[result]}({expr})")
        values.append((f"v{i}", result))
    if accumulate is not None:
        at = ", ".join(index[d] if accumulate[d] else "0" for d in range(rank))
        lines.append(f"{indent}acc[{at}] += np.float64({values[-1][0]})")
    elif results is None:
        lines.append(f"{indent}out[{', '.join(index)}] = {cast(values[-1][0], values[-1][1], out_dtype)}")
    for j, r in enumerate(results or ()):
        lines.append(f"{indent}a{j}[{', '.join(index)}] = {cast(values[r][0], values[r][1], input_dtypes[j])}")
    return "\n".join(lines) + "\n"


def _literal(value: Any) -> str:
    """A number as source text. Only numbers reach generated code (attributes are checked by
    kind when a group is declared or loaded); anything else is refused here too."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"a constant in a generated kernel must be a number, got {type(value).__name__}")
    value = float(value) if isinstance(value, (float, np.floating)) else int(value)
    if isinstance(value, float) and not np.isfinite(value):
        return "math.nan" if np.isnan(value) else ("math.inf" if value > 0 else "-math.inf")
    return repr(value)


def _load(source: str) -> Any:
    """The numba dispatcher of ``source`` (one per distinct source in this process)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    with _lock:
        if digest not in _compiled:
            _compiled[digest] = _import_kernel(source, digest)
        return _compiled[digest]


def _cache_counts(dispatcher: Any) -> tuple[int, int]:
    found = getattr(dispatcher, "stats", None)
    return sum(getattr(found, "cache_hits", {}).values()), sum(getattr(found, "cache_misses", {}).values())


def _import_kernel(source: str, digest: str) -> Any:
    """Write ``source`` to the kernel cache (once: numba's cache is keyed by the file's path and
    time stamp), read it back and run the verified text, never a path that could change after
    the check nor a bytecode file (graphnet.codegen.cache); where the cache cannot be written
    (a full disk), the same in a private temporary folder (no cache across processes then)."""
    name = f"graphnet_kernel_{digest}"
    data = source.encode()
    for directory in (cache_dir, cache.private_folder):
        try:
            path = os.path.join(directory(), name + ".py")
            if not cache.read_verified(path, data):
                cache.write_private(path, data)
                if not cache.read_verified(path, data):
                    raise OSError(f"{path} does not hold what was written to it")
        except OSError:
            continue
        module = types.ModuleType(name)
        module.__file__ = path  # numba caches the kernel beside it, in the checked folder
        sys.modules[name] = module
        exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - graphnet's own generated source
        return module.kernel
    raise OSError("no folder to write generated kernels to")


class FusedKernel:
    """A fused step's generated kernel: call it like the NumPy kernel, ``(*arrays, out=None)``.

    The collapsed layout and compiled function are looked up by the inputs' shapes, so a
    step fed the same shapes every run pays one dictionary lookup beyond the loop itself."""

    def __init__(self, body: tuple, out_dtype: str | None, fallback: Callable[..., Any],
                 results: tuple[int, ...] | None = None) -> None:
        self.body = body
        self.fallback = fallback  # the NumPy kernel, for layouts numba cannot take
        self.results = results  # a fused_assign's: the members written into its first inputs
        self.out_dtype = np.dtype(dtypes.DTYPES[out_dtype]) if out_dtype else None
        self.out_dtype_name = out_dtype
        self._by_shapes: dict[tuple, tuple[tuple[int, ...], tuple[tuple[int, ...], ...], Callable[..., None]]] = {}
        self.loads: list[tuple[str, float]] = []  # (where each kernel came from, seconds), for the report

    def prepare(self, shapes: Sequence[tuple[int, ...]], input_dtypes: Sequence[str],
                readonly: Sequence[bool] | None = None) -> None:
        """Compile (or load) now the kernel for inputs of these shapes and dtypes (``readonly``:
        which inputs are read-only arrays, a distinct type to numba)."""
        shapes = tuple(tuple(s) for s in shapes)
        layout = self._layout(shapes, tuple(input_dtypes))
        self._warm(layout, [np.dtype(dtypes.DTYPES[d]) for d in input_dtypes], readonly or [False] * len(shapes))
        self._by_shapes[tuple(zip(shapes, (np.dtype(dtypes.DTYPES[d]) for d in input_dtypes)))] = layout

    def _layout(self, shapes: tuple, input_dtypes: tuple[str, ...]):
        """(result shape, loop extents, each input's view shape, kernel, reduction or None), where
        a reduction is (the float64 accumulator's view shape, the scale of its sum)."""
        layout = fused_layout(self.body, shapes, self.results)
        source = kernel_source(self.body, input_dtypes, layout.spans, self.out_dtype_name, self.results,
                               layout.accumulate)
        reduction = None if layout.accumulate is None else (layout.acc_view, layout.scale)
        return layout.out_shape, layout.extents, layout.views, _load(source), reduction

    def _warm(self, layout: tuple, input_dtypes: Sequence[Any], readonly: Sequence[bool]) -> None:
        """Call the kernel once on small arrays of the run's types, so numba compiles it (or
        loads it from its cache) now; record which and how long it took."""
        _, extents, views, fn, reduction = layout
        small = [tuple(min(d, 2) for d in v) for v in views]
        arrays: list[Any] = []
        for shape, dtype, frozen in zip(small, input_dtypes, readonly):
            array = np.zeros(shape, dtype)
            array.setflags(write=not frozen)
            arrays.append(array)
        if reduction is not None:
            loop = tuple(min(d, 2) for d in extents)
            arrays[:0] = [np.zeros(tuple(min(d, 2) for d in reduction[0]), np.float64), loop]
        elif self.results is None:
            arrays.insert(0, np.zeros(tuple(min(d, 2) for d in extents), self.out_dtype))
        hits, misses = _cache_counts(fn)
        before = len(fn.signatures)
        start = time.perf_counter()
        with np.errstate(all="ignore"):
            fn(*arrays)
        seconds = time.perf_counter() - start
        new_hits, new_misses = _cache_counts(fn)
        origin = "compiled" if new_misses > misses else "disk" if new_hits > hits else \
            "memory" if len(fn.signatures) == before else "compiled"
        if origin != "memory":
            stats.kernels += 1
            stats.compile_seconds += seconds
        self.loads.append((origin, seconds if origin != "memory" else 0.0))

    def __call__(self, *arrays: Any, out: Any = None) -> Any:
        key = tuple([(a.shape, a.dtype) for a in arrays])  # dtype objects hash fast; their names do not
        found = self._by_shapes.get(key)
        if found is None:
            try:
                found = self._layout(tuple(a.shape for a in arrays), tuple(a.dtype.name for a in arrays))
                self._warm(found, [a.dtype for a in arrays], [not a.flags.writeable for a in arrays])
            except Exception as exc:  # a dtype or layout numba cannot take: NumPy computes it
                stats.fell_back(reason_of(exc))
                found = (None, None, None, None, None)
            self._by_shapes[key] = found
        out_shape, extents, views, fn, reduction = found
        if self.results is not None:  # writes its first inputs (variables: contiguous, owning their memory)
            if fn is None or not all(arrays[j].flags.c_contiguous for j in range(len(self.results))):
                return self.fallback(*arrays)
            _split_rows(fn, extents, _views(arrays, views))
            return None
        if fn is None:
            return self.fallback(*arrays, out=out)
        if reduction is not None:  # sum in float64, then scale and round once
            acc = np.zeros(reduction[0], np.float64)
            fn(acc, extents, *_views(arrays, views))
            if reduction[1] != 1.0:
                acc *= reduction[1]
            result = acc.reshape(out_shape).astype(self.out_dtype)
            if out is not None:
                np.copyto(out, result)
                return out
            return result
        target = out if out is not None and out.flags.c_contiguous else np.empty(out_shape, self.out_dtype)
        _split_rows(fn, extents, [target.reshape(extents), *_views(arrays, views)])
        if out is not None and target is not out:
            np.copyto(out, target)
            return out
        return target


#: elementwise loops over fewer elements run on one thread
SPLIT_MIN_ELEMENTS = 1 << 17


def _split_rows(fn: Callable[..., None], extents: tuple[int, ...], arrays: list[Any]) -> None:
    """``fn(*arrays)``, the loop's first (collapsed) dim shared among the threads. Each element
    is computed as it is on one thread, and an input written in place is only read at its own
    slice."""
    if not extents:
        fn(*arrays)
        return
    threads.split_first_dim(fn, arrays, extents[0], math.prod(extents), SPLIT_MIN_ELEMENTS)


def _views(arrays: Sequence[Any], shapes: Sequence[tuple[int, ...]]) -> list[Any]:
    """Each array reshaped to its collapsed view (a copy only for a non-contiguous input)."""
    return [a.reshape(v) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(v)
            for a, v in zip(arrays, shapes)]
