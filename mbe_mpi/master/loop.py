"""The master loop: drive the pure Scheduler over a transport, one handler per message kind.

In the spirit of ``mpi4py.futures``' manager: hand out work while a worker has a free queue slot,
take in results while any arrive, otherwise back off (growing to a few ms) so that an idle master
costs almost no CPU and a busy one answers in microseconds. What to send is the Scheduler's
decision; who is alive is :class:`~mbe_mpi.master.liveness.Liveness`'s; what happened is told to a
:class:`~mbe_mpi.master.observer.RunObserver`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from ..backoff import ArrivalRate, Backoff
from ..costs import CostModel
from ..errors import RunStopped, TaskFailedError
from ..plan import Plan, Task
from ..plan_stream import FIRST_LEVEL, PlanStream
from ..protocol import (
    HeartbeatMessage,
    JobMessage,
    ReadyMessage,
    ResultBatch,
    ResultMessage,
    StealMessage,
    StolenMessage,
    TaskMessage,
    TaskSpec,
    decode,
    encode,
)
from ..scheduling import Assign, Deferred, SchedulePolicy, Scheduler, Steal
from ..transports import MasterTransport
from .liveness import Liveness, LivenessSettings
from .observer import Completion, RunObserver
from .shutdown import Clock

logger = logging.getLogger(__name__)


class Master:
    """Runs ``tasks`` (default: all of ``plan``) on the transport's workers; :meth:`run` returns results by index.

    A failed task is retried (``policy.max_retries``, with back-off, on another worker where
    possible); a task that fails for good is reported at the end with every other task completed
    (or, with ``policy.stop_on_failure``, dispatching stops at once), and :class:`TaskFailedError`
    names the failures. When ``stop_requested`` returns a reason (a signal arrived), dispatching
    stops too; running tasks get ``stop_grace`` seconds to finish, then :class:`RunStopped` says how
    many were abandoned. A lost worker's tasks go back to the others, and anything it sends later
    is ignored. ``job`` goes to every worker before its first task, and what workers send about
    another job is dropped; ``ready`` are workers that reported READY before this run and ``lost``
    those declared lost before it (a pool kept between runs). ``levels`` (instead of ``tasks``) is
    the schedule by level, some levels decided as they open (a screened expansion:
    :class:`~mbe_mpi.scheduling.Deferred`). ``stream`` (instead of either) is a plan still being
    built: its first level's tasks are handed out as they are planned (:mod:`mbe_mpi.plan_stream`).
    """

    def __init__(self, transport: MasterTransport, plan: Plan, *, tasks: Sequence[Task] | None = None,
                 levels: Mapping[int, Sequence[Task] | Deferred] | None = None, stream: PlanStream | None = None,
                 policy: SchedulePolicy | None = None, cost_model: CostModel | None = None,
                 observer: RunObserver | None = None, job: JobMessage | None = None, ready: Sequence[int] = (),
                 lost: Sequence[int] = (), liveness: LivenessSettings | None = None,
                 stop_requested: Callable[[], str | None] | None = None, stop_grace: float = 30.0,
                 clock: Clock = time):
        self.transport = transport
        self.plan = plan
        self.policy = policy or SchedulePolicy()
        self.observer = observer or RunObserver()
        self.clock = clock
        self.stop_requested = stop_requested
        self.stop_grace = stop_grace
        if stream is not None:
            levels = {}
        self.scheduler = Scheduler(plan.by_level(tasks) if levels is None else levels, policy=self.policy,
                                   cost_model=cost_model)
        self.stream = stream
        if stream is not None:
            self.scheduler.stream(FIRST_LEVEL)
        self.liveness = Liveness(transport.worker_ids, clock.monotonic(), liveness or LivenessSettings(), lost=lost,
                                 joined=ready)
        self.results: dict[int, ResultMessage] = {}
        self.failures: list[tuple[Task, ResultMessage]] = []
        self.started: set[int] = set()  # workers that reported READY
        self.stop_reason: str | None = None
        self._job = encode(job) if job is not None else None
        self.job_id = job.job_id if job is not None else 0
        self._deadline = float("inf")
        self._sent_at: dict[int, float] = {}
        self._backoff = Backoff(minimum=transport.min_idle_wait, maximum=transport.max_idle_wait)
        self._arrivals = ArrivalRate(now=clock.monotonic())
        self._changed = True  # decisions are taken only when something changed (the loop's own cost)
        self._events: list[tuple[int, bytes | None]] = []
        self._handlers = {ReadyMessage: self._on_ready, HeartbeatMessage: self._on_heartbeat,
                          StolenMessage: self._on_stolen, ResultBatch: self._on_results}
        for worker in ready:
            if worker not in self.liveness.lost:
                self._join(worker)

    # ---- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[int, ResultMessage]:
        while not self.scheduler.finished and self.clock.monotonic() < self._deadline:
            self._check_stop()
            self._take_planned()
            self._dispatch()
            self._check_liveness()
            if self.liveness.everyone_lost:
                raise TaskFailedError(f"every worker is gone ({len(self.liveness.lost)}); "
                                      f"{len(self.results)} results were kept; rerun to resume")
            self._receive()
        if self.failures:
            raise TaskFailedError(failure_text(self.plan, self.failures), self.failures)
        if self.stop_reason is not None:
            raise RunStopped(self.stop_reason, abandoned=self.abandoned)
        return self.results

    @property
    def abandoned(self) -> int:
        """Tasks handed out and not answered (after a stop: still running on workers)."""
        return self.scheduler.running_count

    @property
    def remaining_workers(self) -> list[int]:
        return [worker for worker in self.transport.worker_ids if worker not in self.liveness.lost]

    def _check_stop(self) -> None:
        if self.stop_reason is None and self.stop_requested is not None and (reason := self.stop_requested()):
            self.stop_reason = reason
            logger.warning("%s: dispatching no more tasks; waiting up to %.0f s for %d running task(s)",
                           reason, self.stop_grace, self.scheduler.running_count)
            self.scheduler.stop()
            self._deadline = self.clock.monotonic() + self.stop_grace

    def _take_planned(self) -> None:
        """Tasks of a streamed plan planned since the last look; all the other levels once it is complete."""
        if self.stream is None:
            return
        first, later = self.stream.take()
        if first:
            self.scheduler.grow(first)
            self.observer.planned({FIRST_LEVEL: first}, complete=False)
            self._changed = True
        if later is not None:
            self.scheduler.planned(later)
            self.observer.planned(later, complete=True)
            self.stream = None
            self._changed = True

    def _dispatch(self) -> None:
        if not (self._changed or self.scheduler.retries):
            return
        self._changed = False
        for action in self.scheduler.actions(self.clock.monotonic()):
            if isinstance(action, Steal):
                self.transport.send(action.victim, encode(StealMessage(action.count)))
            else:
                self._assign(action)

    def _assign(self, action: Assign) -> None:
        attempt = self.scheduler.attempt
        specs = tuple(TaskSpec(t.index, t.mc_index, t.real, t.basis, attempt(t)) for t in action.tasks)
        self.transport.send(action.worker, encode(TaskMessage(specs)))
        now = self.clock.perf_counter()
        for task in action.tasks:
            self._sent_at[task.index] = now
            self.observer.dispatched(action.worker, task)

    def _check_liveness(self) -> None:
        now = self.clock.monotonic()
        self.liveness.notices(self.transport.exit_notices(), now)
        for worker, why in self.liveness.silent(now):
            self._lose(worker, why)

    def _lose(self, worker: int, why: str) -> None:
        self._changed = True  # its tasks are pending again
        self.liveness.declare_lost(worker)
        back = self.scheduler.worker_lost(worker)
        logger.warning("worker %d is lost (%s); %d of its tasks go to other workers", worker, why, len(back))
        for task in back:
            self.observer.requeued(task)
        self.observer.worker_lost(worker, why)

    def _receive(self) -> None:
        # one wake-up per result is most of the master's cost when tasks take tens of ms: while
        # every worker has queued work, let results gather and take them in one go
        if self._events and self._arrivals.worth_holding(hold := self.scheduler.hold_time(self.policy.max_hold)):
            self.clock.sleep(hold)
        self._events = self.transport.wait(self._backoff.next_delay())
        self._arrivals.add(len(self._events), self.clock.monotonic())
        if self._events:
            self._backoff.reset()
            self._changed = True
        for worker, data in self._events:
            if worker in self.liveness.lost:
                continue  # a late message from a worker declared lost is ignored
            if data is None:  # the transport saw it go (a pipe closed, MPI reported it)
                self._lose(worker, "its process ended")
                continue
            self.liveness.heard_from(worker, self.clock.monotonic())
            message = decode(data)
            handler = self._handlers.get(type(message))
            if handler is None:
                raise RuntimeError(f"master received an unexpected {type(message).__name__} from worker {worker}")
            handler(worker, message)

    # ---- one handler per message kind ---------------------------------------------------------

    def _join(self, worker: int) -> None:
        if self._job is not None:
            self.transport.send(worker, self._job)
        self.scheduler.worker_ready(worker)
        self.started.add(worker)

    def _on_ready(self, worker: int, message: ReadyMessage) -> None:
        self._join(worker)
        self.observer.worker_ready(worker, self.clock.perf_counter())

    def _on_heartbeat(self, worker: int, message: HeartbeatMessage) -> None:
        pass  # hearing from it was the point (Liveness has noted it)

    def _stale(self, worker: int, message: ResultBatch | StolenMessage) -> bool:
        if message.job_id == self.job_id:
            return False
        logger.debug("%s of job %d from worker %d dropped (this is job %d)", type(message).__name__,
                     message.job_id, worker, self.job_id)
        return True

    def _on_stolen(self, worker: int, message: StolenMessage) -> None:
        if self._stale(worker, message):
            return
        for task in self.scheduler.stolen(worker, message.task_ids):
            self.observer.requeued(task)

    def _on_results(self, worker: int, message: ResultBatch) -> None:
        if self._stale(worker, message):
            return
        received = self.clock.perf_counter()
        for result in message.results:
            if result.ok:
                task = self.scheduler.task_done(worker, result.task_id, result.wall_time)
                self.results[task.index] = result
                final = True
            else:
                task, final = self._failed(worker, result)
            self.observer.completed(Completion(task, result, worker, self._sent_at.pop(task.index), received, final))

    def _failed(self, worker: int, result: ResultMessage) -> tuple[Task, bool]:
        # QCEngine's input_error means the program refused this input: the same input fails the same way on
        # any worker, so a retry would only repeat the error (QCEngine itself retries random_error alone).
        retry = result.error.kind != "input_error"
        task, final = self.scheduler.task_failed(worker, result.task_id, self.clock.monotonic(), retry)
        if final:
            self.failures.append((task, result))
            if self.policy.stop_on_failure:
                self.scheduler.stop()
        else:
            logger.warning("task %s failed on worker %d (attempt %d: %s); retrying",
                           self.plan.label(task), worker, result.error.attempt, result.error.message)
        return task, final


def failure_text(plan: Plan, failures: Sequence[tuple[Task, ResultMessage]]) -> str:
    """What the user reads when tasks failed for good: label, model chemistry, worker, attempts, error."""
    lines = []
    specs = plan.computer.input_data.specification.specification
    for task, message in failures:
        error = message.error
        spec = specs[plan.model_chemistries[task.mc_index]]
        model = f"{spec.program} {spec.model.method}" + (f"/{spec.model.basis}" if spec.model.basis else "")
        attempts = f" after {error.attempt} attempts" if error.attempt > 1 else ""
        lines.append(f"QC task {plan.label(task)} ({model}) failed on worker {error.rank}{attempts}: "
                     f"[{error.kind}] {error.message}")
    if len(failures) > 1:
        lines.insert(0, f"{len(failures)} QC tasks failed:")
    return "\n".join(lines)
