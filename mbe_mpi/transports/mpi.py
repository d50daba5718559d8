"""MPI transport: rank 0 is the master, ranks 1..N-1 are workers.

Everything is non-blocking on the master (Isend / Iprobe): a slow or busy worker never stalls it.
Messages are raw bytes (``MPI.BYTE`` buffers) so that mpi4py does not pickle them a second time.
Waiting is done with Iprobe and a short sleep rather than a blocking Recv, because MPICH's blocking
calls spin a core at 100%, which oversubscribed nodes (and the master) cannot afford.

The MPI job's lifecycle lives here too: rank 0's start-up announcement, MPICH hydra's notices that a
rank ended, ending the job when a lost rank would hang ``MPI_Finalize``, and finalizing MPI where a
failure can still be reported.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable

from mpi4py import MPI

from ..backoff import Backoff
from . import launched_by_hydra

logger = logging.getLogger(__name__)

TAG = 17
ANNOUNCE_TAG = 18


def announce(comm: MPI.Comm, payload: object) -> None:
    """Rank 0 tells every other rank how the run starts (the validated input, or the error).

    Point-to-point sends instead of ``bcast``: MPICH's blocking collectives spin at 100% CPU, and
    workers may wait here while rank 0 validates a large input (or, in tests, does other work).
    """
    requests = [comm.isend(payload, dest=rank, tag=ANNOUNCE_TAG) for rank in range(1, comm.Get_size())]
    MPI.Request.Waitall(requests)


class MasterGone(EOFError):
    """Rank 0 has sent nothing, not even its beacon, for longer than the worker may wait: it is gone or hung."""


def await_announcement(comm: MPI.Comm, master_timeout: float | None = None) -> object:
    """A worker waits, sleeping between probes, for rank 0's announcement (its beacon says it is alive)."""
    backoff = Backoff(maximum=2e-3)
    endpoint = MPIWorkerEndpoint(comm, master_timeout=master_timeout)
    while not comm.Iprobe(source=0, tag=ANNOUNCE_TAG):
        endpoint.heard_lately()
        backoff.sleep()
    return comm.recv(source=0, tag=ANNOUNCE_TAG)


def beacon_possible() -> bool:
    """Whether rank 0 may send from a second thread (the same answer on every rank of a job)."""
    return MPI.Query_thread() == MPI.THREAD_MULTIPLE


class MasterBeacon:
    """Rank 0's sign of life to every worker rank: ``message`` every ``interval`` seconds, from a thread.

    Under ``mpiexec -disable-auto-cleanup`` the worker ranks outlive a rank 0 that was killed, and
    nothing in MPI tells them; a worker that hears nothing from rank 0 for ``heartbeat_timeout``
    ends itself (:class:`MasterGone`). A thread, because rank 0 is also silent while it plans,
    assembles or -- in a session -- runs the user's code between expansions. It is stopped before
    SHUTDOWN is sent, so every beacon is received before the worker's GOODBYE (the same tag keeps
    them in order) and none is left in flight at MPI_Finalize.
    """

    def __init__(self, comm: MPI.Comm, message: bytes, interval: float):
        self.comm = comm
        self.message = message
        self.interval = interval
        self.skip: frozenset[int] = frozenset()  # lost ranks, replaced whole by the master's thread
        self._stop = threading.Event()
        self._pending: list[MPI.Request] = []
        self._thread = threading.Thread(target=self._run, name="mbe_mpi-beacon", daemon=True)

    def start(self) -> MasterBeacon:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for rank in range(1, self.comm.Get_size()):
                if rank not in self.skip:
                    self._send(rank)
            self._pending = [request for request in self._pending if not _completed(request)]

    def _send(self, rank: int) -> None:
        try:
            self._pending.append(self.comm.Isend([self.message, MPI.BYTE], dest=rank, tag=TAG))
        except MPI.Exception:  # the library knows the rank is gone (ULFM): the master will learn it too
            self.skip = self.skip | {rank}

    def stop(self) -> None:
        """No beacon after this returns (each one sent has completed, or 2 s have passed)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        deadline = time.monotonic() + 2.0
        while self._pending and time.monotonic() < deadline:
            self._pending = [request for request in self._pending if not _completed(request)]
            time.sleep(1e-3)


def _completed(request: MPI.Request) -> bool:
    try:
        return request.Test()
    except MPI.Exception:
        return True  # to a failed rank: it will never complete, nor matter


def workers_on_node(comm: MPI.Comm) -> int:
    """Worker ranks on this rank's node (collective: every rank calls it), to share the node's memory."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    workers = node.Get_size() - node.allreduce(int(comm.Get_rank() == 0))
    node.Free()
    return workers


