"""Two transports, one small interface: they move opaque protocol bytes and know nothing else.

* :mod:`mbe_mpi.transports.mpi` -- ranks of an MPI job (rank 0 master, ranks 1..N-1 workers);
* :mod:`mbe_mpi.transports.local` -- worker processes on this node (the single-node fallback).

The master side never blocks on one worker: ``send`` is non-blocking, ``wait`` returns whatever
has arrived within ``timeout`` (possibly nothing). A worker that is gone is reported as an event
with ``None`` instead of bytes.
"""

from __future__ import annotations

from typing import Protocol


class MasterTransport(Protocol):
    worker_ids: list[int]
    #: longest the master should wait in one ``wait`` call when idle: short where waiting means
    #: polling (MPI), long where a message wakes the waiter at once (pipes)
    max_idle_wait: float
    #: shortest wait worth making: tiny where waiting means polling, ``max_idle_wait`` where ``wait``
    #: blocks in the kernel until a message comes (so the master never wakes up for nothing)
    min_idle_wait: float

    def send(self, worker: int, data: bytes) -> None:
        """Queue ``data`` for ``worker`` without waiting for it to be received."""

    def wait(self, timeout: float) -> list[tuple[int, bytes | None]]:
        """Messages that arrived, waiting at most ``timeout`` seconds when none is there yet."""

    def close(self, abandon: bool = False) -> None:
        """Flush outstanding sends and release resources; ``abandon``: workers are still busy, do not wait."""


class WorkerEndpoint(Protocol):
    rank: int

    def poll(self) -> bytes | None:
        """The next message from the master if one has arrived, else None (never blocks)."""

    def send(self, data: bytes) -> None:
        """Send ``data`` to the master."""
