"""Collectives across data-parallel processes (graphnet.distributed), as ops of the graph.

Their kernels are bound to the executor's communicator (``comm=``), as random ops are to
its random source. With one process each is the identity (times one).

* ``allreduce_start(flat)`` begins summing a gradient bucket (one flat array) over the
  processes and returns that same array, which belongs to the communicator until
* ``allreduce_wait(flat)`` completes the sum and divides it by the number of processes,
  in place: the bucket's averaged gradients, sliced back out by the ``data_parallel`` pass.
  Between the two the plan computes the rest of the backward pass (the schedule puts every
  wait after it), so communication overlaps computation.
* ``allreduce_sum(x)``: a blocking, differentiable sum over the processes (SyncBatchNorm's
  batch statistics); its gradient is the sum of the cotangents, since every process's loss
  reads the same result.
"""

from __future__ import annotations

from typing import Any

from ..errors import DTypeError
from ..ir import TensorType
from ..tensor import Tensor
from .common import declare
from .registry import defop


def _same(t: TensorType, **_: Any) -> TensorType:
    if not t.dtype.startswith("float"):
        raise DTypeError(f"a collective sums floats, got {t.dtype}")
    return t


def _flat(t: TensorType, **_: Any) -> TensorType:
    if t.ndim != 1:
        raise DTypeError(f"a gradient bucket is one flat array, got {t}")
    return _same(t)


def _start_kernel(xp: Any, flat: Any, *, what: str, comm: Any) -> Any:
    comm.start_allreduce(flat, what)
    return flat


def _wait_kernel(xp: Any, flat: Any, *, what: str, comm: Any) -> Any:
    comm.wait(flat)
    if comm.size > 1:
        flat *= flat.dtype.type(1.0 / comm.size)
    return flat


def _sum_kernel(xp: Any, x: Any, *, comm: Any) -> Any:
    total = xp.array(x, copy=True, order="C")
    comm.allreduce(total, "allreduce_sum")
    return total


defop("allreduce_start", attrs={"what": "str"}, category="collective", views=((0, 0),), infer=_flat,
      kernel=_start_kernel,
      doc="Begins the average of a flat gradient bucket over the processes: (n,) -> the same (n,) array.")
defop("allreduce_wait", attrs={"what": "str"}, category="collective", views=((0, 0),), infer=_flat,
      kernel=_wait_kernel,
      doc="Completes allreduce_start: (n,) -> the bucket averaged over the processes, in place.")
defop("allreduce_sum", attrs={}, category="collective", infer=_same, kernel=_sum_kernel,
      grad=lambda g, out, ins: (allreduce_sum(g),),
      doc="x summed over the data-parallel processes (blocking): (...) -> (...).")


def allreduce_sum(x: Tensor) -> Tensor:
    """``x`` summed elementwise over the data-parallel processes (the identity with one)."""
    return declare("allreduce_sum", [x])


def allreduce_start(flat: Tensor, what: str) -> Tensor:
    return declare("allreduce_start", [flat], {"what": what})


def allreduce_wait(flat: Tensor, what: str) -> Tensor:
    return declare("allreduce_wait", [flat], {"what": what})
