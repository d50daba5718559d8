"""The pure scheduler under randomized message timing: every task runs exactly once, levels hold.

Workers are modelled as the real ones behave: a FIFO channel each way (MPI and pipes keep order
between two ends), a queue filled by TASK messages, one task running at a time, STEAL answered by
removing not-started tasks from the back of the queue.
"""

from __future__ import annotations

import collections
import random

import pytest

from mbe_mpi.costs import CostModel
from mbe_mpi.plan import Task
from mbe_mpi.scheduling import Assign, Scheduler, Steal


def _tasks(rng, per_level=(5, 12, 9)):
    tasks = []
    for level, count in enumerate(per_level, start=1):
        for _ in range(count):
            real = tuple(range(1, level + 1))
            tasks.append(Task(len(tasks), 0, real, real, cost=rng.uniform(1, 100)))
    return tasks


def _by_level(tasks):
    groups = {}
    for t in tasks:
        groups.setdefault(t.level, []).append(t)
    return groups


class FakeWorker:
    def __init__(self):
        self.inbox = collections.deque()   # master -> worker messages in flight
        self.outbox = collections.deque()  # worker -> master messages in flight
        self.queue = collections.deque()
        self.running = None


def _simulate(rng, tasks, n_workers, **policy):
    """Drive the scheduler with random but order-preserving message delivery; return the run log."""
    cost_model = CostModel()
    sched = Scheduler(_by_level(tasks), cost_model=cost_model, **policy)
    workers = {w: FakeWorker() for w in range(1, n_workers + 1)}
    for w in workers:
        sched.worker_ready(w)
    events, stolen_back = [], 0
    for _ in range(200000):
        if sched.finished:
            break
        for action in sched.actions():
            target = action.worker if isinstance(action, Assign) else action.victim
            workers[target].inbox.append(action)
        choices = []
        for w, fw in workers.items():
            if fw.inbox:
                choices.append(("deliver", w))
            if fw.outbox:
                choices.append(("reply", w))
            if fw.running is not None:
                choices.append(("finish", w))
            elif fw.queue:
                choices.append(("start", w))
        assert choices, "deadlock: nothing can happen but the scheduler is not finished"
        kind, w = rng.choice(choices)
        fw = workers[w]
        if kind == "deliver":
            message = fw.inbox.popleft()
            if isinstance(message, Assign):
                fw.queue.extend(message.tasks)
            else:
                assert isinstance(message, Steal)
                taken = [fw.queue.pop() for _ in range(min(message.count, len(fw.queue)))]
                fw.outbox.append(("stolen", [t.index for t in taken]))
        elif kind == "start":
            fw.running = fw.queue.popleft()
            events.append(("start", fw.running))
        elif kind == "finish":
            fw.outbox.append(("done", fw.running))
            fw.running = None
        else:
            what, payload = fw.outbox.popleft()
            if what == "stolen":
                stolen_back += len(payload)
                sched.stolen(w, payload)
            else:
                events.append(("done", payload))
                sched.task_done(w, payload.index, seconds=payload.cost * 1e-3)
    assert sched.finished
    return events, stolen_back


@pytest.mark.parametrize("barrier", [True, False])
def test_randomized_runs_run_every_task_exactly_once(barrier):
    total_stolen = 0
    for seed in range(60):
        rng = random.Random(seed)
        tasks = _tasks(rng, per_level=(rng.randint(1, 6), rng.randint(1, 30), rng.randint(1, 12)))
        events, stolen = _simulate(rng, tasks, rng.randint(1, 7), prefetch=rng.randint(1, 4), level_barrier=barrier,
                                   batch_seconds=rng.choice([0.0, 0.05, 1.0]))
        total_stolen += stolen
        started = [t.index for kind, t in events if kind == "start"]
        completed = [t.index for kind, t in events if kind == "done"]
        assert sorted(started) == list(range(len(tasks)))  # every task started exactly once
        assert sorted(completed) == list(range(len(tasks)))  # and completed exactly once
        if barrier:  # no task starts before every task of the lower levels has completed
            done_levels = collections.Counter()
            for kind, task in events:
                if kind == "done":
                    done_levels[task.level] += 1
                else:
                    for lower in range(1, task.level):
                        assert done_levels[lower] == sum(t.level == lower for t in tasks)
    assert total_stolen > 0  # the runs really exercised stealing


def test_barrier_order_with_explicit_events():
    rng = random.Random(2)
    tasks = _tasks(rng, per_level=(2, 5))
    sched = Scheduler(_by_level(tasks), [1, 2, 3, 4], prefetch=1)
    first = sched.actions()
    assert [len(a.tasks) for a in first] == [1, 1] and all(a.tasks[0].level == 1 for a in first)
    sched.task_done(first[0].worker, first[0].tasks[0].index)
    assert sched.actions() == []  # level 1 still running: the barrier holds; nothing to steal either
    sched.task_done(first[1].worker, first[1].tasks[0].index)
    second = sched.actions()
    assert len(second) == 4 and all(a.tasks[0].level == 2 for a in second)


