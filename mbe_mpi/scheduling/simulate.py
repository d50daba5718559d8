"""The scheduling policy on a virtual clock: predict a run's wall time without running any QC.

The *same* :class:`~mbe_mpi.scheduling.Scheduler` that drives real runs is driven here by discrete
events: messages take ``latency`` seconds each way, the master spends ``master_seconds`` on every
message it handles (so a master that cannot keep up shows as such), workers hold a queue, run
one task at a time and send results of tiny tasks together, and STEAL requests are answered from
the back of the queue. Task durations
come from a function (the ``synthetic`` program's stated cost, or a calibrated model).

Used by ``python -m mbe_mpi plan INPUT --ranks P`` and by the benchmarks; its predictions are
checked against real synthetic runs in the test-suite.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
from collections.abc import Callable

from ..costs import CostModel
from ..plan import Task
from .batching import should_flush
from .policy import SchedulePolicy
from .scheduler import Assign, Deferred, Scheduler, Steal


@dataclasses.dataclass
class SimulationResult:
    """Predicted figures of a run (seconds)."""

    n_workers: int
    makespan: float
    task_time: float
    level_walls: dict[int, float]
    bound_barrier: float  # sum over levels of max(level work / workers, longest task of the level)
    bound_global: float  # max(all work / workers, longest task)
    master_busy: float
    messages: int
    steals: int

    @property
    def efficiency(self) -> float:
        """Useful work / (workers x wall)."""
        return self.task_time / (self.n_workers * self.makespan) if self.makespan > 0 else 1.0


def lower_bounds(tasks_by_level: dict[int, list[Task]], duration: Callable[[Task], float],
                 n_workers: int) -> tuple[float, float]:
    """(barrier bound, global bound) on the makespan of any schedule of these tasks."""
    per_level = 0.0
    total = 0.0
    longest = 0.0
    for tasks in tasks_by_level.values():
        times = [duration(t) for t in tasks]
        work = sum(times)
        per_level += max(work / n_workers, max(times, default=0.0))
        total += work
        longest = max(longest, max(times, default=0.0))
    return per_level, max(total / n_workers, longest)


@dataclasses.dataclass(frozen=True)
class _Costs:
    """What the simulated run charges: message latency and the master's time per message and per result."""

    latency: float
    master_seconds: float
    result_seconds: float


