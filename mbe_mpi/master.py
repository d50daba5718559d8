"""The scheduler: levels, largest-first dispatch, prefetch, work stealing, batching -- no MPI.

:class:`Scheduler` is pure state (testable without any transport, and driven by a virtual clock
in :mod:`mbe_mpi.simulate`): which tasks are pending, which worker holds what, which level is
open. :func:`run_master` is the loop that drives it over a transport, in the spirit of
``mpi4py.futures``' manager: hand out work while a worker has a free queue slot, take in results
while any arrive, otherwise back off (growing to a few ms) so that an idle master costs almost no
CPU and a busy one answers in microseconds.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .backoff import ArrivalRate, Backoff
from .costs import CostModel
from .errors import RunStopped, TaskFailedError
from .plan import Plan, Task
from .protocol import (
    GoodbyeMessage,
    HeartbeatMessage,
    ReadyMessage,
    ResultBatch,
    ResultMessage,
    ShutdownMessage,
    StealMessage,
    StolenMessage,
    TaskMessage,
    TaskSpec,
    decode,
    encode,
)
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
    final: bool = True  # False: a failed attempt that will be retried


class PendingTasks:
    """Tasks not handed out yet, served level by level, the largest expected cost first.

    Grouped by *shape* (level, model chemistry, real and basis fragment counts): within a shape
    the measured cost is the same, so each group is sorted once by the prior estimate, and the next
    task is the head of the group expected to take longest. When measurements change which shape is
    expensive, the order follows at once without re-sorting anything -- a re-sort of a million
    pending tasks after every few results would make the master the bottleneck. ``fifo`` keeps the
    plan order instead (the naive baseline).
    """

    def __init__(self, cost_model: CostModel, fifo: bool = False):
        self.cost_model = cost_model
        self.fifo = fifo
        self._groups: dict[int, dict[tuple, collections.deque[Task]]] = {}  # level -> shape -> tasks
        self._count = 0

    def _shape(self, task: Task) -> tuple:
        return (0,) if self.fifo else (task.mc_index, len(task.real), len(task.basis))

    def extend(self, tasks: Iterable[Task]) -> None:
        incoming: dict[tuple[int, tuple], list[Task]] = {}
        for task in tasks:
            incoming.setdefault((task.level, self._shape(task)), []).append(task)
        for (level, shape), group in incoming.items():
            queue = self._groups.setdefault(level, {}).setdefault(shape, collections.deque())
            queue.extend(group)
            ordered = sorted(queue, key=(lambda t: t.index) if self.fifo else (lambda t: (-t.cost, t.index)))
            queue.clear()
            queue.extend(ordered)
            self._count += len(group)

    def put_back(self, tasks: Iterable[Task]) -> None:
        """Tasks returned by a worker go to the front of their groups (they were at the front before)."""
        for task in sorted(tasks, key=lambda t: (t.cost, -t.index)):
            self._groups.setdefault(task.level, {}).setdefault(self._shape(task), collections.deque()).appendleft(task)
            self._count += 1

    def _best(self) -> collections.deque[Task]:
        level = min(level for level, shapes in self._groups.items() if any(shapes.values()))
        candidates = [queue for queue in self._groups[level].values() if queue]
        if len(candidates) == 1 or self.fifo:
            return candidates[0]
        return min(candidates, key=lambda queue: self.cost_model.sort_key(queue[0]))

    def peek(self) -> Task:
        return self._best()[0]

    def popleft(self) -> Task:
        self._count -= 1
        return self._best().popleft()

    def clear(self) -> None:
        self._groups.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        for level in sorted(self._groups):
            for queue in self._groups[level].values():
                yield from queue


@dataclasses.dataclass(frozen=True, slots=True)
class Assign:
    """Send these tasks (one TASK message; several when they are cheap) to a worker's queue."""

    worker: int
    tasks: tuple[Task, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Steal:
    """Ask a worker to give back up to ``count`` queued, not yet started tasks."""

    victim: int
    count: int


class Scheduler:
    """Levels, largest-first order, per-worker prefetch queues, work stealing and batching. Pure.

    State is plain containers, as in mpi4py.futures: ``pending`` (tasks not handed out, in dispatch
    order), ``batches`` (worker -> the TASK messages it holds, oldest first; the first task of the
    first may be running), and two deques of free queue slots, ``hungry`` (workers holding nothing,
    served first) and ``spare`` (further prefetch slots).

    A task is always in exactly one place -- pending, one worker's batches, or done -- and moves
    from a worker back to pending only when that worker has confirmed (STOLEN) that it removed the
    task from its queue: so no task runs twice and none is lost, whatever the message timing.

    Level barrier (the default): level n+1 opens only when every task of level n has completed.
    Without it, level n+1's tasks become pending as soon as level n has nothing left to hand out.
    """

    def __init__(self, tasks_by_level: dict[int, list[Task]], workers: Iterable[int] = (), *, prefetch: int = 2,
                 level_barrier: bool = True, cost_model: CostModel | None = None, batch_seconds: float = 0.0,
                 batch_target: float = 0.02, max_batch: int = 64, order: str = "cost",
                 stealing: bool = True, max_retries: int = 0, retry_backoff: float = 1.0):
        self.cost_model = cost_model or CostModel()
        self.steal_enabled = stealing
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.attempts: dict[int, int] = {}  # task index -> attempt being made (absent: the first)
        self.failed_on: dict[int, set[int]] = {}  # task index -> workers it failed on
        self.retries: list[tuple[float, Task]] = []  # (not before, task) waiting to be retried
        self.prefetch = max(1, prefetch)
        self.level_barrier = level_barrier
        self.batch_seconds = batch_seconds
        self.batch_target = batch_target
        self.max_batch = max_batch
        self._levels = collections.deque(sorted(tasks_by_level.items()))
        # "fifo" (plan order) exists to measure what cost ordering buys
        self.pending = PendingTasks(self.cost_model, fifo=order == "fifo")
        self.batches: dict[int, list[list[Task]]] = {}
        self.hungry: collections.deque[int] = collections.deque()
        self.spare: collections.deque[int] = collections.deque()
        self.stealing: set[int] = set()  # victims asked to give tasks back, answer not yet in
        # victims that had nothing to give (their "queued" task had started; its result is on the
        # way): not asked again until they report a result, or steals would ping-pong meanwhile
        self.nothing_to_steal: set[int] = set()
        self.level: int | None = None
        self.stopped = False
        self.running_count = 0  # tasks handed out and not completed
        self.last_batch_seconds: float | None = None  # expected work of the latest TASK message
        self._open_levels: dict[int, int] = {}  # level -> tasks not yet completed, for levels released
        self._open_next_level()
        for worker in workers:
            self.worker_ready(worker)

    # ---- levels ---------------------------------------------------------------------------

    def _release(self, level: int, tasks: list[Task]) -> None:
        self._open_levels[level] = len(tasks)
        self.pending.extend(tasks)

    def _open_next_level(self) -> None:
        while self._levels and not self.stopped:
            if self.level_barrier:
                if self.pending or self._open_levels:
                    return
            elif self.pending:
                return
            level, tasks = self._levels.popleft()
            if self.level is None or not self._open_levels:
                self.level = level
            self._release(level, tasks)

    @property
    def finished(self) -> bool:
        return self.running_count == 0 and not self.stealing and (
            self.stopped or (not self.pending and not self._levels and not self.retries))

    # ---- events ---------------------------------------------------------------------------

    def worker_ready(self, worker: int) -> None:
        """A worker has started: it can hold ``prefetch`` TASK messages."""
        self.batches.setdefault(worker, [])
        self.hungry.append(worker)
        self.spare.extend([worker] * (self.prefetch - 1))

    def _take(self, worker: int, task_index: int) -> Task:
        self.nothing_to_steal.discard(worker)
        batches = self.batches[worker]
        for i, batch in enumerate(batches):
            for j, task in enumerate(batch):
                if task.index == task_index:
                    del batch[j]
                    if not batch:
                        del batches[i]
                        (self.spare if batches else self.hungry).append(worker)
                    return task
        raise KeyError(f"worker {worker} returned task {task_index}, which it does not hold")

    def task_done(self, worker: int, task_index: int, seconds: float | None = None) -> Task:
        """A task's result arrived; ``seconds`` teaches the cost model."""
        task = self._take(worker, task_index)
        self._completed(task, seconds)
        return task

    def task_failed(self, worker: int, task_index: int, now: float = 0.0) -> tuple[Task, bool]:
        """A task failed on ``worker``. Returns the task and whether that was its last attempt.

        Otherwise it is retried after ``retry_backoff * 2**(attempt - 1)`` seconds, on another
        worker where there is one; its level stays open meanwhile.
        """
        task = self._take(worker, task_index)
        attempt = self.attempts.get(task.index, 1)
        if attempt > self.max_retries or self.stopped:
            self._completed(task, None)
            return task, True
        self.attempts[task.index] = attempt + 1
        self.running_count -= 1
        self.failed_on.setdefault(task.index, set()).add(worker)
        self.retries.append((now + self.retry_backoff * 2 ** (attempt - 1), task))
        return task, False

    def attempt(self, task: Task) -> int:
        """Which attempt at ``task`` is being handed out (1 for the first)."""
        return self.attempts.get(task.index, 1)

    def _completed(self, task: Task, seconds: float | None) -> None:
        self.running_count -= 1
        remaining = self._open_levels[task.level] - 1
        if remaining:
            self._open_levels[task.level] = remaining
        else:
            del self._open_levels[task.level]
            if self._open_levels:
                self.level = min(self._open_levels)
        if seconds is not None:
            self.cost_model.observe(task, seconds)
        self._open_next_level()

    def stolen(self, victim: int, task_indices: Iterable[int]) -> list[Task]:
        """The victim removed these tasks from its queue: they are pending again (front of the line)."""
        self.stealing.discard(victim)
        wanted = set(task_indices)
        if not wanted:
            self.nothing_to_steal.add(victim)
            return []
        back = []
        batches = self.batches[victim]
        for batch in list(batches):
            keep = [t for t in batch if t.index not in wanted]
            back.extend(t for t in batch if t.index in wanted)
            if keep:
                batch[:] = keep
            else:
                batches.remove(batch)
                (self.spare if batches else self.hungry).append(victim)
        self.running_count -= len(back)
        self.pending.put_back(back)
        return back

    def worker_lost(self, worker: int) -> list[Task]:
        """A worker is gone: everything it held goes back to pending; it gets nothing more."""
        back = [task for batch in self.batches.pop(worker, []) for task in batch]
        self.running_count -= len(back)
        self.stealing.discard(worker)
        self.pending.put_back(back)
        return back

    def stop(self) -> None:
        """Hand out nothing more (tasks already with workers still complete)."""
        self.stopped = True
        self.pending.clear()
        self._levels.clear()
        self.retries.clear()

    # ---- decisions ------------------------------------------------------------------------

    def _free_slot(self) -> int | None:
        for queue in (self.hungry, self.spare):
            while queue:
                worker = queue.popleft()
                if worker in self.batches and len(self.batches[worker]) < self.prefetch:
                    return worker
        return None

    def _next_batch(self) -> list[Task]:
        first = self.pending.popleft()
        batch = [first]
        estimate = self.cost_model.seconds(first)
        total = estimate
        if self.batch_seconds > 0 and estimate is not None and estimate < self.batch_seconds:
            while self.pending and len(batch) < self.max_batch and total < self.batch_target:
                following = self.cost_model.seconds(self.pending.peek())
                if following is None or following >= self.batch_seconds:
                    break
                batch.append(self.pending.popleft())
                total += following
        # what the hold (hold_time) relies on: the least this message keeps its worker busy
        self.last_batch_seconds = total if len(batch) > 1 else self.cost_model.shortest(first)
        return batch

    def _assign_retries(self, now: float, out: list[Assign | Steal]) -> None:
        """Due retries go first, each to a worker it has not failed on (if any such worker is free)."""
        if not self.retries or self.stopped:
            return
        due = [item for item in self.retries if item[0] <= now]
        if not due:
            return
        workers = [w for w in self.batches if len(self.batches[w]) < self.prefetch]
        for item in due:
            _, task = item
            avoid = self.failed_on.get(task.index, set())
            fresh = [w for w in workers if w not in avoid]
            candidates = fresh or ([w for w in workers] if len(avoid) >= len(self.batches) else [])
            if not candidates:
                continue
            worker = min(candidates, key=lambda w: len(self.batches[w]))
            self.retries.remove(item)
            self.batches[worker].append([task])
            self.running_count += 1
            out.append(Assign(worker, (task,)))
            if len(self.batches[worker]) >= self.prefetch:
                workers.remove(worker)

    def actions(self, now: float = 0.0) -> list[Assign | Steal]:
        """What to send now: due retries, then fill free queue slots from ``pending``; then steal."""
        out: list[Assign | Steal] = []
        self._assign_retries(now, out)
        while not self.stopped:
            if not self.pending:
                self._open_next_level()  # without the barrier, the next level may start now
                if not self.pending:
                    break
            worker = self._free_slot()
            if worker is None:
                break
            batch = self._next_batch()
            self.batches[worker].append(batch)
            self.running_count += len(batch)
            out.append(Assign(worker, tuple(batch)))
        if self.steal_enabled and not self.pending and not self.stopped and self.hungry:
            out.extend(self._steals())
        return out

    def hold_time(self, cap: float, fraction: float = 0.5) -> float:
        """How long results may wait unread without any worker running out of work.

        While tasks are pending every worker holds ``prefetch`` TASK messages, and the queued ones
        were handed out largest first, so each is expected to take at least as long as the latest
        (``last_batch_seconds``). A worker that reports a result therefore still has that much work
        in hand, and the master can leave the report unread for a fraction of it and take several
        reports in one wake-up. (For a single task, the shortest time measured for its shape is
        used, not the mean.) Zero when that argument does not hold: nothing pending (a level's
        tail, steals), no queued messages (``prefetch`` 1), retries waiting, or costs not known yet.
        """
        if (self.prefetch < 2 or self.stopped or not self.pending or self.retries or self.stealing
                or self.last_batch_seconds is None):
            return 0.0
        return min(cap, fraction * self.last_batch_seconds)

    def _steals(self) -> list[Steal]:
        """For each worker with nothing to do, ask the most loaded other worker for half its queue."""
        idle = [w for w in self.hungry if w in self.batches and not self.batches[w]]
        if not idle:
            return []
        queued = {w: sum(len(b) for b in batches) - 1 for w, batches in self.batches.items()
                  if w not in self.stealing and w not in self.nothing_to_steal and batches}
        steals = []
        for _ in idle:
            victim = max(queued, key=queued.get, default=None)
            if victim is None or queued[victim] < 1:
                break
            count = (queued.pop(victim) + 1) // 2
            self.stealing.add(victim)
            steals.append(Steal(victim, count))
        return steals


@dataclasses.dataclass(frozen=True)
class SchedulePolicy:
    """Tunable scheduling (``execution`` options): prefetch depth, level barrier, batching of cheap tasks.

    ``prefetch``: TASK messages a worker may hold (one running, the rest queued) -- 2 hides the
    master's round trip behind the running task. ``batch_seconds``: tasks expected to take less than
    this (as measured, once the cost model has seen tasks like them) travel together, up to
    ``batch_target`` seconds of work per message. ``max_hold``: while every worker has queued work,
    the master may leave results unread up to this long (and half the expected length of the
    queued work) to take them in bursts -- one wake-up for several results.
    """

    prefetch: int = 2
    level_barrier: bool = True
    batch_seconds: float = 0.02
    batch_target: float = 0.02
    max_batch: int = 64
    order: str = "cost"
    stealing: bool = True
    max_retries: int = 0
    retry_backoff: float = 1.0
    stop_on_failure: bool = False
    max_hold: float = 0.05

    def scheduler(self, tasks_by_level: dict[int, list[Task]], cost_model: CostModel | None = None) -> Scheduler:
        return Scheduler(tasks_by_level, prefetch=self.prefetch, level_barrier=self.level_barrier,
                         cost_model=cost_model, batch_seconds=self.batch_seconds, batch_target=self.batch_target,
                         max_batch=self.max_batch, order=self.order, stealing=self.stealing,
                         max_retries=self.max_retries, retry_backoff=self.retry_backoff)


DEFAULT_POLICY = SchedulePolicy()

#: seconds a worker may take to start (import, QC child) before silence counts against it
STARTUP_ALLOWANCE = 300.0
#: seconds a started worker may take to answer SHUTDOWN (it reads messages every few ms, even mid-task)
GOODBYE_TIMEOUT = 10.0


def policy_from_options(options: Any) -> SchedulePolicy:
    """The scheduling policy an ExecutionOptions asks for (``order: fifo`` is the naive baseline)."""
    failures = {"max_retries": options.max_retries, "retry_backoff": options.retry_backoff,
                "stop_on_failure": options.on_failure == "stop"}
    if options.order == "fifo":
        return dataclasses.replace(FIFO_POLICY, level_barrier=options.level_barrier, **failures)
    return SchedulePolicy(prefetch=options.prefetch, level_barrier=options.level_barrier,
                          batch_seconds=options.batch_seconds, **failures)

#: the naive baseline the benchmarks compare against: plan order, one task at a time, no stealing
FIFO_POLICY = SchedulePolicy(prefetch=1, batch_seconds=0.0, order="fifo", stealing=False)


def run_master(
    transport: MasterTransport,
    plan: Plan,
    on_result: Callable[[Completion], None] | None = None,
    *,
    tasks: Sequence[Task] | None = None,
    policy: SchedulePolicy = SchedulePolicy(),
    cost_model: CostModel | None = None,
    stop_requested: Callable[[], str | None] | None = None,
    stop_grace: float = 30.0,
    ready_at: dict[int, float] | None = None,
    on_dispatch: Callable[[int, Task], None] | None = None,
    heartbeat_timeout: float | None = None,
    on_worker_lost: Callable[[int], None] | None = None,
    exit_notices: Callable[[], int] | None = None,
    exit_notice_grace: float = 11.0,
    on_requeue: Callable[[Task], None] | None = None,
) -> dict[int, ResultMessage]:
    """Run ``tasks`` (default: all of ``plan``) on the transport's workers; return results by task index.

    A failed task is retried (``policy.max_retries``, with back-off, on another worker where
    possible); a task that fails for good is reported at the end with every other task completed
    (or, with ``policy.stop_on_failure``, dispatching stops at once), and :class:`TaskFailedError`
    names the failures. When ``stop_requested``
    returns a reason (a signal arrived), dispatching stops too; running tasks get ``stop_grace``
    seconds to finish, then :class:`RunStopped` says how many were abandoned. ``ready_at`` (if given)
    receives when each worker reported READY (perf_counter). A worker whose process ends, or that
    sends nothing for ``heartbeat_timeout`` seconds (workers send heartbeats), is declared lost: its
    tasks go back to the others (``on_requeue`` hears of each task that a worker held and gave
    back, stolen or lost) and anything it sends later is ignored. ``exit_notices`` counts
    notices that some worker process ended without saying which (MPICH hydra's SIGUSR1): for a
    while after one, a worker silent for ``exit_notice_grace`` seconds is declared lost, which finds
    a rank that exited long before ``heartbeat_timeout``.
    """
    results: dict[int, ResultMessage] = {}
    failures: list[tuple[Task, ResultMessage]] = []
    backoff = Backoff(minimum=transport.min_idle_wait, maximum=transport.max_idle_wait)
    arrivals = ArrivalRate(now=time.monotonic())
    stop_reason: str | None = None
    deadline = float("inf")
    scheduler: Scheduler | None = None
    sent_at: dict[int, float] = {}
    ready_at = {} if ready_at is None else ready_at
    lost: set[int] = set()
    # a worker that never reports is noticed too, after a generous start-up allowance
    last_seen: dict[int, float] = dict.fromkeys(transport.worker_ids, time.monotonic() + STARTUP_ALLOWANCE)

    # The loop's own cost per task is what makes cheap tasks expensive: decisions are taken only
    # when something changed (a message arrived, a retry fell due, a worker was lost), silence is
    # checked for once a second, and waiting blocks (pipes) or backs off (MPI polling) in the transport.
    changed = True
    events: list[tuple[int, bytes | None]] = []
    next_silence_check = 0.0
    notices_seen = 0
    notice_at: float | None = None

    def _lose(worker: int, why: str) -> None:
        nonlocal changed
        changed = True  # its tasks are pending again
        lost.add(worker)
        back = scheduler.worker_lost(worker)
        logger.warning("worker %d is lost (%s); %d of its tasks go to other workers", worker, why, len(back))
        if on_requeue is not None:
            for task in back:
                on_requeue(task)
        if on_worker_lost is not None:
            on_worker_lost(worker)

    try:  # whatever happens, the finally clause releases the workers: they must never wait forever
        scheduler = policy.scheduler(plan.by_level(tasks), cost_model)  # workers join as their READY arrives
        while not scheduler.finished and time.monotonic() < deadline:
            if stop_reason is None and stop_requested is not None and (stop_reason := stop_requested()):
                logger.warning("%s: dispatching no more tasks; waiting up to %.0f s for %d running task(s)",
                               stop_reason, stop_grace, scheduler.running_count)
                scheduler.stop()
                deadline = time.monotonic() + stop_grace
            actions = scheduler.actions(time.monotonic()) if changed or scheduler.retries else ()
            changed = False
            for action in actions:
                if isinstance(action, Steal):
                    transport.send(action.victim, encode(StealMessage(action.count)))
                    continue
                specs = tuple(TaskSpec(t.index, t.mc_index, t.real, t.basis, scheduler.attempt(t)) for t in action.tasks)
                transport.send(action.worker, encode(TaskMessage(specs)))
                now = time.perf_counter()
                for task in action.tasks:
                    sent_at[task.index] = now
                    if on_dispatch is not None:
                        on_dispatch(action.worker, task)
            if exit_notices is not None and (count := exit_notices()) != notices_seen:
                notices_seen = count
                notice_at = time.monotonic()
                logger.warning("mpiexec reports that a rank has ended; workers silent for %.0f s are declared lost",
                               exit_notice_grace)
            if heartbeat_timeout and (now := time.monotonic()) >= next_silence_check:
                next_silence_check = now + min(1.0, heartbeat_timeout / 4, exit_notice_grace / 4)
                for worker, seen in list(last_seen.items()):
                    if worker in lost:
                        continue
                    if now - seen > heartbeat_timeout:
                        _lose(worker, f"no message for {now - seen:.0f} s (hung, stopped or gone)")
                    elif (notice_at is not None and exit_notice_grace < now - notice_at < 3 * exit_notice_grace
                          and now - seen > exit_notice_grace):  # live workers speak every heartbeat_interval
                        _lose(worker, f"silent for {now - seen:.0f} s after mpiexec reported a rank's end")
            if len(lost) == len(transport.worker_ids):
                raise TaskFailedError(
                    f"every worker is gone ({len(lost)}); {len(results)} results were kept; rerun to resume")
            # one wake-up per result is most of the master's cost when tasks take tens of ms: while
            # every worker has queued work, let results gather and take them in one go
            if events and arrivals.worth_holding(hold := scheduler.hold_time(policy.max_hold)):
                time.sleep(hold)
            events = transport.wait(backoff.next_delay())
            arrivals.add(len(events), time.monotonic())
            if events:
                backoff.reset()
                changed = True
            for worker, data in events:
                if data is None or worker in lost:
                    if data is None and worker not in lost:  # the transport saw it go (a pipe closed)
                        _lose(worker, "its process ended")
                    continue  # a late message from a worker declared dead is ignored
                last_seen[worker] = time.monotonic()
                message = decode(data)
                if isinstance(message, HeartbeatMessage):
                    continue
                if isinstance(message, ReadyMessage):
                    scheduler.worker_ready(worker)
                    ready_at[worker] = time.perf_counter()
                elif isinstance(message, StolenMessage):
                    for task in scheduler.stolen(worker, message.task_ids):
                        if on_requeue is not None:
                            on_requeue(task)
                elif isinstance(message, (ResultBatch, ResultMessage)):
                    received = time.perf_counter()
                    batch = message.results if isinstance(message, ResultBatch) else (message,)
                    for result in batch:
                        final = True
                        if result.ok:
                            task = scheduler.task_done(worker, result.task_id, result.wall_time)
                            results[task.index] = result
                        else:
                            task, final = scheduler.task_failed(worker, result.task_id, time.monotonic())
                            if final:
                                failures.append((task, result))
                                if policy.stop_on_failure:
                                    scheduler.stop()
                            else:
                                logger.warning("task %s failed on worker %d (attempt %d: %s); retrying",
                                               plan.label(task), worker, result.error.attempt, result.error.message)
                        if on_result is not None:
                            on_result(Completion(task, result, worker, sent_at.pop(task.index), received, final))
                else:
                    raise RuntimeError(f"master received an unexpected {type(message).__name__} from worker {worker}")
    finally:
        abandoned = scheduler.running_count if scheduler is not None else 0
        remaining = [worker for worker in transport.worker_ids if worker not in lost]
        for worker in remaining:
            transport.send(worker, encode(ShutdownMessage()))
        await_goodbyes(transport, remaining, started=set(ready_at), hurry=abandoned > 0)
        transport.close(abandon=abandoned > 0)
    if failures:
        raise TaskFailedError(_failure_text(plan, failures), failures)
    if stop_reason is not None:
        raise RunStopped(stop_reason, abandoned=abandoned)
    return results


def await_goodbyes(transport: MasterTransport, workers: Iterable[int], *, started: set[int] = frozenset(),
                   hurry: bool = False) -> None:
    """After SHUTDOWN, take in messages until each worker's GOODBYE (its last) has come.

    Whatever a worker sent before it read SHUTDOWN (a heartbeat, a STOLEN answer, the READY of a
    worker still starting) is received here and dropped, so nothing is left in flight when the
    master ends: MPICH's MPI_Finalize fails on a message never received, and hydra then kills every
    rank (exit code 9) after the result was written. A started worker answers within milliseconds;
    one still starting gets ``STARTUP_ALLOWANCE`` (MPI_Finalize would wait for it anyway); when
    stopping with tasks abandoned (``hurry``), one second. A worker whose process ends is not waited for.
    """
    now = time.monotonic()
    deadlines = {worker: now + (1.0 if hurry else GOODBYE_TIMEOUT if worker in started else STARTUP_ALLOWANCE)
                 for worker in workers}
    backoff = Backoff(minimum=transport.min_idle_wait, maximum=transport.max_idle_wait)
    while deadlines:
        for worker, data in transport.wait(backoff.next_delay()):
            message = None if data is None else decode(data)
            if message is None or isinstance(message, GoodbyeMessage):
                deadlines.pop(worker, None)
            else:
                logger.debug("after SHUTDOWN: %s from worker %d dropped", type(message).__name__, worker)
        now = time.monotonic()
        for worker in [worker for worker, deadline in deadlines.items() if now > deadline]:
            del deadlines[worker]
            if not hurry:
                logger.warning("worker %d did not answer SHUTDOWN in time; the job may not end cleanly", worker)


def _failure_text(plan: Plan, failures: Sequence[tuple[Task, ResultMessage]]) -> str:
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