def test_without_barrier_next_level_fills_idle_workers():
    rng = random.Random(2)
    tasks = _tasks(rng, per_level=(2, 5))
    sched = Scheduler(_by_level(tasks), [1, 2, 3, 4], prefetch=1, level_barrier=False)
    assigned = [a.tasks[0].level for a in sched.actions()]
    assert assigned == [1, 1, 2, 2]


def test_largest_first_then_learned_costs_reorder_the_level():
    """Bare tasks (basis (1,)) have the larger prior, but ghosted ones (basis (1, 2)) turn out 100x slower."""
    bare = [Task(i, 0, (1,), (1,), cost=float(100 + i)) for i in range(6)]
    ghosted = [Task(6 + i, 0, (2,), (1, 2), cost=float(10 + i)) for i in range(6)]
    unlearned = Scheduler({1: bare + ghosted}, [1], prefetch=1)
    assert [a.tasks[0].index for a in unlearned.actions()] == [5]  # by the prior: the largest bare task

    model = CostModel()
    model.observe(Task(100, 0, (3,), (3,), 103.0), 0.01)  # measured earlier in the run (same shapes)
    model.observe(Task(101, 0, (3,), (3, 4), 13.0), 1.0)
    sched = Scheduler({1: bare + ghosted}, [1], prefetch=1, batch_seconds=0.0, cost_model=model)
    order = []
    while not sched.finished:
        (action,) = sched.actions()
        order.append(action.tasks[0])
        sched.task_done(1, action.tasks[0].index, seconds=1.0 if len(action.tasks[0].basis) == 2 else 0.01)
    assert [len(t.basis) for t in order] == [2] * 6 + [1] * 6  # measured-expensive shape first
    for shape in (1, 2):  # within a shape, the prior order holds
        costs = [t.cost for t in order if len(t.basis) == shape]
        assert costs == sorted(costs, reverse=True)


def test_cheap_tasks_travel_in_batches_once_measured():
    tasks = [Task(i, 0, (1,), (1,), cost=1.0) for i in range(100)]
    sched = Scheduler({1: tasks}, [1], prefetch=1, batch_seconds=0.005, batch_target=0.02, max_batch=64)
    (first,) = sched.actions()
    assert len(first.tasks) == 1  # nothing measured yet: one at a time
    sched.task_done(1, first.tasks[0].index, seconds=0.001)
    (second,) = sched.actions()
    assert len(second.tasks) == 20  # 20 x 1 ms = the 20 ms batch target


def test_steal_goes_to_the_most_loaded_worker_and_returns_tasks_to_pending():
    tasks = [Task(i, 0, (1,), (1,), cost=float(100 - i)) for i in range(6)]
    sched = Scheduler({1: tasks}, [1], prefetch=6)
    sched.actions()  # worker 1 takes everything
    sched.worker_ready(2)  # a late worker finds nothing pending
    (steal,) = sched.actions()
    assert steal == Steal(victim=1, count=3)  # half of the 5 queued, rounded up
    assert sched.actions() == []  # one steal at a time per victim
    sched.stolen(1, [5, 4, 3])
    assigns = sched.actions()
    assert {a.worker for a in assigns} == {2}
    assert [t.index for a in assigns for t in a.tasks] == [3, 4, 5]  # largest first again
    assert not sched.pending
    assert sum(len(b) for b in sched.batches[1]) == 3 and sum(len(b) for b in sched.batches[2]) == 3


def test_stop_dispatches_nothing_more_but_running_completes():
    rng = random.Random(3)
    sched = Scheduler(_by_level(_tasks(rng, per_level=(6,))), [1, 2], prefetch=1)
    a, b = sched.actions()
    sched.stop()
    assert not sched.finished
    sched.task_done(a.worker, a.tasks[0].index)
    assert sched.actions() == []
    sched.task_done(b.worker, b.tasks[0].index)
    assert sched.finished


def test_a_victim_with_nothing_to_give_is_not_asked_again_until_it_reports():
    """Its queued tasks had started before the STEAL arrived: asking again at once would only ping-pong."""
    tasks = [Task(i, 0, (1,), (1,), cost=float(100 - i)) for i in range(3)]
    sched = Scheduler({1: tasks}, [1], prefetch=3)
    sched.actions()  # worker 1 holds all three
    sched.worker_ready(2)
    assert sched.actions() == [Steal(victim=1, count=1)]
    assert sched.stolen(1, []) == []  # the worker had already moved on
    assert sched.actions() == []  # no second STEAL to the same victim ...
    sched.task_done(1, 0, seconds=0.1)
    assert sched.actions() == [Steal(victim=1, count=1)]  # ... until it has reported again