class _Simulation:
    """The workers (queues, one task running each) and the master (one message at a time) as events."""

    def __init__(self, scheduler: Scheduler, n_workers: int, duration: Callable[[Task], float], costs: _Costs):
        self.scheduler = scheduler
        self.duration = duration
        self.costs = costs
        self.events: list[tuple[float, int, str, int, object]] = []
        self._sequence = itertools.count()
        self.queues = {w: collections.deque() for w in range(1, n_workers + 1)}
        self.held: dict[int, list[tuple[Task, float]]] = {w: [] for w in self.queues}  # (task, its seconds)
        self.running: dict[int, Task | None] = dict.fromkeys(self.queues)
        self.master_free = self.master_busy = 0.0
        self.messages = self.steals = 0
        self.level_first: dict[int, float] = {}
        self.level_last: dict[int, float] = {}
        self.task_time = self.makespan = 0.0

    def post(self, time: float, kind: str, worker: int, payload: object = None) -> None:
        heapq.heappush(self.events, (time, next(self._sequence), kind, worker, payload))

    def run(self, startup: float) -> None:
        for worker in self.queues:
            self.post(startup + self.costs.latency, "ready", worker)
        while self.events and not (self.scheduler.finished and self.scheduler.batches):
            now, _, kind, worker, payload = heapq.heappop(self.events)
            if kind == "finish":
                self._finish(now, worker, payload)
            elif kind == "deliver":
                self._deliver(now, worker, payload)
            else:
                self._master(now, kind, worker, payload)
                if self.scheduler.finished:
                    break

    def _start_next(self, worker: int, now: float) -> None:
        if self.running[worker] is None and self.queues[worker]:
            task = self.queues[worker].popleft()
            self.running[worker] = task
            seconds = self.duration(task)  # asked once: the finish event and the result carry it
            heapq.heappush(self.events, (now + seconds, next(self._sequence), "finish", worker, (task, seconds)))

    def _deliver(self, now: float, worker: int, payload: Assign | Steal) -> None:
        """A master message reaches a worker."""
        queue = self.queues[worker]
        if isinstance(payload, Assign):
            queue.extend(payload.tasks)
        else:  # Steal: give back queued tasks from the back
            taken = [queue.pop() for _ in range(min(payload.count, len(queue)))]
            self.post(now + self.costs.latency, "stolen", worker, tuple(t.index for t in taken))
        self._start_next(worker, now)

    def _finish(self, now: float, worker: int, done: tuple[Task, float]) -> None:
        """A worker finished a task: the result travels (or waits for company), the next task starts."""
        self.running[worker] = None
        held = self.held[worker]
        held.append(done)
        # as the real worker does: results of tiny tasks wait for company while more work is queued
        if should_flush(len(held), done[1], 0.0, not self.queues[worker]):
            self.post(now + self.costs.latency, "results", worker, tuple(held))
            self.held[worker] = []
        self._start_next(worker, now)

    def _charge(self, seconds: float) -> None:
        self.master_free += seconds
        self.master_busy += seconds

    def _master(self, now: float, kind: str, worker: int, payload: object) -> None:
        """A message the master handles (one at a time), then what it decides to send."""
        begin = max(now, self.master_free)
        self.master_free = begin
        self._charge(self.costs.master_seconds)
        self.messages += 1
        if kind == "ready":
            self.scheduler.worker_ready(worker)
        elif kind == "stolen":
            self.scheduler.stolen(worker, payload)
        elif kind == "results":
            self._results(begin, worker, payload)
        for action in self.scheduler.actions():
            self._charge(self.costs.master_seconds)
            self.messages += 1
            self.steals += isinstance(action, Steal)
            target = action.victim if isinstance(action, Steal) else action.worker
            self.post(self.master_free + self.costs.latency, "deliver", target, action)

    def _results(self, begin: float, worker: int, results: tuple[tuple[Task, float], ...]) -> None:
        self._charge(self.costs.result_seconds * len(results))
        done, task_time = self.scheduler.task_done, self.task_time
        longest: dict[int, float] = {}  # level -> the longest of this message's tasks
        for task, seconds in results:  # once per simulated task: the duration comes with the result
            done(worker, task.index, seconds)
            task_time += seconds
            level = len(task.real)  # Task.level
            if seconds > longest.get(level, -1.0):
                longest[level] = seconds
        self.task_time = task_time
        first, last = self.level_first, self.level_last
        for level, seconds in longest.items():
            first[level] = min(first.get(level, begin), begin - seconds)
            last[level] = max(last.get(level, 0.0), begin)
        self.makespan = max(self.makespan, begin)


def simulate(tasks_by_level: dict[int, list[Task] | Deferred], n_workers: int, duration: Callable[[Task], float],
             policy: SchedulePolicy | None = None, *, latency: float = 50e-6, master_seconds: float = 20e-6,
             result_seconds: float = 5e-6, startup: float = 0.0,
             cost_model: CostModel | None = None) -> SimulationResult:
    """Run the scheduler on a virtual clock; ``duration(task)`` is how long a task runs on a worker.

    The master spends ``master_seconds`` per message it sends or receives plus ``result_seconds``
    per result it files. A :class:`Deferred` level is decided when the scheduler opens it, as in a
    real run; the bounds cover the tasks that were released.
    """
    scheduler = Scheduler(tasks_by_level, policy=policy, cost_model=cost_model)
    sim = _Simulation(scheduler, n_workers, duration, _Costs(latency, master_seconds, result_seconds))
    sim.run(startup)
    bound_barrier, bound_global = lower_bounds(dict(scheduler.released), duration, n_workers)
    return SimulationResult(
        n_workers=n_workers,
        makespan=sim.makespan - startup,
        task_time=sim.task_time,
        level_walls={level: sim.level_last[level] - sim.level_first[level] for level in sorted(sim.level_last)},
        bound_barrier=bound_barrier,
        bound_global=bound_global,
        master_busy=sim.master_busy,
        messages=sim.messages,
        steals=sim.steals,
    )
