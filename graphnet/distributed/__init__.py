"""Data-parallel training across processes (``mpiexec -n 4 python train.py``): the process
group and the communicator its collectives run on.

    import graphnet as gn
    gn.distributed.init()            # rank and size from MPI; one process without mpiexec
    plan = gn.compile(loss, optimizer=gn.optim.Adam(), data_parallel=True)
    loader = gn.data.DataLoader(x, y, batch_size=64, shuffle=True, shard=gn.distributed.shard())

The communicator protocol (communicator.py) is what the plan's collective steps call:
``allreduce``, ``start_allreduce``/``wait``, ``broadcast``, ``barrier``. ``MpiCommunicator``
(mpi.py) runs it on mpi4py (the ``mpi`` extra: ``pip install mpich mpi4py``); a GPU backend
can plug in another (NCCL) the same way. Without ``init`` a process is a group of one and
every collective is the identity. Runs here sit below the compiler: nothing in this package
imports graphs or plans.
"""

from __future__ import annotations

import os
from typing import Any

from .communicator import Communicator, SingleProcess, timeout_seconds

__all__ = ["Communicator", "SingleProcess", "current", "init", "is_main", "rank", "set_communicator", "shard",
           "size", "timeout_seconds"]

_current: Communicator = SingleProcess()

#: environment variables set by the MPI launchers graphnet knows (MPICH/Hydra, Open MPI, Slurm)
_LAUNCHED_BY = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, srun)."""
    return any(name in os.environ for name in _LAUNCHED_BY)


def init(communicator: Communicator | None = None) -> Communicator:
    """Join the process group and return its communicator. Under mpiexec: MPI's world
    (mpi4py must be installed: ``pip install 'graphnet[mpi]'``); otherwise a group of one, so
    the same script runs alone. Calling it again returns the same communicator."""
    global _current
    if communicator is not None:
        _current = communicator
    elif isinstance(_current, SingleProcess) and launched_by_mpi():
        from .mpi import MpiCommunicator

        _current = MpiCommunicator()
    return _current


def set_communicator(communicator: Communicator) -> None:
    """Use ``communicator`` for the collectives of plans compiled from now on (tests, NCCL)."""
    global _current
    _current = communicator


def current() -> Communicator:
    """The process group's communicator (a group of one before ``init``)."""
    return _current


def rank() -> int:
    """This process's index in the group, 0 to ``size() - 1``."""
    return _current.rank


def size() -> int:
    """How many processes the group has."""
    return _current.size


def is_main() -> bool:
    """Whether this is rank 0: the process that prints, draws progress bars and saves."""
    return _current.rank == 0


def shard() -> tuple[int, int]:
    """``(rank, size)``: what ``DataLoader(..., shard=...)`` takes to give this process its share."""
    return _current.rank, _current.size


def describe(value: Any = None) -> str:
    return f"rank {_current.rank} of {_current.size}"
