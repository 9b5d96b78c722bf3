"""Which CPU convolution algorithm runs, per step and per input shape.

The candidates are in graphnet/kernels/cpu/conv/algorithms.py (per-image products with numba
im2col/col2im, plain products for 1x1 convolutions, the shared ``xp`` kernel). Which runs is
decided by a loaded plan's recorded choice where it has one, else by a cost rule of the
shapes alone (the default: results never depend on timing), or, with autotuning on
(``GRAPHNET_AUTOTUNE=1``), by timing each candidate once on the real shapes at the first
run and keeping the fastest, remembered on disk beside the generated kernels.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable

import numpy as np

from .. import threads
from . import algorithms, nhwc, shifted
from .algorithms import ALGORITHMS, Workspace, _geometry, _pointwise, shapes_of
from ....codegen.cache import cache_dir, write_private


def preload_loops() -> None:
    """Import every algorithm's compiled-loop modules (numba dispatchers; nothing is compiled
    here). Done when a plan with convolutions is bound, so that a first run does not import
    them inside a helper thread while the other threads wait."""
    for module in (algorithms, nhwc, shifted):
        module._loops()


def candidates(op: str, x_shape: tuple, w_shape: tuple, attrs: dict[str, Any]) -> list[str]:
    """The algorithms that can compute ``op`` at these shapes, in the cost rule's order of preference."""
    usable = [name for name, (_, applies) in ALGORITHMS[op].items() if applies(x_shape, w_shape, attrs)]
    return sorted(usable, key=lambda name: _RULE_ORDER.index(name))


#: timed runs per candidate when autotuning (after one untimed run)
TIMED_RUNS = 2

_RULE_ORDER = ("xp", "batched_gemm", "pointwise", "shifted", "nhwc")


def rule(op: str, x_shape: tuple, w_shape: tuple, attrs: dict[str, Any]) -> str:
    """The cost rule (used when autotuning is off), from timings of this project's reference
    networks (benchmarks/conv_algorithms.py): 1x1 convolutions as plain products per image
    (no columns); per-image columns for other 1x1 and single-channel
    convolutions, whose columns are no bigger than the input; channels-last columns for 8
    channels or more in one group (runs of kw * C values); per-image columns for input
    gradients (one scatter pass instead of one per tap) unless the images are small, where
    per-image products are too small for BLAS; the shared kernel's single large product
    otherwise."""
    geo = _geometry(x_shape, w_shape, attrs)
    if _pointwise(x_shape, w_shape, attrs) and (op != "conv2d_grad_input" or (geo.sh, geo.sw) == (1, 1)):
        return "pointwise"  # (a strided 1x1's input gradient scatters faster through col2im)
    if geo.kh * geo.kw == 1 or geo.cg == 1:
        return "batched_gemm"
    if geo.groups == 1 and geo.cg >= 8:
        return "nhwc"
    if op == "conv2d_grad_input" and (max(geo.sh, geo.sw) > 1 or geo.p >= 64):
        return "batched_gemm"
    return "xp"


#: the file of timed choices; a new name whenever the algorithms' speeds change (3: the
#: channels-last and per-image chunk loops compiled whole), so that choices timed before are
#: timed again
DECISIONS_FILE = "conv_algorithms.3.json"


def _decisions_path() -> str:
    return os.path.join(cache_dir(), DECISIONS_FILE)