def _drain(comm: MPI.Comm, source: int, status: MPI.Status, out: list) -> None:
    """Receive every message already there into ``out`` (kept if a peer failure interrupts)."""
    while comm.Iprobe(source=source, tag=TAG, status=status):
        count = status.Get_count(MPI.BYTE)
        sender = status.Get_source()
        buf = bytearray(count)
        comm.Recv([buf, MPI.BYTE], source=sender, tag=TAG)
        out.append((sender, bytes(buf)))


#: error classes by which a fault-tolerant MPI (ULFM: Open MPI's ``mpirun --with-ft ulfm``) reports a dead peer
_PEER_FAILED = {getattr(MPI, name) for name in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
                if hasattr(MPI, name)}


def finalize() -> None:
    """End MPI now, where a failure can still be reported, instead of silently at interpreter exit.

    mpi4py finalizes at exit and ignores errors. A rank whose MPI_Finalize fails (MPICH refuses
    while a message was never received) never tells the launcher it finished, and hydra then
    kills every rank (exit code 9, "Killed (signal 9)") -- all the user would see. Here the reason
    is printed.
    """
    if not MPI.Is_initialized() or MPI.Is_finalized():
        return
    rank = MPI.COMM_WORLD.Get_rank()
    try:
        MPI.Finalize()
    except MPI.Exception as exc:
        print(f"mbe_mpi: MPI_Finalize failed on rank {rank}; mpiexec may now end the job with an error: "
              f"{exc.Get_error_string()}", file=sys.stderr, flush=True)


def abort(code: int) -> None:
    """End every rank of the job now (after the output is written), with ``code``."""
    sys.stdout.flush()
    sys.stderr.flush()
    # the launcher forwards what a rank wrote from a pipe; an abort at once can end its proxy before
    # it has read the last lines (seen under load: the run's final message missing)
    time.sleep(0.2)
    MPI.COMM_WORLD.Abort(code)


def end_if_ranks_lost(lost: Iterable[int], failed: set[int]) -> None:
    """End the MPI job once everything is written, if a lost worker would hang MPI_Finalize.

    MPI_Finalize waits for every rank, and a lost (hung or stopped) one never arrives;
    ``MPI_Abort(0)`` from rank 0 ends every rank and MPICH's ``mpiexec`` then returns 0. Ranks that
    a fault-tolerant MPI (ULFM) reported failed do not hold up MPI_Finalize, and MPI_Abort after
    such a failure can leave ranks behind (Open MPI 5.0): if every lost worker is such a rank, the
    job ends normally.
    """
    if set(lost) - failed:
        abort(0)


def ignore_hydra_notices() -> None:
    """Hydra's SIGUSR1 (a rank ended) arrives on any rank until the very end: never die of it."""
    if launched_by_hydra() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class _HydraNotices:
    """Counts MPICH hydra's SIGUSR1, which ``mpiexec -disable-auto-cleanup`` sends when a rank ends.

    Measured: within ~10 ms of a rank's end, whatever its exit code, and without saying which rank.
    So under hydra SIGUSR1 is not a stop request; SIGTERM, which hydra forwards, remains the way to stop.
    """

    def __init__(self) -> None:
        self.count = 0
        if launched_by_hydra() and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._notice)

    def _notice(self, signum: int, frame: object) -> None:
        self.count += 1

    def close(self) -> None:
        # Back to ignoring: hydra's notices go on while the other ranks exit, and Python resets the
        # signals it handles to their default at shutdown -- SIGUSR1's default kills the process.
        ignore_hydra_notices()


