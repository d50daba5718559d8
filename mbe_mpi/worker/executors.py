"""Where a worker runs its QC tasks: a background thread (:class:`QCThread`), or a supervised child
process (:class:`~mbe_mpi.worker.supervise.QCChild`, which shares this queue discipline).

The QC program runs off the worker's main thread so that the worker answers the master while a
task runs: a STEAL request gives back queued tasks at once (not after a three-hour trimer), and
results go out as soon as they exist.

Queue discipline: the QC thread takes tasks from the front of the queue only when it is free, and
a STEAL takes them from the back, both under one lock; a task handed back in a STOLEN reply has
left the queue for good, so it can never also run here.
"""

from __future__ import annotations

import collections
import logging
import threading
import traceback
from collections.abc import Callable

from ..protocol import JobMessage, ResultMessage, TaskError, TaskSpec
from .execute import WorkerContext, prepare_qc_process, run_task
from .init import WorkerInit

logger = logging.getLogger(__name__)

RunTask = Callable[[JobMessage, TaskSpec], ResultMessage]


class QCThread:
    """Runs queued tasks one at a time in a background thread; results are collected by the owner."""

    def __init__(self, run: RunTask, close: Callable[[], None] | None = None):
        self._run = run
        self._close = close
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.results: collections.deque[tuple[int, ResultMessage]] = collections.deque()  # (job id, result)
        self.activity = threading.Event()  # set when a result is ready (wakes the owner's wait)
        self.busy = False
        self.job: JobMessage | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="mbe_mpi-qc", daemon=True)

    def set_job(self, job: JobMessage) -> None:
        """The expansion the tasks that follow belong to; what is queued of an earlier one is dropped.

        A master sends a new JOB only when it is done with the previous expansion, so anything left
        of that one was abandoned (the run was stopped or interrupted): its queued tasks go, and the
        running one is stopped where that is possible (:meth:`cancel_running`).
        """
        with self._lock:
            previous, self.job = self.job, job
            if previous is not None and previous.job_id != job.job_id:
                self.queue.clear()
                running = self.busy
            else:
                running = False
        if running:
            self.cancel_running()

    def cancel_running(self) -> None:
        """Stop the running task (a thread cannot be stopped: its result is dropped when it comes)."""

    def add(self, tasks: tuple[TaskSpec, ...]) -> None:
        with self._work:
            self.queue.extend(tasks)
            self._work.notify()

    def take_back(self, count: int) -> tuple[int, ...]:
        """Remove up to ``count`` not-yet-started tasks from the back of the queue."""
        with self._lock:
            taken = [self.queue.pop() for _ in range(min(count, len(self.queue)))]
        return tuple(task.task_id for task in taken)

    def stop(self) -> None:
        """No more tasks; when the thread is not in a task, let it finish and clean up (``close``)."""
        with self._work:
            self._stopping = True
            self._work.notify()
            busy = self.busy
        if not busy and self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._close is not None and not self._thread.is_alive():
            self._close()

    def wait_started(self) -> None:
        """Start running tasks (a subclass may first wait for its QC process)."""
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._work:
                while not self.queue and not self._stopping:
                    self._work.wait()
                if self._stopping:
                    return
                task = self.queue.popleft()
                job = self.job
                self.busy = True
            result = self._run(job, task)
            with self._lock:
                self.busy = False
                self.results.append((job.job_id if job is not None else 0, result))
            self.activity.set()


def startup_failure(rank: int, task: TaskSpec, message: str, kind: str = "startup") -> ResultMessage:
    """The answer to a task on a worker that could not get ready for it (the cause travels as data)."""
    return ResultMessage(task.task_id, rank, 0.0, error=TaskError(kind, message, "", "", rank, task.attempt))


class JobContexts:
    """The WorkerContext of the current expansion, built when its first task runs; a failure is kept.

    If the context cannot be built (a plugin fails to import on this node, an input this mbe_mpi
    cannot read), every task of that job still gets an answer -- a structured error -- so the master
    reports the cause instead of waiting.
    """

    def __init__(self, rank: int, init: WorkerInit):
        self.rank = rank
        self.init = init
        self._job_id: int | None = None
        self._context: WorkerContext | None = None
        self._error: tuple[str, str] | None = None

    def run(self, job: JobMessage | None, task: TaskSpec) -> ResultMessage:
        if job is None:
            return startup_failure(self.rank, task, "worker received a task before its JOB message", "internal")
        if job.job_id != self._job_id:
            self._switch(job)
        if self._context is None:
            message, tb = self._error
            error = TaskError("startup", message, tb, "", self.rank, task.attempt)
            return ResultMessage(task.task_id, self.rank, 0.0, error=error)
        return run_task(self._context, task)

    def _switch(self, job: JobMessage) -> None:
        self.close()
        self._job_id, self._error = job.job_id, None
        try:
            self._context = WorkerContext.for_job(job, self.rank, self.init)
        except Exception as exc:
            logger.exception("worker %d could not prepare job %d", self.rank, job.job_id)
            self._error = (f"worker could not start: {type(exc).__name__}: {exc}", traceback.format_exc())

    def close(self) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None


def thread_executor(rank: int, init: WorkerInit) -> QCThread:
    """QC in a thread of the worker itself (no isolation: a crash of the QC program ends the worker)."""
    contexts = JobContexts(rank, init)
    try:
        prepare_qc_process(init)
    except Exception as exc:
        logger.exception("worker %d could not start", rank)
        failure = f"worker could not start: {type(exc).__name__}: {exc}"
        return QCThread(lambda job, task: startup_failure(rank, task, failure))
    return QCThread(contexts.run, close=contexts.close)
