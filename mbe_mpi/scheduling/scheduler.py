"""The pure scheduler: levels, largest-first dispatch, prefetch queues, work stealing, batching.

No MPI, no processes, no clock of its own: :class:`Scheduler` is plain state that the master loop
(:mod:`mbe_mpi.master`) and the simulator (:mod:`mbe_mpi.scheduling.simulate`, a virtual clock)
drive through the same events and decisions, so what the simulator predicts is what runs.

A level's tasks may be known only once the levels below it are (a screened expansion keeps the
n-mers of level n that the results of level n-1 say are worth computing): such a level is a
:class:`Deferred`, whose ``decide`` the scheduler calls when the level may open -- from
:meth:`Scheduler.actions`, the decision point, never from an event handler, so the caller has taken
in every result before it is asked.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..costs import CostModel, shape_of
from ..plan import TASK_COST, TASK_INDEX, TASK_REAL, Task
from .policy import SchedulePolicy

_BASIS, _DISPATCH, _MC_INDEX = (operator.attrgetter(name) for name in ("basis", "dispatch", "mc_index"))
#: up to this many shapes in a chunk, a pass over the tasks per shape in C beats one loop in Python
_C_GROUPING_UP_TO = 8
_CHUNK = 1 << 16  # tasks grouped at a time by PendingTasks.extend


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
        return (0,) if self.fifo else shape_of(task)

    def extend(self, tasks: Iterable[Task]) -> None:
        tasks = list(tasks)
        incoming: dict[tuple[int, tuple], list[Task]] = {}  # (dispatch level, shape) -> tasks, in order
        for start in range(0, len(tasks), _CHUNK):
            self._group_into(incoming, tasks[start:start + _CHUNK] if len(tasks) > _CHUNK else tasks)
        for (level, shape), group in incoming.items():
            queue = self._groups.setdefault(level, {}).setdefault(shape, collections.deque())
            queue.extend(group)
            # by (-cost, index): a stable sort by index, then by cost descending (stable too), with C key functions
            ordered = sorted(queue, key=TASK_INDEX)
            if not self.fifo:
                ordered.sort(key=TASK_COST, reverse=True)
            queue.clear()
            queue.extend(ordered)
            self._count += len(group)

    def _group_into(self, groups: dict[tuple[int, tuple], list[Task]], tasks: list[Task]) -> None:
        """Append ``tasks`` to their (dispatch level, shape) groups, keeping their order.

        The per-task work is in C (a level brings up to millions of tasks, in a handful of shapes),
        a chunk at a time so that the keys never take more memory than the chunk's.
        """
        reals = list(map(len, map(TASK_REAL, tasks)))
        dispatch = list(map(_DISPATCH, tasks))
        levels = reals if not any(dispatch) else [d or r for d, r in zip(dispatch, reals, strict=True)]  # dispatch_level
        shapes = ([(0,)] * len(tasks) if self.fifo  # shape_of:
                  else zip(map(_MC_INDEX, tasks), reals, map(len, map(_BASIS, tasks)), strict=True))
        keys = list(zip(levels, shapes, strict=True))
        distinct = dict.fromkeys(keys)
        if len(distinct) == 1:
            groups.setdefault(keys[0], []).extend(tasks)
        elif len(distinct) <= _C_GROUPING_UP_TO:  # a pass in C per shape keeps that shape's tasks
            for key in distinct:
                groups.setdefault(key, []).extend(itertools.compress(tasks, map(key.__eq__, keys)))
        else:
            for task, key in zip(tasks, keys, strict=True):
                group = groups.get(key)
                if group is None:
                    group = groups[key] = []
                group.append(task)

    def put_back(self, tasks: Iterable[Task]) -> None:
        """Tasks returned by a worker go to the front of their groups (they were at the front before)."""
        for task in sorted(tasks, key=lambda t: (t.cost, -t.index)):
            self._groups.setdefault(task.dispatch_level, {}).setdefault(
                self._shape(task), collections.deque()).appendleft(task)
            self._count += 1

    def best(self) -> collections.deque[Task]:
        """The group whose head goes out next (the lowest level's most expensive head).

        Emptied groups and levels are dropped (:meth:`pop`), so this looks at the few groups that
        still hold tasks -- it is asked once per task handed out.
        """
        shapes = self._groups[min(self._groups)]
        if len(shapes) == 1 or self.fifo:
            return next(iter(shapes.values()))
        sort_key = self.cost_model.sort_key
        return min(shapes.values(), key=lambda queue: sort_key(queue[0]))

    def pop(self, queue: collections.deque[Task]) -> Task:
        """Take the head of ``queue`` (one of this object's groups, as :meth:`best` returned it)."""
        task = queue.popleft()
        self._count -= 1
        if not queue:
            self._drop(task)
        return task

    def take(self, queue: collections.deque[Task], count: int) -> list[Task]:
        """The first ``count`` tasks of ``queue``: what ``count`` calls of :meth:`pop` would return."""
        popleft = queue.popleft
        taken = [popleft() for _ in range(count)]
        self._count -= count
        if taken and not queue:
            self._drop(taken[-1])
        return taken

    def _drop(self, task: Task) -> None:
        """The group of ``task`` has been emptied: it goes (and its level, when that was its last group)."""
        level = task.dispatch_level
        shapes = self._groups[level]
        del shapes[self._shape(task)]
        if not shapes:
            del self._groups[level]

    def popleft(self) -> Task:
        return self.pop(self.best())

    def leads(self, queue: collections.deque[Task]) -> bool:
        """Whether every task of ``queue`` (a group, as :meth:`best` returned it) goes out before any other group's.

        True when the group's shape has a measured mean (so all its tasks expect the same seconds)
        that sorts strictly before every other group's head of the level. Nothing else is popped
        meanwhile, and without a new measurement the order cannot change.
        """
        head = queue[0]
        mean = None if self.fifo else self.cost_model.measured(head)
        if mean is None:
            return False
        key = (head.level, -mean)
        sort_key = self.cost_model.sort_key
        return all(other is queue or sort_key(other[0])[:2] > key
                   for other in self._groups[head.dispatch_level].values())

    def clear(self) -> None:
        self._groups.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        for level in sorted(self._groups):
            for queue in self._groups[level].values():
                yield from queue


@dataclasses.dataclass(frozen=True)
class Deferred:
    """A level whose tasks are decided when it may open: ``decide()`` returns them (it is called once).

    With ``after_complete`` the level opens only once every task of the levels below has completed
    (the decision reads their results), whatever the level barrier says; otherwise it opens as any
    level would (its decision needs only the decisions below it, which are taken in level order).
    """

    decide: Callable[[], Sequence[Task]]
    after_complete: bool = True


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
    Levels are those of ``Task.dispatch_level``; a level given as :class:`Deferred` is decided
    when it may open.
    """

    def __init__(self, tasks_by_level: Mapping[int, Sequence[Task] | Deferred], workers: Iterable[int] = (), *,
                 policy: SchedulePolicy | None = None, cost_model: CostModel | None = None, **policy_fields):
        # keyword arguments adjust single policy fields (tests and benchmarks): Scheduler(..., prefetch=1)
        policy = dataclasses.replace(policy or SchedulePolicy(), **policy_fields)
        self.policy = policy
        self.cost_model = cost_model or CostModel()
        self.steal_enabled = policy.stealing
        self.max_retries = policy.max_retries
        self.retry_backoff = policy.retry_backoff
        self.attempts: dict[int, int] = {}  # task index -> attempt being made (absent: the first)
        self.failed_on: dict[int, set[int]] = {}  # task index -> workers it failed on
        self.retries: list[tuple[float, Task]] = []  # (not before, task) waiting to be retried
        self.prefetch = max(1, policy.prefetch)
        self.level_barrier = policy.level_barrier
        self.batch_seconds = policy.batch_seconds
        self.batch_target = policy.batch_target
        self.max_batch = policy.max_batch
        self._levels = collections.deque(sorted(tasks_by_level.items()))
        # "fifo" (plan order) exists to measure what cost ordering buys
        self.pending = PendingTasks(self.cost_model, fifo=policy.order == "fifo")
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
        self.released: dict[int, Sequence[Task]] = {}  # level -> its tasks, once released (decided)
        self._streaming: int | None = None  # the level whose tasks are still being planned (stream())
        self._open_next_level()
        for worker in workers:
            self.worker_ready(worker)

    # ---- levels ---------------------------------------------------------------------------

    def _release(self, level: int, tasks: Sequence[Task]) -> None:
        self.released[level] = tasks
        if tasks:  # a level screened down to nothing has nothing to wait for
            self._open_levels[level] = len(tasks)
            self.pending.extend(tasks)

    def _open_next_level(self, decide: bool = False) -> None:
        """Release the next levels that may open now; a Deferred one only when ``decide`` (from actions())."""
        while self._levels and not self.stopped:
            level, tasks = self._levels[0]
            deferred = isinstance(tasks, Deferred)
            if self.level_barrier or (deferred and tasks.after_complete):
                if self.pending or self._open_levels:
                    return
            elif self.pending:
                return
            if deferred:
                if not decide:
                    return
                tasks = list(tasks.decide())
            self._levels.popleft()
            if self.level is None or not self._open_levels:
                self.level = level
            self._release(level, tasks)

    def stream(self, level: int) -> None:
        """Open ``level`` while its plan is still being built (:mod:`mbe_mpi.plan_stream`).

        Its tasks come by :meth:`grow` as they are planned, the levels above it by :meth:`planned`
        once planning has ended; until then the level cannot complete (the plan counts as one of
        its tasks), so no level above it opens early, barrier or not.
        """
        self._streaming = level
        if self.level is None:
            self.level = level
        self.released[level] = []
        self._open_levels[level] = self._open_levels.get(level, 0) + 1

    def grow(self, tasks: Sequence[Task]) -> None:
        """More tasks of the streamed level were planned: they are pending at once."""
        if tasks and not self.stopped:
            self.released[self._streaming].extend(tasks)
            self._open_levels[self._streaming] += len(tasks)
            self.pending.extend(tasks)

    def planned(self, levels: Mapping[int, Sequence[Task]]) -> None:
        """Planning has ended: the levels above the streamed one, each in dispatch order."""
        level, self._streaming = self._streaming, None
        if any(other <= level for other in levels):
            raise ValueError(f"a streamed plan handed over levels {sorted(levels)} that are not above level {level}")
        if not self.stopped:
            self._levels.extend(sorted(levels.items()))
        self._level_task_done(level)
        self._open_next_level()

    @property
    def finished(self) -> bool:
        return self.running_count == 0 and not self.stealing and (
            self.stopped or (not self.pending and not self._levels and not self.retries and self._streaming is None))

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

    def task_failed(self, worker: int, task_index: int, now: float = 0.0, retry: bool = True) -> tuple[Task, bool]:
        """A task failed on ``worker``. Returns the task and whether that was its last attempt.

        Otherwise (``retry``, attempts left) it is retried after ``retry_backoff * 2**(attempt - 1)``
        seconds, on another worker where there is one; its level stays open meanwhile.
        """
        task = self._take(worker, task_index)
        attempt = self.attempts.get(task.index, 1)
        if not retry or attempt > self.max_retries or self.stopped:
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
        self._level_task_done(task.dispatch or len(task.real))  # Task.dispatch_level, inlined: once per result
        if seconds is not None:
            self.cost_model.observe(task, seconds)
        if self._levels and not self.pending:  # (it opens nothing while tasks are pending: once per result, skip it)
            self._open_next_level()

    def _level_task_done(self, level: int) -> None:
        remaining = self._open_levels[level] - 1
        if remaining:
            self._open_levels[level] = remaining
        else:
            del self._open_levels[level]
            if self._open_levels:
                self.level = min(self._open_levels)

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
                queue = self.pending.best()
                following = self.cost_model.seconds(queue[0])
                if following is None or following >= self.batch_seconds:
                    break
                # a group that stays ahead of every other, at its measured mean: the same tasks the
                # loop would take one by one, without asking for the best group once per task
                steady = self.pending.leads(queue)
                batch.append(self.pending.pop(queue))
                total += following
                if steady:
                    room, count = min(len(queue), self.max_batch - len(batch)), 0
                    while count < room and total < self.batch_target:  # the same sums as one task at a time
                        count += 1
                        total += following
                    batch += self.pending.take(queue, count)
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
                self._open_next_level(decide=True)  # without the barrier, the next level may start now
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
