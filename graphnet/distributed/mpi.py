"""The communicator on MPI (mpi4py), with every wait bounded.

MPI itself waits forever for a process that died. Every collective here is non-blocking
underneath and its completion is polled (which also drives MPICH's progress engine) until
``timeout_seconds()``; past that the process raises DistributedTimeoutError naming the
collective, so a data-parallel job ends instead of hanging. Under ``mpiexec`` a process
that exits with an error normally makes the launcher stop the others at once; with
``mpiexec -disable-auto-cleanup`` (MPICH), or a process that hangs, they stop through this
timeout, and the job is aborted when the process exits (MPI_Finalize would wait forever).
"""

from __future__ import annotations

import atexit
import json
import time
from typing import Any

import numpy as np

from ..errors import DistributedError, DistributedTimeoutError
from .communicator import timeout_seconds

#: polls spin this long before they start to sleep between tests (a short allreduce finishes
#: within it; a long wait then costs no core)
_SPIN_SECONDS = 2e-3


class MpiCommunicator:
    """``MPI.COMM_WORLD`` (or ``comm``) as a graphnet communicator."""

    def __init__(self, comm: Any = None) -> None:
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise DistributedError(f"data-parallel runs under mpiexec need mpi4py ({exc}): "
                                   f"pip install 'graphnet[mpi]' (mpich and mpi4py wheels)") from None
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._pending: dict[tuple[int, int], tuple[Any, str]] = {}
        self._aborting = False
        #: seconds spent waiting for collectives to complete, and bytes summed (benchmarks read them)
        self.wait_seconds = 0.0
        self.reduced_bytes = 0

    def _finish(self, request: Any, what: str) -> None:
        start = time.perf_counter()
        try:
            self._poll(request, what, start)
        finally:
            self.wait_seconds += time.perf_counter() - start

    def _poll(self, request: Any, what: str, start: float) -> None:
        deadline = None
        while not request.Test():
            now = time.perf_counter()
            if deadline is None:
                deadline = start + timeout_seconds()
            if now > deadline:
                self._abort_at_exit()
                raise DistributedTimeoutError(
                    f"rank {self.rank} of {self.size} waited {now - start:.1f} s for {what or 'a collective'}: "
                    f"another process died, hung, or stopped running the plan (GRAPHNET_DIST_TIMEOUT sets "
                    f"the wait)")
            if now - start > _SPIN_SECONDS:
                time.sleep(1e-4)

    def _abort_at_exit(self) -> None:
        """After a timeout the group is broken: MPI_Finalize at exit would wait for the missing
        process forever, so the process aborts the job instead (the launcher then returns)."""
        if not self._aborting:
            self._aborting = True
            atexit.register(self.comm.Abort, 1)  # runs before mpi4py's finalize (atexit is LIFO)

    @staticmethod
    def _key(array: np.ndarray) -> tuple[int, int]:
        return array.__array_interface__["data"][0], array.nbytes

    def allreduce(self, array: np.ndarray, what: str = "") -> None:
        self.reduced_bytes += array.nbytes
        self._finish(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM), what)

    def start_allreduce(self, array: np.ndarray, what: str = "") -> None:
        if not array.flags.c_contiguous:
            raise DistributedError(f"{what}: an allreduce buffer must be contiguous")
        self.reduced_bytes += array.nbytes
        # MPICH moves a non-blocking collective along only inside MPI calls: testing the buckets
        # already in flight here lets them progress while the backward pass computes the next
        for request, _ in self._pending.values():
            request.Test()
        self._pending[self._key(array)] = (self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM), what)

    def wait(self, array: np.ndarray) -> None:
        found = self._pending.pop(self._key(array), None)
        if found is None:
            raise DistributedError("an allreduce was waited for that was never started on this array")
        self._finish(*found)

    def broadcast(self, array: np.ndarray, root: int = 0, what: str = "") -> None:
        self._finish(self.comm.Ibcast(array, root=root), what)

    def allgather_object(self, value: Any) -> list[Any]:
        data = np.frombuffer(json.dumps(value).encode(), np.uint8)
        sizes = np.zeros(self.size, np.int64)
        self._finish(self.comm.Iallgather(np.array([data.size], np.int64), sizes), "a size exchange")
        gathered = np.zeros(int(sizes.sum()), np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._finish(self.comm.Iallgatherv(data, [gathered, sizes, offsets, self.MPI.BYTE]), "an object exchange")
        return [json.loads(gathered[o:o + s].tobytes().decode()) for o, s in zip(offsets, sizes)]

    def barrier(self) -> None:
        self._finish(self.comm.Ibarrier(), "a barrier")

    def __repr__(self) -> str:
        return f"MpiCommunicator(rank={self.rank}, size={self.size})"
