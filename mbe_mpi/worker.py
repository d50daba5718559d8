"""A worker: a local queue of tasks, one QC thread, and a loop that keeps talking to the master.

The QC program runs in a background thread so that the worker answers the master while a task
runs: a STEAL request gives back queued tasks at once (not after a three-hour trimer), and results
go out as soon as they exist. The same code serves both transports.

Queue discipline: the QC thread takes tasks from the front of the queue only when it is free, and
a STEAL takes them from the back, both under one lock; a task handed back in a STOLEN reply has
left the queue for good, so it can never also run here.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .backoff import Backoff
from .execute import WorkerContext, run_task
from .protocol import (
    GoodbyeMessage,
    HeartbeatMessage,
    ReadyMessage,
    ResultBatch,
    ResultMessage,
    ShutdownMessage,
    StealMessage,
    StolenMessage,
    TaskError,
    TaskMessage,
    TaskSpec,
    decode,
    encode,
)
from .transports import WorkerEndpoint

logger = logging.getLogger(__name__)

# Results of tasks shorter than this are held back briefly and sent together while more work is
# queued (see _should_flush): one message per ~10 ms instead of one per task keeps the master's cost
# per task small for cheap tasks (an xTB task takes 1-5 ms).
TINY_TASK_SECONDS = 0.02
FLUSH_AFTER_SECONDS = 0.01
FLUSH_AFTER_RESULTS = 32


class QCThread:
    """Runs queued tasks one at a time in a background thread; results are collected by the owner."""

    def __init__(self, run: Callable[[TaskSpec], ResultMessage], close: Callable[[], None] | None = None):
        self._run = run
        self._close = close
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.results: collections.deque[ResultMessage] = collections.deque()
        self.activity = threading.Event()  # set when a result is ready (wakes the owner's wait)
        self.busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="mbe_mpi-qc", daemon=True)

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
                self.busy = True
            result = self._run(task)
            with self._lock:
                self.busy = False
                self.results.append(result)
            self.activity.set()


def thread_executor(rank: int, make_context: Callable[[], WorkerContext]) -> QCThread:
    """QC in a thread of the worker itself (no isolation: a crash of the QC program ends the worker).

    If the context cannot be built (a plugin fails to import on this node, say), every task still
    gets an answer -- a structured error -- so the master reports the cause instead of waiting.
    """
    try:
        context: WorkerContext | None = make_context()
        startup_error = startup_traceback = ""
    except Exception as exc:
        logger.exception("worker %d could not start", rank)
        context = None
        startup_error = f"worker could not start: {type(exc).__name__}: {exc}"
        startup_traceback = traceback.format_exc()

    def run(task: TaskSpec) -> ResultMessage:
        if context is not None:
            return run_task(context, task)
        error = TaskError("startup", startup_error, startup_traceback, "", rank, task.attempt)
        return ResultMessage(task.task_id, rank, 0.0, error=error)

    return QCThread(run, close=context.close if context is not None else None)


def serve(endpoint: WorkerEndpoint, qc: QCThread | Any, *, max_idle_wait: float = 5e-3,
          busy_idle_wait: float = 0.05, heartbeat_interval: float = 5.0, exit_after: int | None = None) -> None:
    """Serve tasks until SHUTDOWN, running them on ``qc`` (a QCThread or a supervised QCChild).

    A HEARTBEAT goes out whenever nothing else has for ``heartbeat_interval`` seconds, so the
    master can tell a busy worker from a hung or stopped one. ``exit_after`` (fault injection for
    tests only) makes the worker exit abruptly after sending that many results.
    """
    unsent: list[ResultMessage] = []
    first_unsent = 0.0
    # 100 us shortest look: shorter ones only steal the GIL (a sleep costs ~70 us on a VM anyway)
    backoff = Backoff(minimum=1e-4, maximum=max_idle_wait)
    qc.wait_started()
    endpoint.send(encode(ReadyMessage(endpoint.rank)))
    last_sent = time.monotonic()
    sent_results = 0
    try:
        while True:
            if time.monotonic() - last_sent > heartbeat_interval:
                endpoint.send(encode(HeartbeatMessage(endpoint.rank)))
                last_sent = time.monotonic()
            active = False
            data = endpoint.poll()
            while data is not None:
                active = True
                message = decode(data)
                if isinstance(message, ShutdownMessage):  # answered with our last message: see GoodbyeMessage
                    endpoint.send(encode(GoodbyeMessage(endpoint.rank)))
                    return
                if isinstance(message, TaskMessage):
                    qc.add(message.tasks)
                elif isinstance(message, StealMessage):
                    endpoint.send(encode(StolenMessage(endpoint.rank, qc.take_back(message.count))))
                else:
                    raise RuntimeError(f"worker {endpoint.rank} received an unexpected {type(message).__name__}")
                data = endpoint.poll()
            while qc.results:
                active = True
                result = qc.results.popleft()
                if not result.ok:
                    logger.info("task %s failed on rank %d: %s", result.error.label, endpoint.rank,
                                result.error.message)
                if not unsent:
                    first_unsent = time.perf_counter()
                unsent.append(result)
            if unsent and _should_flush(unsent, first_unsent, not qc.queue):
                endpoint.send(encode(ResultBatch(tuple(unsent))))
                last_sent = time.monotonic()
                sent_results += len(unsent)
                unsent = []
                if exit_after is not None and sent_results >= exit_after:
                    logger.warning("worker %d exits now (fault injection)", endpoint.rank)
                    os._exit(0)
            if active:
                backoff.reset()
            # Sleep until a result is ready (the QC thread wakes us) or it is time to look for
            # messages. With tasks queued nothing from the master is urgent (a STEAL may wait a few
            # ms), and every wake-up takes the GIL from the QC thread: look rarely. With the queue
            # empty, look often (the next TASK should be here before the running task ends), backing off.
            timeout = busy_idle_wait if qc.queue else backoff.next_delay()
            if unsent:  # held results go out at most FLUSH_AFTER_SECONDS late
                timeout = min(timeout, max(0.0, first_unsent + FLUSH_AFTER_SECONDS - time.perf_counter()))
            if qc.activity.wait(timeout):
                qc.activity.clear()
    finally:
        qc.stop()


def _should_flush(unsent: list[ResultMessage], first_unsent: float, queue_empty: bool) -> bool:
    """Send now unless these are tiny tasks whose results are worth sending together.

    An empty queue always flushes: the master refills the queue only when it hears of results, so
    holding them then would let the worker run dry.
    """
    return (queue_empty or unsent[-1].wall_time >= TINY_TASK_SECONDS or len(unsent) >= FLUSH_AFTER_RESULTS
            or time.perf_counter() - first_unsent >= FLUSH_AFTER_SECONDS)
