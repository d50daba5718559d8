"""A worker's QC work in a long-lived child process: crashes one process down never take the rank.

A segfault, ``os._exit``, abort, out-of-memory kill (the kernel's OOM killer picks the largest
process: the QC child) or a hang past ``task_timeout`` in the QC program ends only the child; the
supervisor turns it into a failed RESULT (kind ``crash``, ``timeout`` or ``memory``) and starts a
new child for the next task. The child lives for the whole run -- never one per task: a fresh
Python process with QCEngine costs seconds -- and ``memory_per_task`` is enforced in it with
``RLIMIT_AS`` on top of what the process already uses after start-up.

:class:`QCChild` has the interface of :class:`~mbe_mpi.worker.executors.QCThread` (a queue the
supervisor thread takes from, results it leaves, an event it sets), so the worker loop does not care
which one runs its tasks. The child hears of each expansion by the same JOB message the worker got.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from typing import Any

from ..plan import task_label
from ..protocol import JobMessage, ReadyMessage, ResultMessage, TaskError, TaskMessage, TaskSpec, decode, encode
from ..transports.processes import exit_when_gone, forkserver_running
from ..transports.zygote import TASK_PROCESS_NAME, name_process
from .execute import prepare_qc_process
from .executors import JobContexts, QCThread, startup_failure
from .init import WorkerInit

logger = logging.getLogger(__name__)

#: headroom of the address-space limit over memory_per_task (QC programs treat their memory
#: setting as a target, not a hard cap)
MEMORY_HEADROOM = 1.25


def _address_space() -> int:
    """This process's virtual memory size in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child_main(conn: multiprocessing.connection.Connection, rank: int, init: WorkerInit, worker: int) -> None:
    """The child: get ready (plugins, QCEngine), then run tasks of the current JOB until the pipe closes.

    It ends at once when its worker (process ``worker``) does, even in the middle of a task.
    """
    exit_when_gone(worker, "its worker")
    name_process(TASK_PROCESS_NAME)
    init.configure_logging(rank)  # a child from a forkserver, or spawned, has no handlers yet
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):  # stopping is decided above us
        signal.signal(sig, signal.SIG_IGN)
    for fd in init.close_fds:  # a forked child must not hold its parent's link to the master open:
        try:                   # the master learns of the parent's death by that link closing
            os.close(fd)
        except OSError:
            pass
    try:
        prepare_qc_process(init)
        if init.memory_limit_gib:
            import resource

            ceiling = _address_space() + int(init.memory_limit_gib * MEMORY_HEADROOM * 1024**3)
            resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    except Exception as exc:
        conn.send_bytes(encode(ResultMessage(-1, rank, 0.0, error=TaskError(
            "startup", f"worker could not start: {type(exc).__name__}: {exc}", "", "", rank, 0))))
        return
    conn.send_bytes(encode(ReadyMessage(rank)))
    _child_loop(conn, rank, JobContexts(rank, init))


def _child_loop(conn: multiprocessing.connection.Connection, rank: int, contexts: JobContexts) -> None:
    job: JobMessage | None = None
    while True:
        try:
            message = decode(conn.recv_bytes())
        except (EOFError, OSError):  # the supervisor is done with us
            contexts.close()
            return
        if isinstance(message, JobMessage):
            job = message
            continue
        for task in message.tasks:
            try:
                result = contexts.run(job, task)
            except MemoryError:
                label = task_label(job.model_chemistries, task) if job is not None else ""
                result = ResultMessage(task.task_id, rank, 0.0, error=TaskError(
                    "memory", "the task ran out of memory (memory_per_task)", "", label, rank, task.attempt))
            try:
                conn.send_bytes(encode(result))
            except OSError:  # the supervising worker is gone (killed): nobody to answer, end quietly
                return


#: a task's answer when the worker was shut down while it waited or ran (nobody reads it)
_STOPPED = ("stopped", "the worker was shut down")