def _load_decisions() -> dict[str, str]:
    """Algorithms timed earlier on this machine (a file we wrote, but read as untrusted: any
    entry that is not a known algorithm name is ignored)."""
    try:
        with open(_decisions_path()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _save_decision(key: str, algorithm: str) -> None:
    with _lock:
        decisions = _load_decisions()
        decisions[key] = algorithm
        try:
            write_private(_decisions_path(), json.dumps(decisions, indent=0, sort_keys=True).encode())
        except OSError:
            pass  # an unwritable cache only means timing again in the next process


_lock = threading.Lock()

#: convolutions with fewer multiply-adds than this run on one thread
SPLIT_MIN_MACS = 1 << 20


def _multiply_adds(x_shape: tuple, w_shape: tuple, attrs: dict[str, Any]) -> int:
    geo = _geometry(x_shape, w_shape, attrs)
    return geo.n * geo.p * geo.o * geo.k


def parts(op: str, x_shape: tuple, w_shape: tuple, attrs: dict[str, Any], inside: bool | None = None) -> int:
    """How many parts a convolution's images are cut into, one per thread (``inside``: as in
    a run that splits its kernels, else as where it is called; threads.parts_for)."""
    return threads.parts_for(_multiply_adds(x_shape, w_shape, attrs), SPLIT_MIN_MACS, x_shape[0], inside)


def _images(op: str, arrays: tuple[Any, ...], start: int, stop: int) -> tuple[Any, ...]:
    """The step's inputs for images ``start:stop`` (the weight whole)."""
    if op == "conv2d":
        return arrays[0][start:stop], arrays[1]
    if op == "conv2d_grad_input":
        return arrays[0][start:stop], arrays[1], arrays[2][start:stop]
    return arrays[0][start:stop], arrays[1][start:stop], arrays[2]


class ConvKernel:
    """A convolution step's kernel: picks an algorithm per distinct (input, weight, dtype)
    shape, the first time it sees it, then calls it directly.

    With autotuning on, each candidate runs on the step's real inputs once untimed and then
    ``TIMED_RUNS`` times, and the fastest wins (remembered on disk, keyed by op, shapes, dtype
    and attributes); off, the cost rule decides. A choice in ``pinned`` under the same key (a
    loaded plan's) comes first. ``decisions`` lists what was picked and how
    ("plan"|"rule"|"timed"|"cached"), for the report and for saving with the plan."""

    def __init__(self, op: str, attrs: dict[str, Any], autotune: bool,
                 workspaces: list[Workspace] | None = None, pinned: dict[str, str] | None = None) -> None:
        self.op = op
        # shape key -> algorithm a loaded plan trained with (the executor's dict, filled at load)
        self.pinned = pinned if pinned is not None else {}
        self.attrs = attrs
        self.autotune = autotune
        # one workspace per part: the executor's list, shared by its convolutions and grown here
        self.workspaces = workspaces if workspaces is not None else [Workspace()]
        self._partials: dict[tuple, list[np.ndarray]] = {}  # the weight gradient's other parts' sums
        self._work: dict[tuple, int] = {}  # (input, weight shape) -> multiply-adds, for ``parts``
        self._chosen: dict[tuple, Callable[..., np.ndarray]] = {}
        self.decisions: dict[str, tuple[str, str]] = {}  # shape key -> (algorithm, how)

    def __call__(self, *arrays: Any, out: np.ndarray | None = None) -> np.ndarray:
        x_shape, w_shape = shapes_of(self.op, arrays)
        shape_key = (x_shape, w_shape, arrays[0].dtype.str)
        kernel = self._chosen.get(shape_key)
        if kernel is None:
            result = self._choose(shape_key, arrays)
            if out is None:
                return result
            np.copyto(out, result)
            return out
        return self._split(kernel, arrays, out, x_shape, w_shape)

    def _split(self, kernel: Callable[..., np.ndarray], arrays: tuple[Any, ...], out: np.ndarray | None,
               x_shape: tuple, w_shape: tuple) -> np.ndarray:
        """``kernel`` over the images cut into one part per thread, each part with its own
        workspace: the forward and the input gradient write disjoint images of the result;
        the weight gradient's parts each sum their images, and the parts' sums are added."""
        work = self._work.get((x_shape, w_shape))
        if work is None:
            work = self._work[x_shape, w_shape] = _multiply_adds(x_shape, w_shape, self.attrs)
        count = threads.parts_for(work, SPLIT_MIN_MACS, x_shape[0])
        if count == 1:
            return kernel(*arrays, out=out, workspace=self.workspaces[0], **self.attrs)
        while len(self.workspaces) < count:
            self.workspaces.append(Workspace())
        spans = threads.spans(x_shape[0], count)
        if self.op != "conv2d_grad_weight":
            target = out if out is not None and out.flags.c_contiguous else \
                np.empty((x_shape[0], *self._result_shape(arrays)[1:]), arrays[0].dtype)
            threads.run_parts([
                lambda k=k, s=s, e=e: kernel(*_images(self.op, arrays, s, e), out=target[s:e],
                                             workspace=self.workspaces[k], **self.attrs)
                for k, (s, e) in enumerate(spans)])
        else:
            key = (w_shape, arrays[0].dtype.str)
            partials = self._partials.get(key)
            if partials is None or len(partials) < count - 1:
                partials = self._partials[key] = [np.empty(w_shape, arrays[0].dtype) for _ in range(count - 1)]
            target = out if out is not None else np.empty(w_shape, arrays[0].dtype)
            sums = [target, *partials]
            threads.run_parts([
                lambda k=k, s=s, e=e: kernel(*_images(self.op, arrays, s, e), out=sums[k],
                                             workspace=self.workspaces[k], **self.attrs)
                for k, (s, e) in enumerate(spans)])
            for partial in partials[:count - 1]:
                np.add(target, partial, out=target)
        if out is not None and target is not out:
            np.copyto(out, target)
            return out
        return target

    def held_bytes(self) -> int:
        """What the kernel keeps between runs besides the shared workspaces (the weight
        gradient's part sums)."""
        return sum(partial.nbytes for partials in self._partials.values() for partial in partials)

    def _result_shape(self, arrays: tuple[Any, ...]) -> tuple[int, ...]:
        if self.op == "conv2d_grad_input":
            return tuple(arrays[2].shape)
        geo = _geometry(tuple(arrays[0].shape), tuple(arrays[1].shape), self.attrs)
        return geo.n, geo.o, geo.ho, geo.wo

    def _choose(self, shape_key: tuple, arrays: tuple[Any, ...]) -> np.ndarray:
        x_shape, w_shape, dtype = shape_key
        options = candidates(self.op, x_shape, w_shape, self.attrs)
        text = f"{self.op} x{list(x_shape)} w{list(w_shape)} {np.dtype(dtype).name} " + " ".join(
            f"{k}={v}" for k, v in sorted(self.attrs.items()))
        result = None
        if (pinned := self.pinned.get(text)) in options:
            name, how = pinned, "plan"
        elif not self.autotune or len(options) == 1:
            name, how = (rule(self.op, x_shape, w_shape, self.attrs) if len(options) > 1 else options[0]), "rule"
        elif (stored := _load_decisions().get(text)) in options:
            name, how = stored, "cached"
        else:
            seconds = {}
            for candidate in options:
                kernel = ALGORITHMS[self.op][candidate][0]
                kernel(*arrays, **self.attrs)  # the first call may load a compiled loop
                times = []
                for _ in range(TIMED_RUNS):  # the best of a few: this machine's speed wanders
                    start = time.perf_counter()
                    value = self._split(kernel, arrays, None, x_shape, w_shape)  # as it will run
                    times.append(time.perf_counter() - start)
                    value = np.array(value)  # (it may lie in a workspace the next candidate uses)
                seconds[candidate] = min(times)
                if result is None or seconds[candidate] == min(seconds.values()):
                    result = value
            name, how = min(seconds, key=seconds.__getitem__), "timed"
            _save_decision(text, name)
        self._chosen[shape_key] = ALGORITHMS[self.op][name][0]
        self.decisions[text] = (name, how)
        if result is None:  # as later runs compute it (a copy: it may lie in a workspace)
            result = np.array(self._split(self._chosen[shape_key], arrays, None, x_shape, w_shape))
        return result
