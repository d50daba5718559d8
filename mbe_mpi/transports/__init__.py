"""Two transports, one small interface: they move opaque protocol bytes and know nothing else.

* :mod:`mbe_mpi.transports.mpi` -- ranks of an MPI job (rank 0 master, ranks 1..N-1 workers), and
  the MPI job's lifecycle (the start-up announcement, finalize, abort);
* :mod:`mbe_mpi.transports.local` -- worker processes on this node (the single-node fallback).

The master side never blocks on one worker: ``send`` is non-blocking, ``wait`` returns whatever
has arrived within ``timeout`` (possibly nothing). A worker that is gone is reported as an event
with ``None`` instead of bytes. Transports are given the worker's entry point as a callable; they
import nothing above them.
"""

from __future__ import annotations

import os
from typing import Protocol

from ..signals import launched_by_hydra

__all__ = ["MasterTransport", "WorkerEndpoint", "launched_by_hydra", "launched_by_mpi", "launcher_rank"]

# Environment variables set by MPI launchers (MPICH/hydra, Intel MPI, Open MPI, PMIx, SLURM's PMI).
_MPI_LAUNCH_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def launched_by_mpi() -> bool:
    """Whether this process was started by mpiexec/mpirun/srun (without initialising MPI to find out)."""
    return any(name in os.environ for name in _MPI_LAUNCH_VARIABLES)


def launcher_rank() -> int:
    """This process's MPI rank as the launcher set it (0 without a launcher), before MPI starts."""
    for name in _RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return 0


class MasterTransport(Protocol):
    worker_ids: list[int]
    #: longest the master should wait in one ``wait`` call when idle: short where waiting means
    #: polling (MPI), long where a message wakes the waiter at once (pipes)
    max_idle_wait: float
    #: shortest wait worth making: tiny where waiting means polling, ``max_idle_wait`` where ``wait``
    #: blocks in the kernel until a message comes (so the master never wakes up for nothing)
    min_idle_wait: float
    #: workers the MPI library itself declared failed (ULFM); they do not hold up the job's end
    failed: set[int]

    def send(self, worker: int, data: bytes) -> None:
        """Queue ``data`` for ``worker`` without waiting for it to be received."""

    def wait(self, timeout: float) -> list[tuple[int, bytes | None]]:
        """Messages that arrived, waiting at most ``timeout`` seconds when none is there yet."""

    def exit_notices(self) -> int:
        """How many times the launcher said that *some* worker process ended (MPICH hydra's SIGUSR1)."""

    def close(self, abandon: bool = False) -> None:
        """Flush outstanding sends and release resources; ``abandon``: workers are still busy, do not wait."""


class WorkerEndpoint(Protocol):
    rank: int

    def poll(self) -> bytes | None:
        """The next message from the master if one has arrived, else None (never blocks)."""

    def send(self, data: bytes) -> None:
        """Send ``data`` to the master."""

    def inherited_fds(self) -> tuple[int, ...]:
        """Descriptors of this link that a forked child must close (so the link closes when we die)."""