def _death(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (killed: out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"it was killed by {name}{hint}"
    return f"it exited with code {exitcode}"


class QCChild(QCThread):
    """Runs queued tasks one at a time in a supervised child process (the queue logic is QCThread's)."""

    def __init__(self, rank: int, init: WorkerInit):
        super().__init__(self._run_one)
        self.rank = rank
        self._init = init
        self._timeout = init.task_timeout
        # restarts happen while the supervisor thread runs, and forking a threaded process is unsafe: they
        # use this process's forkserver (a rank's; a local worker's own), else spawn
        self._context = multiprocessing.get_context(
            "forkserver" if init.child_start == "forkserver" or forkserver_running() else "spawn")
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._startup_error: ResultMessage | None = None
        self._child_job: int | None = None  # the JOB the child has been sent
        self._cancelled = False
        self.restarts = 0
        # The first child may be forked from this worker (local workers: no MPI in this process, and
        # only one thread yet), which saves an interpreter start-up.
        self._start_child(multiprocessing.get_context(init.child_start))

    def wait_started(self) -> None:
        """Wait until the child can take tasks (the worker reports READY only then), then supervise."""
        self._await_ready()
        super().wait_started()

    def cancel_running(self) -> None:
        """The running task belongs to an abandoned expansion: kill the child (a new one is started)."""
        self._cancelled = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()

    def stop(self) -> None:
        super().stop()
        if self._conn is not None and not self.busy:  # an idle child tidies up (its scratch) and exits
            self._conn.close()
            self._proc.join(timeout=2)
        self._kill_child()

    # ---- the child ------------------------------------------------------------------------

    def _start_child(self, context: Any = None) -> None:
        context = context or self._context
        parent_end, child_end = context.Pipe(duplex=True)
        init = self._init
        if context.get_start_method() == "fork":  # the forked child must not keep our end open either
            init = dataclasses.replace(init, close_fds=(*init.close_fds, parent_end.fileno()))
        else:  # not a fork of this process: it has none of our descriptors, and those numbers are its own
            init = dataclasses.replace(init, close_fds=())
        self._proc = context.Process(target=_child_main, args=(child_end, self.rank, init, os.getpid()),
                                           name=f"mbe_mpi-qc-{self.rank}", daemon=True)
        self._proc.start()
        child_end.close()
        self._conn = parent_end
        self._ready = False
        self._child_job = None

    def _kill_child(self) -> None:
        proc, conn = self._proc, self._conn
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        if conn is not None:
            conn.close()
        self._proc = self._conn = None

    def _await_ready(self) -> bool:
        """Wait for the child's READY (or its start-up error). False if it died on the way.

        Here and in :meth:`_await_result` the child is held in locals: :meth:`stop`, called by the
        worker's main thread, may kill it and clear the attributes while the supervisor thread waits.
        """
        proc, conn = self._proc, self._conn
        if proc is None or conn is None:
            return False
        while not self._ready:
            if self._stopping:
                return False
            try:
                if conn.poll(0.2):
                    message = decode(conn.recv_bytes())
                    if isinstance(message, ReadyMessage):
                        self._ready = True
                    else:  # a start-up failure: every task will get it as its result
                        self._startup_error = message
                        return True
                elif not proc.is_alive():
                    return False
            except (EOFError, OSError):  # it died, or stop() closed the pipe
                return False
        return True

    def _run_one(self, job: JobMessage | None, task: TaskSpec) -> ResultMessage:
        started = time.perf_counter()
        if job is None:
            return startup_failure(self.rank, task, "worker received a task before its JOB message", "internal")

        def failure(kind: str, message: str) -> ResultMessage:
            error = TaskError(kind, message, "", task_label(job.model_chemistries, task), self.rank, task.attempt)
            return ResultMessage(task.task_id, self.rank, time.perf_counter() - started, error=error)

        problem = self._hand_over(job, task)
        if problem is not None:
            return failure(*problem)
        result = self._await_result()
        return result if isinstance(result, ResultMessage) else failure(*result)

    def _hand_over(self, job: JobMessage, task: TaskSpec) -> tuple[str, str] | None:
        """Give the task (and, when new to the child, its JOB) to a ready child; else why not."""
        if self._stopping:
            return _STOPPED
        if self._proc is None:
            self._start_child()
        proc, conn = self._proc, self._conn
        if not self._await_ready():
            if self._stopping:
                return _STOPPED
            exitcode = proc.exitcode if proc is not None else None
            self._kill_child()
            return "crash", f"the QC process could not start: {_death(exitcode)}"
        if self._startup_error is not None:
            error = self._startup_error.error
            return error.kind, error.message
        try:
            if self._child_job != job.job_id:
                conn.send_bytes(encode(job))
                self._child_job = job.job_id
            conn.send_bytes(encode(TaskMessage((task,))))
        except (BrokenPipeError, OSError):
            if self._stopping:
                return _STOPPED
            exitcode = proc.exitcode
            self._kill_child()
            return "crash", f"the QC process died before the task started: {_death(exitcode)}"
        return None

    def _await_result(self) -> ResultMessage | tuple[str, str]:
        """The child's answer, or (kind, message) when it crashed, overran task_timeout or we stop."""
        # the clock starts when the child has the task (a restarted child may take seconds to start)
        deadline = time.perf_counter() + self._timeout if self._timeout else float("inf")
        self._cancelled = False
        proc, conn = self._proc, self._conn
        while True:
            now = time.perf_counter()
            try:
                if conn.poll(max(0.0, min(0.1, deadline - now))):
                    return decode(conn.recv_bytes())
            except (EOFError, OSError):
                pass  # the child died while answering, or stop() closed the pipe: see below
            if self._stopping:
                self._kill_child()
                return _STOPPED
            if not proc.is_alive() or conn.closed:
                proc.join(timeout=5)
                exitcode = proc.exitcode
                self._kill_child()
                if self._cancelled:
                    return "stopped", "the task's expansion was abandoned"
                self.restarts += 1
                return "crash", f"the QC program crashed: {_death(exitcode)}"
            if time.perf_counter() > deadline:
                self._kill_child()
                self.restarts += 1
                return "timeout", f"the task ran longer than task_timeout ({self._timeout:g} s) and was killed"
