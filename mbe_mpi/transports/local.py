"""Local transport: the single-node fallback, worker *processes* connected by pipes.

Same protocol bytes and the same master/worker code as under MPI. Workers are started once per
pool, forked from a preloaded forkserver (:mod:`mbe_mpi.transports.processes`; never from the
running master, whose threads, OpenMP pools and -- under ``mpiexec -n 1`` -- MPI state a fork would
copy, but from a spawned interpreter or from ``zygote``, a fork of the master made while it had none of
those). What a worker runs is given as ``entry``, a picklable callable that takes the worker's
:class:`PipeWorkerEndpoint`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
from collections.abc import Callable, Sequence

from .processes import exit_when_gone, forkserver_context, thread_environment
from .zygote import WORKER_PROCESS_NAME, Zygote, name_process

logger = logging.getLogger(__name__)

class PipeWorkerEndpoint:
    """A worker process's side of its pipe; ``recv`` blocks in the kernel, costing no CPU."""

    def __init__(self, conn: multiprocessing.connection.Connection, rank: int):
        self.conn = conn
        self.rank = rank

    def poll(self) -> bytes | None:
        return self.conn.recv_bytes() if self.conn.poll() else None

    def send(self, data: bytes) -> None:
        self.conn.send_bytes(data)

    def inherited_fds(self) -> tuple[int, ...]:
        return (self.conn.fileno(),)


def _worker_main(conn: multiprocessing.connection.Connection, rank: int,
                 entry: Callable[[PipeWorkerEndpoint], None], master: int, threads: int | None) -> None:
    """Entry point of a local worker process (module level so that ``spawn`` can import it).

    Ctrl-C reaches every process of the terminal's process group: the master handles it (it keeps
    the results and ends the workers), a worker ignores it. ``threads`` (not None): the worker gets
    a forkserver of its own for the processes it starts later (a QC child after a crash, from a
    thread of the worker, where forking the worker itself would not be safe): a zygote of this
    process, forked now, while it has one thread, no MPI and nothing else started.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    zygote = Zygote.fork() if threads is not None else None
    exit_when_gone(master, "the master")  # from the first moment, whatever the worker is doing then
    name_process(WORKER_PROCESS_NAME)
    if zygote is not None:
        forkserver_context(threads, (), zygote)  # everything it needs is imported already
    try:
        entry(PipeWorkerEndpoint(conn, rank))
    except (EOFError, BrokenPipeError):
        pass  # the master went away: nothing left to report to


class LocalMasterTransport:
    """The master's side: one duplex pipe per worker process."""

    # waiting is poll() on the pipes: a message wakes the master at once, so it never polls for nothing
    max_idle_wait = min_idle_wait = 0.05
    failed: set[int] = frozenset()  # only an MPI library declares processes failed

    def __init__(self, n_workers: int, entry: Callable[[PipeWorkerEndpoint], None], threads: int, *,
                 preload: Sequence[str] = (), start_method: str = "forkserver", zygote: Zygote | None = None,
                 worker_forkservers: bool = False):
        """``worker_forkservers``: each worker has a forkserver of its own (see :func:`_worker_main`)."""
        if start_method == "forkserver":
            context = forkserver_context(threads, preload, zygote)
        else:
            if zygote is not None:
                zygote.discard()
            context = multiprocessing.get_context(start_method)
        self.worker_ids = list(range(1, n_workers + 1))
        self._conns: dict[int, multiprocessing.connection.Connection] = {}
        self._procs: dict[int, multiprocessing.process.BaseProcess] = {}
        with thread_environment(threads):
            for worker in self.worker_ids:
                parent_end, child_end = context.Pipe(duplex=True)
                proc = context.Process(
                    target=_worker_main, name=f"mbe_mpi-worker-{worker}",
                    args=(child_end, worker, entry, os.getpid(), threads if worker_forkservers else None),
                    daemon=False,  # a worker supervises its own QC child; close() ends it
                )
                proc.start()
                child_end.close()
                self._conns[worker] = parent_end
                self._procs[worker] = proc
        self._gone: list[int] = []  # found gone while sending, not reported yet
        # (each worker watches this process: it ends when the master does, even while starting)
        # one poll object for the whole run (multiprocessing.connection.wait builds a selector per call)
        self._poller = select.poll()
        self._worker_of: dict[int, int] = {}
        for worker, conn in self._conns.items():
            self._poller.register(conn.fileno(), select.POLLIN)
            self._worker_of[conn.fileno()] = worker

    def send(self, worker: int, data: bytes) -> None:
        conn = self._conns.get(worker)
        if conn is None:
            return
        try:
            conn.send_bytes(data)
        except (BrokenPipeError, OSError):
            self._forget(worker)
            self._gone.append(worker)

    def wait(self, timeout: float) -> list[tuple[int, bytes | None]]:
        events: list[tuple[int, bytes | None]] = [(worker, None) for worker in self._gone]  # as a closed pipe is
        self._gone.clear()
        if events:
            return events
        for fd, _ in self._poller.poll(math.ceil(timeout * 1000)):
            worker = self._worker_of.get(fd)
            conn = self._conns.get(worker)
            if conn is None:
                continue
            try:
                events.append((worker, conn.recv_bytes()))
            except (EOFError, OSError):
                self._forget(worker)
                events.append((worker, None))
        return events

    def exit_notices(self) -> int:
        return 0  # a closed pipe names the worker that ended

    def _forget(self, worker: int) -> None:
        conn = self._conns.pop(worker, None)
        if conn is not None:
            self._poller.unregister(conn.fileno())
            del self._worker_of[conn.fileno()]
            conn.close()

    def close(self, abandon: bool = False) -> None:
        for proc in self._procs.values():
            proc.join(timeout=0 if abandon else 30)
            if proc.is_alive():
                if not abandon:
                    logger.warning("worker process %s did not stop; killing it", proc.name)
                proc.kill()  # SIGKILL: workers ignore SIGTERM, which is the master's to handle
                proc.join(timeout=5)
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
