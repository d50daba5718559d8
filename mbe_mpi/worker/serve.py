"""A worker's loop: take the master's messages, feed the QC executor, send results and heartbeats.

The same code serves both transports. One handler per message kind; the loop itself only polls,
flushes results and sleeps.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..backoff import Backoff
from ..protocol import (
    GoodbyeMessage,
    HeartbeatMessage,
    JobMessage,
    ReadyMessage,
    ResultBatch,
    ResultMessage,
    ShutdownMessage,
    StealMessage,
    StolenMessage,
    TaskMessage,
    decode,
    encode,
)
from ..scheduling.batching import FLUSH_AFTER_SECONDS, should_flush
from ..transports import WorkerEndpoint
from .executors import QCThread

logger = logging.getLogger(__name__)


class _Serving:
    """The state of one worker's conversation with the master."""

    def __init__(self, endpoint: WorkerEndpoint, qc: QCThread, heartbeat_interval: float):
        self.endpoint = endpoint
        self.qc = qc
        self.heartbeat_interval = heartbeat_interval
        self.unsent: list[ResultMessage] = []
        self.first_unsent = 0.0
        self.last_sent = time.monotonic()
        self.done = False
        self.handlers = {JobMessage: self._on_job, TaskMessage: self._on_tasks, StealMessage: self._on_steal,
                         ShutdownMessage: self._on_shutdown, HeartbeatMessage: self._on_heartbeat}

    def send(self, message: Any) -> None:
        self.endpoint.send(encode(message))
        self.last_sent = time.monotonic()

    def _on_job(self, message: JobMessage) -> None:
        if self.unsent:  # results of the previous expansion go out before it changes
            self.send(ResultBatch(tuple(self.unsent), self.job_id))
            self.unsent = []
        self.qc.set_job(message)

    def _on_tasks(self, message: TaskMessage) -> None:
        self.qc.add(message.tasks)

    def _on_heartbeat(self, message: HeartbeatMessage) -> None:
        pass  # the MPI master's sign of life (the endpoint noted it): nothing to do

    def _on_steal(self, message: StealMessage) -> None:
        self.send(StolenMessage(self.endpoint.rank, self.qc.take_back(message.count), self.job_id))

    @property
    def job_id(self) -> int:
        return self.qc.job.job_id if self.qc.job is not None else 0

    def _on_shutdown(self, message: ShutdownMessage) -> None:
        self.send(GoodbyeMessage(self.endpoint.rank))  # our last message: see GoodbyeMessage
        self.done = True

    def read_messages(self) -> bool:
        """Handle every message that has arrived; whether there was any."""
        active = False
        while not self.done and (data := self.endpoint.poll()) is not None:
            active = True
            message = decode(data)
            handler = self.handlers.get(type(message))
            if handler is None:
                raise RuntimeError(f"worker {self.endpoint.rank} received an unexpected {type(message).__name__}")
            handler(message)
        return active

    def collect_results(self) -> bool:
        active = False
        while self.qc.results:
            active = True
            job_id, result = self.qc.results.popleft()
            if job_id != self.job_id:
                continue  # a task of an expansion the master has given up on
            if not result.ok:
                logger.info("task %s failed on rank %d: %s", result.error.label, self.endpoint.rank,
                            result.error.message)
            if not self.unsent:
                self.first_unsent = time.perf_counter()
            self.unsent.append(result)
        if self.unsent and should_flush(len(self.unsent), self.unsent[-1].wall_time,
                                        time.perf_counter() - self.first_unsent, not self.qc.queue):
            self.send(ResultBatch(tuple(self.unsent), self.job_id))
            self.unsent = []
        return active

    def heartbeat(self) -> None:
        if time.monotonic() - self.last_sent > self.heartbeat_interval:
            self.send(HeartbeatMessage(self.endpoint.rank))


def serve(endpoint: WorkerEndpoint, qc: QCThread, *, max_idle_wait: float = 5e-3, busy_idle_wait: float = 0.05,
          heartbeat_interval: float = 5.0) -> None:
    """Serve until SHUTDOWN, running tasks on ``qc`` (a QCThread or a supervised QCChild).

    A HEARTBEAT goes out whenever nothing else has for ``heartbeat_interval`` seconds, so the
    master can tell a busy worker from a hung or stopped one.
    """
    # 100 us shortest look: shorter ones only steal the GIL (a sleep costs ~70 us on a VM anyway)
    backoff = Backoff(minimum=1e-4, maximum=max_idle_wait)
    try:
        qc.wait_started()
        state = _Serving(endpoint, qc, heartbeat_interval)
        state.send(ReadyMessage(endpoint.rank))  # inside: a master gone by now still gets the QC child stopped
        while True:
            state.heartbeat()
            active = state.read_messages()
            if state.done:
                return
            active = state.collect_results() or active
            if active:
                backoff.reset()
            # Sleep until a result is ready (the QC thread wakes us) or it is time to look for
            # messages. With tasks queued nothing from the master is urgent (a STEAL may wait a few
            # ms), and every wake-up takes the GIL from the QC thread: look rarely. With the queue
            # empty, look often (the next TASK should be here before the running task ends), backing off.
            timeout = busy_idle_wait if qc.queue else backoff.next_delay()
            if state.unsent:  # held results go out at most FLUSH_AFTER_SECONDS late
                timeout = min(timeout, max(0.0, state.first_unsent + FLUSH_AFTER_SECONDS - time.perf_counter()))
            if qc.activity.wait(timeout):
                qc.activity.clear()
    finally:
        qc.stop()
