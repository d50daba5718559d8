"""The level scheduler, driven by a fake clock: level order, largest first, every task exactly once."""

from __future__ import annotations

import random

from mbe_mpi.master import LevelScheduler
from mbe_mpi.plan import Task


def _tasks(rng, n_levels=3, per_level=(5, 12, 9)):
    tasks = []
    for level in range(1, n_levels + 1):
        for _ in range(per_level[level - 1]):
            real = tuple(range(1, level + 1))
            tasks.append(Task(len(tasks), 0, real, real, cost=rng.uniform(1, 100)))
    return tasks


def _by_level(tasks):
    groups = {}
    for t in tasks:
        groups.setdefault(t.level, []).append(t)
    return {lv: sorted(g, key=lambda t: -t.cost) for lv, g in groups.items()}


def test_randomized_runs_complete_every_task_once_in_level_order():
    for seed in range(50):
        rng = random.Random(seed)
        tasks = _tasks(rng, per_level=(rng.randint(1, 6), rng.randint(1, 20), rng.randint(1, 10)))
        workers = list(range(1, rng.randint(2, 8)))
        sched = LevelScheduler(_by_level(tasks), workers)
        completed, started_levels = [], []
        while not sched.finished:
            for _worker, task in sched.assignments():
                started_levels.append(task.level)
                # barrier: every task of a lower level has completed before this one starts
                assert all(t.index in completed for t in tasks if t.level < task.level)
                assert task.level == sched.level
            # complete a random running task
            worker = rng.choice(sorted(sched.running))
            task = sched.complete(worker)
            assert all(done_level <= task.level for done_level in
                       [tasks[i].level for i in completed])  # completions never go back a level
            completed.append(task.index)
        assert sorted(completed) == list(range(len(tasks)))
        assert started_levels == sorted(started_levels)


def test_largest_first_within_a_level():
    rng = random.Random(1)
    tasks = _tasks(rng, n_levels=1, per_level=(10,))
    sched = LevelScheduler(_by_level(tasks), [1])
    order = []
    while not sched.finished:
        (worker, task), = sched.assignments()
        order.append(task.cost)
        sched.complete(worker)
    assert order == sorted(order, reverse=True)


def test_level_barrier_holds_next_level_until_all_done():
    rng = random.Random(2)
    tasks = _tasks(rng, n_levels=2, per_level=(2, 5))
    sched = LevelScheduler(_by_level(tasks), [1, 2, 3, 4])
    first = sched.assignments()
    assert [t.level for _, t in first] == [1, 1]  # two idle workers wait at the barrier
    sched.complete(first[0][0])
    assert sched.assignments() == []  # level 1 still running
    sched.complete(first[1][0])
    second = sched.assignments()
    assert len(second) == 4 and all(t.level == 2 for _, t in second)


def test_stop_dispatches_nothing_more_but_running_completes():
    rng = random.Random(3)
    sched = LevelScheduler(_by_level(_tasks(rng, n_levels=1, per_level=(6,))), [1, 2])
    (w1, _), (w2, _) = sched.assignments()
    sched.stop()
    assert not sched.finished
    sched.complete(w1)
    assert sched.assignments() == []
    sched.complete(w2)
    assert sched.finished
