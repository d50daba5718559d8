"""The scheduler: levels, largest-first dispatch, results, failure -- no MPI, no processes.

:class:`LevelScheduler` is pure state (testable without any transport): which tasks are
pending, which worker runs what, which level is open. :func:`run_master` is the loop that drives it
over a transport, in the spirit of ``mpi4py.futures``' manager: hand out work while there is an
idle worker, take in results while any arrive, otherwise back off (1 us growing to 1 ms) so that an
idle master costs almost no CPU and a busy one answers in microseconds.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from .backoff import Backoff
from .errors import RunStopped, TaskFailedError
from .plan import Plan, Task
from .protocol import ReadyMessage, ResultMessage, ShutdownMessage, TaskMessage, TaskSpec, decode, encode
from .transports import MasterTransport

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """One task's result as the master saw it: who ran it, when it was sent and answered (perf_counter)."""

    task: Task
    message: ResultMessage
    worker: int
    sent: float
    received: float


class LevelScheduler:
    """One n-body level at a time; within a level, largest expected cost first.

    A level opens only when every task of the previous level has completed (the design's level
    barrier). State is a handful of plain containers, as in mpi4py.futures: a deque of idle
    workers, a deque of pending tasks for the open level, and ``running`` (worker -> task).
    """

    def __init__(self, tasks_by_level: dict[int, list[Task]], workers: Iterable[int] = ()):
        self._levels = collections.deque((level, tasks) for level, tasks in sorted(tasks_by_level.items()))
        self.idle: collections.deque[int] = collections.deque(workers)
        self.pending: collections.deque[Task] = collections.deque()
        self.running: dict[int, Task] = {}
        self.level: int | None = None
        self.stopped = False
        self._open_next_level()

    def _open_next_level(self) -> None:
        while not self.pending and not self.running and self._levels:
            self.level, tasks = self._levels.popleft()
            self.pending.extend(tasks)

    def add_worker(self, worker: int) -> None:
        """A worker has started and is idle."""
        self.idle.append(worker)

    @property
    def finished(self) -> bool:
        return not self.running and (self.stopped or (not self.pending and not self._levels))

    def assignments(self) -> list[tuple[int, Task]]:
        """Pair idle workers with pending tasks of the open level (none once stopped)."""
        out = []
        while self.idle and self.pending and not self.stopped:
            worker = self.idle.popleft()
            task = self.pending.popleft()
            self.running[worker] = task
            out.append((worker, task))
        return out

    def complete(self, worker: int) -> Task:
        """The worker returned its task's result; it is idle again. Opens the next level when due."""
        task = self.running.pop(worker)
        self.idle.append(worker)
        self._open_next_level()
        return task

    def stop(self) -> None:
        """Dispatch nothing more; what is running still completes."""
        self.stopped = True
        self.pending.clear()


def run_master(
    transport: MasterTransport,
    plan: Plan,
    on_result: Callable[[Completion], None] | None = None,
    *,
    tasks: Sequence[Task] | None = None,
    stop_requested: Callable[[], str | None] | None = None,
    stop_grace: float = 30.0,
    ready_at: dict[int, float] | None = None,
    on_dispatch: Callable[[int, Task], None] | None = None,
) -> dict[int, ResultMessage]:
    """Run ``tasks`` (default: all of ``plan``) on the transport's workers; return results by task index.

    A failed task stops dispatching; tasks already running complete (their results are kept), then
    workers are shut down and :class:`TaskFailedError` names the failure. When ``stop_requested``
    returns a reason (a signal arrived), dispatching stops too; running tasks get ``stop_grace``
    seconds to finish, then :class:`RunStopped` says how many were abandoned. ``ready_at`` (if given)
    receives when each worker reported READY (perf_counter).
    """
    results: dict[int, ResultMessage] = {}
    failures: list[tuple[Task, ResultMessage]] = []
    backoff = Backoff()
    stop_reason: str | None = None
    deadline = float("inf")
    scheduler: LevelScheduler | None = None
    sent_at: dict[int, float] = {}
    ready_at = {} if ready_at is None else ready_at
    try:  # whatever happens, the finally clause releases the workers: they must never wait forever
        scheduler = LevelScheduler(plan.by_level(tasks))  # workers join as their READY arrives
        while not scheduler.finished and time.monotonic() < deadline:
            if stop_reason is None and stop_requested is not None and (stop_reason := stop_requested()):
                logger.warning("%s: dispatching no more tasks; waiting up to %.0f s for %d running task(s)",
                               stop_reason, stop_grace, len(scheduler.running))
                scheduler.stop()
                deadline = time.monotonic() + stop_grace
            for worker, task in scheduler.assignments():
                spec = TaskSpec(task.index, task.mc_index, task.real, task.basis)
                transport.send(worker, encode(TaskMessage((spec,))))
                sent_at[worker] = time.perf_counter()
                if on_dispatch is not None:
                    on_dispatch(worker, task)
            events = transport.wait(backoff.next_delay())
            if events:
                backoff.reset()
            for worker, data in events:
                if data is None:
                    _worker_lost(scheduler, plan, worker)
                    continue
                message = decode(data)
                if isinstance(message, ReadyMessage):
                    scheduler.add_worker(worker)
                    ready_at[worker] = time.perf_counter()
                    continue
                if not isinstance(message, ResultMessage):
                    raise RuntimeError(f"master received an unexpected {type(message).__name__} from worker {worker}")
                task = scheduler.complete(worker)
                if message.ok:
                    results[task.index] = message
                else:
                    failures.append((task, message))
                    scheduler.stop()
                if on_result is not None:
                    on_result(Completion(task, message, worker, sent_at[worker], time.perf_counter()))
    finally:
        abandoned = len(scheduler.running) if scheduler is not None else 0
        for worker in transport.worker_ids:
            transport.send(worker, encode(ShutdownMessage()))
        transport.close(abandon=abandoned > 0)
    if failures:
        raise TaskFailedError(_failure_text(plan, failures), failures)
    if stop_reason is not None:
        raise RunStopped(stop_reason, abandoned=abandoned)
    return results


def _worker_lost(scheduler: LevelScheduler, plan: Plan, worker: int) -> None:
    task = scheduler.running.get(worker)
    where = f" while running task {plan.label(task)}" if task else ""
    raise TaskFailedError(f"worker {worker} died{where}; rerun, or see the worker's log for the cause")


def _failure_text(plan: Plan, failures: Sequence[tuple[Task, ResultMessage]]) -> str:
    lines = []
    specs = plan.computer.input_data.specification.specification
    for task, message in failures:
        error = message.error
        spec = specs[plan.model_chemistries[task.mc_index]]
        model = f"{spec.program} {spec.model.method}" + (f"/{spec.model.basis}" if spec.model.basis else "")
        lines.append(
            f"QC task {plan.label(task)} ({model}) failed on worker {error.rank}: [{error.kind}] {error.message}"
        )
    return "\n".join(lines)