class MPIMasterTransport:
    """The master's side: Isend to workers, Iprobe for their results."""

    # Polling: an idle wake-up (sleep, Iprobe) costs ~80 us of CPU on a VM; at most every 5 ms that was
    # measured as 1.7% of a core while workers ran 10-s MP2 tasks, every 20 ms it is ~0.4%. Workers
    # hold prefetched tasks, so a late look does not leave them idle; when messages flow the back-off
    # restarts at min_idle_wait.
    max_idle_wait = 2e-2
    min_idle_wait = 2.5e-4

    def __init__(self, comm: MPI.Comm):
        self.comm = comm
        self.worker_ids = list(range(1, comm.Get_size()))
        self._sends: list[tuple[MPI.Request, bytes, int]] = []  # keep buffers alive until sent
        self._gone: list[int] = []  # found unreachable, not reported yet
        self.failed: set[int] = set()  # ranks the MPI library reported failed (ULFM)
        self._status = MPI.Status()
        self._notices = _HydraNotices()

    def exit_notices(self) -> int:
        return self._notices.count

    def send(self, worker: int, data: bytes) -> None:
        try:
            request = self.comm.Isend([data, MPI.BYTE], dest=worker, tag=TAG)
        except MPI.Exception as exc:  # the MPI library knows the rank is gone
            self._unreachable(worker, exc)
            return
        self._sends.append((request, data, worker))
        if len(self._sends) > 64:
            self._reap()

    def _unreachable(self, worker: int, exc: Exception) -> None:
        logger.warning("cannot reach rank %d: %s", worker, exc)
        if worker not in self._gone:
            self._gone.append(worker)

    def _reap(self) -> None:
        pending = []
        for request, data, worker in self._sends:
            try:
                if not request.Test():
                    pending.append((request, data, worker))
            except MPI.Exception as exc:
                self._unreachable(worker, exc)
        self._sends = pending

    def _receive(self, events: list) -> None:
        try:
            _drain(self.comm, MPI.ANY_SOURCE, self._status, events)
        except MPI.Exception as exc:
            if exc.Get_error_class() not in _PEER_FAILED:
                raise
            self._acknowledge_failures(exc)

    def _acknowledge_failures(self, exc: Exception) -> None:
        """ULFM: name the failed ranks and acknowledge them, so ANY_SOURCE receives work again."""
        self.comm.Ack_failed()
        failed = self.comm.Get_failed()
        try:
            ranks = MPI.Group.Translate_ranks(failed, list(range(failed.Get_size())), self.comm.Get_group())
        finally:
            failed.Free()
        for rank in ranks:
            if rank not in self.failed:
                self.failed.add(rank)
                self._unreachable(rank, exc)

    def wait(self, timeout: float) -> list[tuple[int, bytes | None]]:
        events: list[tuple[int, bytes | None]] = []
        self._receive(events)
        if not events and timeout > 0:
            time.sleep(timeout)
            self._receive(events)
        if self._sends:
            self._reap()
        if self._gone:  # reported once, as the local transport reports a closed pipe
            events.extend((worker, None) for worker in self._gone)
            self._gone.clear()
        return events

    def close(self, abandon: bool = False) -> None:
        # Even when workers are busy, the small SHUTDOWN sends complete (eager protocol); a busy
        # worker that never reads them is ended by the caller with MPI_Abort.
        backoff = Backoff(maximum=1e-3)
        # Sends to a rank that died never complete: wait a while, never forever.
        deadline = time.monotonic() + (1.0 if abandon else 10.0)
        while self._sends and time.monotonic() < deadline:
            self._reap()
            if self._sends:
                backoff.sleep()
        self._notices.close()


class MPIWorkerEndpoint:
    """A worker rank's side: wait for the master's messages without spinning.

    With ``master_timeout``, :meth:`poll` raises :class:`MasterGone` once rank 0 (whose beacon
    speaks every few seconds) has sent nothing for that long.
    """

    def __init__(self, comm: MPI.Comm, master: int = 0, master_timeout: float | None = None):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.master = master
        self.master_timeout = master_timeout
        self._status = MPI.Status()
        self._heard = time.monotonic()

    def inherited_fds(self) -> tuple[int, ...]:
        return ()  # nothing a forked child could hold open for us (its QC child is spawned anyway)

    def poll(self) -> bytes | None:
        if not self.comm.Iprobe(source=self.master, tag=TAG, status=self._status):
            self._check_master()
            return None
        buf = bytearray(self._status.Get_count(MPI.BYTE))
        self.comm.Recv([buf, MPI.BYTE], source=self.master, tag=TAG)
        self._heard = time.monotonic()
        return bytes(buf)

    def heard_lately(self) -> None:
        """Before the serve loop: take in the beacon's messages (they say nothing else), or raise MasterGone."""
        while self.poll() is not None:
            pass

    def _check_master(self) -> None:
        if self.master_timeout and time.monotonic() - self._heard > self.master_timeout:
            raise MasterGone(f"rank 0 (the master) has sent nothing for {self.master_timeout:g} s "
                             "(heartbeat_timeout): it is gone or hung")

    def send(self, data: bytes) -> None:
        request = self.comm.Isend([data, MPI.BYTE], dest=self.master, tag=TAG)
        backoff = Backoff(maximum=1e-3)
        while not request.Test():
            backoff.sleep()
