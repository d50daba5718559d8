"""The scheduling policy on a virtual clock: predict a run's wall time without running any QC.

The *same* :class:`~mbe_mpi.master.Scheduler` that drives real runs is driven here by discrete
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

from .costs import CostModel
from .master import DEFAULT_POLICY, Assign, SchedulePolicy, Steal
from .plan import Task
from .worker import FLUSH_AFTER_RESULTS, TINY_TASK_SECONDS


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


def simulate(tasks_by_level: dict[int, list[Task]], n_workers: int, duration: Callable[[Task], float],
             policy: SchedulePolicy = DEFAULT_POLICY, *, latency: float = 50e-6, master_seconds: float = 20e-6,
             result_seconds: float = 5e-6, startup: float = 0.0,
             cost_model: CostModel | None = None) -> SimulationResult:
    """Run the scheduler on a virtual clock; ``duration(task)`` is how long a task runs on a worker.

    The master spends ``master_seconds`` per message it sends or receives plus ``result_seconds``
    per result it files.
    """
    scheduler = policy.scheduler(tasks_by_level, cost_model)
    events: list[tuple[float, int, str, int, object]] = []
    sequence = itertools.count()

    def post(time: float, kind: str, worker: int, payload: object = None) -> None:
        heapq.heappush(events, (time, next(sequence), kind, worker, payload))

    queues = {w: collections.deque() for w in range(1, n_workers + 1)}
    held: dict[int, list[Task]] = {w: [] for w in queues}
    running: dict[int, Task | None] = {w: None for w in queues}
    master_free = 0.0
    master_busy = 0.0
    messages = steals = 0
    level_first: dict[int, float] = {}
    level_last: dict[int, float] = {}
    task_time = 0.0
    makespan = 0.0

    def start_next(worker: int, now: float) -> None:
        if running[worker] is None and queues[worker]:
            task = queues[worker].popleft()
            running[worker] = task
            post(now + duration(task), "finish", worker, task)

    for worker in queues:
        post(startup + latency, "ready", worker)

    while events and not (scheduler.finished and scheduler.batches):
        now, _, kind, worker, payload = heapq.heappop(events)
        if kind == "deliver":  # a master message reaches a worker
            if isinstance(payload, Assign):
                queues[worker].extend(payload.tasks)
            else:  # Steal: give back queued tasks from the back
                taken = [queues[worker].pop() for _ in range(min(payload.count, len(queues[worker])))]
                post(now + latency, "stolen", worker, tuple(t.index for t in taken))
            start_next(worker, now)
            continue
        if kind == "finish":  # a worker finished a task: the result travels, the next task starts
            running[worker] = None
            held[worker].append(payload)
            # as the real worker does: results of tiny tasks wait for company while more work is queued
            if not (duration(payload) < TINY_TASK_SECONDS and queues[worker]
                    and len(held[worker]) < FLUSH_AFTER_RESULTS):
                post(now + latency, "results", worker, tuple(held[worker]))
                held[worker] = []
            start_next(worker, now)
            continue
        # everything else is a message the master handles, one at a time
        begin = max(now, master_free)
        master_free = begin + master_seconds
        master_busy += master_seconds
        messages += 1
        if kind == "ready":
            scheduler.worker_ready(worker)
        elif kind == "stolen":
            scheduler.stolen(worker, payload)
        elif kind == "results":
            master_free += result_seconds * len(payload)
            master_busy += result_seconds * len(payload)
            for task in payload:
                seconds = duration(task)
                scheduler.task_done(worker, task.index, seconds)
                task_time += seconds
                level_first[task.level] = min(level_first.get(task.level, begin), begin - seconds)
                level_last[task.level] = max(level_last.get(task.level, 0.0), begin)
            makespan = max(makespan, begin)
        for action in scheduler.actions():
            master_free += master_seconds
            master_busy += master_seconds
            messages += 1
            if isinstance(action, Steal):
                steals += 1
                post(master_free + latency, "deliver", action.victim, action)
            else:
                post(master_free + latency, "deliver", action.worker, action)
        if scheduler.finished:
            break

    bound_barrier, bound_global = lower_bounds(tasks_by_level, duration, n_workers)
    return SimulationResult(
        n_workers=n_workers,
        makespan=makespan - startup,
        task_time=task_time,
        level_walls={level: level_last[level] - level_first[level] for level in sorted(level_last)},
        bound_barrier=bound_barrier,
        bound_global=bound_global,
        master_busy=master_busy,
        messages=messages,
        steals=steals,
    )
