"""Levels decided as they open (screened expansions): when the scheduler asks, and what it then hands out."""

from __future__ import annotations

import pytest

from mbe_mpi.plan import Task
from mbe_mpi.scheduling import Assign, Deferred, Scheduler
from mbe_mpi.scheduling.simulate import simulate


def _tasks(level, count, start, dispatch=0):
    return [Task(start + i, 0, tuple(range(1, level + 1)), tuple(range(1, level + 1)), cost=1.0, dispatch=dispatch)
            for i in range(count)]


def _drain(scheduler, worker=1):
    """Complete every task handed out so far (one worker), in order; the indices completed."""
    done = []
    for action in scheduler.actions():
        assert isinstance(action, Assign)
        for task in action.tasks:
            scheduler.task_done(action.worker, task.index, 0.001)
            done.append(task.index)
    return done


@pytest.mark.parametrize("barrier", [True, False])
def test_a_level_that_reads_results_is_decided_only_once_every_task_below_completed(barrier):
    level1, level2 = _tasks(1, 3, 0), _tasks(2, 4, 3)
    asked = []

    def decide():
        asked.append(completed[:])  # what had completed when the decision was asked for
        return _tasks(3, 2, 7)

    completed = []
    scheduler = Scheduler({1: level1, 2: level2, 3: Deferred(decide, after_complete=True)}, [1, 2], prefetch=1,
                          level_barrier=barrier, batch_seconds=0.0)
    while not scheduler.finished:
        actions = scheduler.actions()
        for action in actions:
            for task in action.tasks:
                scheduler.task_done(action.worker, task.index)  # never calls decide (only actions() does)
                completed.append(task.index)
        assert actions or scheduler.finished
    assert len(asked) == 1 and sorted(asked[0]) == list(range(7))  # asked once, after all 7 tasks below
    assert sorted(completed) == list(range(9))


def test_a_level_decided_from_decisions_alone_may_open_early_without_the_barrier():
    opened = []
    scheduler = Scheduler({1: _tasks(1, 2, 0), 2: Deferred(lambda: opened.append(1) or _tasks(2, 1, 2),
                                                           after_complete=False)},
                          [1, 2, 3], prefetch=1, level_barrier=False, batch_seconds=0.0)
    first = scheduler.actions()  # 2 level-1 tasks for 3 workers: level 2 opens at once for the third
    assert opened == [1]
    assert sorted(t.index for a in first for t in a.tasks) == [0, 1, 2]


def test_a_level_screened_down_to_nothing_is_skipped_and_the_run_ends():
    scheduler = Scheduler({1: _tasks(1, 2, 0), 2: Deferred(lambda: []), 3: Deferred(lambda: [], after_complete=False)},
                          [1], prefetch=1, batch_seconds=0.0)
    assert _drain(scheduler) == [0]
    assert _drain(scheduler) == [1]
    assert not scheduler.finished  # the deferred levels are decided at the next decision point
    assert scheduler.actions() == [] and scheduler.finished


def test_tasks_are_handed_out_with_their_dispatch_level():
    # a vmfc task (1)@(1, 2) waits for its dimer: dispatch level 2 although it has one real fragment
    early, late = _tasks(1, 1, 0), _tasks(1, 1, 1, dispatch=2)
    scheduler = Scheduler({1: early, 2: Deferred(lambda: late)}, [1], prefetch=2, batch_seconds=0.0)
    assert [t.index for a in scheduler.actions() for t in a.tasks] == [0]
    scheduler.task_done(1, 0)
    assert [t.index for a in scheduler.actions() for t in a.tasks] == [1]
    scheduler.task_done(1, 1)
    assert scheduler.finished


def test_the_simulator_decides_deferred_levels_as_a_run_does():
    levels = {1: _tasks(1, 4, 0), 2: Deferred(lambda: _tasks(2, 6, 4)), 3: Deferred(lambda: [], after_complete=False)}
    result = simulate(levels, 2, lambda task: 0.1 * task.level)
    assert result.task_time == pytest.approx(4 * 0.1 + 6 * 0.2)
    assert set(result.level_walls) == {1, 2}
    assert result.makespan >= result.bound_barrier > 0
