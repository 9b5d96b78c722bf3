"""Checking a run's feeds against the plan's placeholders, and the dict a run returns."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import numpy as np

from .. import dtypes
from ..errors import FeedCastWarning, FeedError, MemoryLimitError
from ..plan import Plan


class RunResult(dict):
    """A run's outputs by name; a missing name raises a KeyError that lists the outputs."""

    def __missing__(self, key: Any) -> Any:
        raise KeyError(f"{key!r} is not an output of this plan; its outputs are {sorted(self)}")


def _dim_ok(expected: Any, got: int, bindings: dict[str, int]) -> bool:
    if expected is None:
        return True
    if isinstance(expected, str):
        return bindings.setdefault(expected, got) == got
    return expected == got


def check_feeds(plan: Plan, feeds: Mapping[str, Any],
                before_converting: Callable[[dict[str, tuple[int, ...]], int], None] | None = None,
                warned: set[str] | None = None) -> dict[str, np.ndarray]:
    """Validate feeds against the plan's placeholders; return them as arrays of the right dtype.

    Missing and unexpected names, wrong ranks, sizes, inconsistent symbolic dims and
    dtypes of the wrong kind (a float fed to an integer placeholder) raise FeedError.
    Values of the same kind are converted (float64 data to a float32 placeholder), after
    ``before_converting(shapes, converted_bytes)`` has seen the checked shapes and the bytes
    the conversions will allocate (the memory limit is checked there, before anything is); a conversion that finds no memory raises
    MemoryLimitError.

    The casting rule: a feed of the placeholder's kind is converted to its dtype. A wider
    float (float64 to a float32 placeholder) is rounded, with one FeedCastWarning per feed
    name in ``warned`` (the executor's set: once per plan and feed); a narrower one (float16)
    is exact. Integers are converted only when every value fits (int64 labels to an int32
    placeholder); one that does not is a FeedError, never a wrapped value.
    """
    expected = plan.feeds
    missing = [n for n in expected if n not in feeds]
    unexpected = [n for n in feeds if n not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing feed(s) {missing}")
        if unexpected:
            parts.append(f"unexpected feed(s) {unexpected}: no output of this plan depends on "
                         f"{'it' if len(unexpected) == 1 else 'them'}, so the plan does not read "
                         f"{'it' if len(unexpected) == 1 else 'them'} (a placeholder only joins a plan through "
                         f"the outputs that use it; gn.grad with respect to a parameter the output does not "
                         f"reach is zeros, JAX's rule, and reads no feed)")
        raise FeedError("; ".join(parts) + f"; this plan takes {sorted(expected)}")
    bindings: dict[str, int] = {}
    arrays = {}
    for name, value in feeds.items():
        spec = plan.buffers[expected[name]]
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        want = dtypes.DTYPES[spec.dtype]
        if array.dtype != want:
            same_kind = (array.dtype.kind == "f" and want.kind == "f") or (
                array.dtype.kind in "iu" and want.kind in "iu") or (array.dtype.kind == want.kind)
            if not same_kind:
                raise FeedError(f"feed {name!r}: expected dtype {spec.dtype}, got {array.dtype}")
        shape_text = "(" + ", ".join("None" if d is None else repr(d) if isinstance(d, str) else str(d)
                                     for d in spec.shape) + ")"
        if array.ndim != len(spec.shape) or not all(
                _dim_ok(e, g, bindings) for e, g in zip(spec.shape, array.shape)):
            raise FeedError(f"feed {name!r}: expected shape {shape_text}, got {tuple(array.shape)}"
                            + (f" (bound so far: {bindings})" if bindings else ""))
        arrays[name] = array
    if plan.dims is not None:
        plan.dims.check({name: array.shape for name, array in arrays.items()})
    if before_converting is not None:
        converted = sum(int(array.size) * dtypes.DTYPES[plan.buffers[expected[name]].dtype].itemsize
                        for name, array in arrays.items()
                        if array.dtype != dtypes.DTYPES[plan.buffers[expected[name]].dtype])
        before_converting({name: tuple(array.shape) for name, array in arrays.items()}, converted)
    for name, array in arrays.items():
        want = dtypes.DTYPES[plan.buffers[expected[name]].dtype]
        if array.dtype != want:
            _check_cast(name, array, want, warned)
            try:
                arrays[name] = array.astype(want)
            except MemoryError:
                raise MemoryLimitError(f"feed {name!r}: no memory to convert its {array.dtype}"
                                       f"{list(array.shape)} to {want.name}") from None
    return arrays


def _check_cast(name: str, array: np.ndarray, want: np.dtype, warned: set[str] | None) -> None:
    """Refuse an integer feed whose values the placeholder's dtype cannot hold; warn (once per
    name in ``warned``) when floats are rounded to a narrower float."""
    if array.dtype.kind in "iu" and want.kind in "iu" and not np.can_cast(array.dtype, want) and array.size:
        info = np.iinfo(want)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise FeedError(f"feed {name!r}: values from {low} to {high} do not fit the placeholder's {want.name}")
    elif array.dtype.kind == "f" and want.kind == "f" and array.dtype.itemsize > want.itemsize:
        if warned is None or name not in warned:
            if warned is not None:
                warned.add(name)
            warnings.warn(f"feed {name!r}: {array.dtype.name} values are rounded to the placeholder's {want.name} "
                          f"(as PyTorch rounds them into a float32 tensor); pass {want.name} arrays, or declare "
                          f"the placeholder {array.dtype.name} to keep the precision. Said once per plan and feed.",
                          FeedCastWarning, stacklevel=5)
