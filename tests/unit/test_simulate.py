"""The simulator: the real scheduler on a virtual clock; bounds; and the cost model it learns with."""

from __future__ import annotations

import random

from mbe_mpi.costs import CostModel, program_estimates
from mbe_mpi.plan import Task, build_plan
from mbe_mpi.scheduling import FIFO_POLICY, SchedulePolicy
from mbe_mpi.scheduling.simulate import lower_bounds, simulate

from ..conftest import cluster_molecule, manybody_input


def _levels(rng, counts=(300, 400, 200)):
    by_level, index = {}, 0
    for level, count in enumerate(counts, start=1):
        for _ in range(count):
            real = tuple(range(1, level + 1))
            by_level.setdefault(level, []).append(Task(index, 0, real, real, rng.lognormvariate(0, 1) * level ** 2))
            index += 1
    return by_level


def test_simulated_schedule_respects_bounds_and_beats_fifo():
    by_level = _levels(random.Random(4))
    duration = lambda t: 0.01 * t.cost  # noqa: E731
    barrier = simulate(by_level, 8, duration, SchedulePolicy())
    free = simulate(by_level, 8, duration, SchedulePolicy(level_barrier=False))
    fifo = simulate(by_level, 8, duration, FIFO_POLICY)
    bound_barrier, bound_global = lower_bounds(by_level, duration, 8)
    assert barrier.makespan >= bound_barrier * 0.999 and free.makespan >= bound_global * 0.999
    assert barrier.makespan <= 1.05 * bound_barrier
    assert free.makespan <= barrier.makespan
    assert barrier.makespan < fifo.makespan
    total = sum(duration(t) for ts in by_level.values() for t in ts)
    assert abs(barrier.task_time - total) < 1e-6 * total
    assert 0.9 < barrier.efficiency <= 1.0


def test_one_worker_makespan_is_the_sum_of_the_work():
    by_level = _levels(random.Random(1), counts=(5, 7))
    duration = lambda t: t.cost  # noqa: E731
    result = simulate(by_level, 1, duration, latency=0.0, master_seconds=0.0, result_seconds=0.0)
    assert abs(result.makespan - sum(t.cost for ts in by_level.values() for t in ts)) < 1e-9


def test_a_slow_master_shows_as_lost_efficiency():
    by_level = {1: [Task(i, 0, (1,), (1,), 1.0) for i in range(2000)]}
    fast = simulate(by_level, 16, lambda t: 1e-3, SchedulePolicy(batch_seconds=0.0), master_seconds=1e-6)
    slow = simulate(by_level, 16, lambda t: 1e-3, SchedulePolicy(batch_seconds=0.0), master_seconds=2e-4)
    assert slow.makespan > 2 * fast.makespan  # 2,000 x 2 messages x 0.2 ms: the master is the bottleneck
    batched = simulate(by_level, 16, lambda t: 1e-3, SchedulePolicy(batch_seconds=0.005), master_seconds=2e-4)
    assert batched.makespan < slow.makespan / 2  # batching takes the load off the master


def test_cost_model_learns_seconds_per_shape_and_falls_back_sensibly():
    model = CostModel()
    a = Task(0, 0, (1,), (1,), cost=10.0)
    b = Task(1, 0, (2,), (2,), cost=10.0)
    ghosted = Task(2, 0, (1,), (1, 2), cost=80.0)
    other_mc = Task(3, 1, (1,), (1,), cost=10.0)
    assert model.seconds(a) is None
    model.observe(a, 2.0)
    assert model.seconds(b) == 2.0  # same shape (mc, 1 real, 1 basis)
    assert model.seconds(ghosted) == 16.0  # by the model chemistry's seconds per prior unit
    assert model.seconds(other_mc) == 2.0  # another model chemistry: the overall rate
    assert model.sort_key(ghosted) < model.sort_key(a)  # larger expected cost sorts first


def test_synthetic_program_states_its_cost():
    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": {"seconds": 0.5, "exponent": 2.0}}
    plan = build_plan(manybody_input(cluster_molecule(3), bsse=["cp"], specification=spec))
    estimate = program_estimates(plan)
    for task in plan.tasks:
        assert estimate(task) == 0.5 * (3 * len(task.basis)) ** 2


def test_forecast_simulations_side_by_side_equal_one_after_another(monkeypatch):
    """The dry run's two simulations in a forked child give what they give in-process, figure for figure."""
    import os

    from mbe_mpi import forecast
    from mbe_mpi.options import usable_cores

    by_level = _levels(random.Random(7), counts=(200, 300, 100))
    duration = lambda t: 0.01 * t.cost  # noqa: E731
    variants = {"barrier": SchedulePolicy(), "free": SchedulePolicy(level_barrier=False)}
    costs = {"latency": 50e-6, "master_seconds": 20e-6}
    forks = []
    fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or fork())
    side = forecast._simulations(by_level, 8, duration, variants, costs, parallel=True)
    alone = forecast._simulations(by_level, 8, duration, variants, costs, parallel=False)
    assert len(forks) == (1 if usable_cores() > 1 else 0)
    assert [result for result, _ in side.values()] == [result for result, _ in alone.values()]
    assert side["free"][0] != side["barrier"][0]  # the two variants, not one of them twice


def test_program_estimates_count_atoms_of_shared_and_own_bases():
    """Atoms per task's basis: equal fragments, and unequal ones with an own basis or a shared cp basis."""
    from mbe_mpi.costs import _atom_counter

    def task(real, basis=None):
        return Task(0, 0, real, real if basis is None else basis, 1.0)

    equal = _atom_counter({1: 3, 2: 3, 3: 3})
    assert equal(task((1, 2))) == 6 and equal(task((1,), (1, 2, 3))) == 9
    unequal = _atom_counter({i: i for i in range(1, 11)})
    full = tuple(range(1, 11))
    assert unequal(task((2, 5))) == 7
    assert unequal(task((1,), full)) == unequal(task((2,), full)) == 55  # summed once, then from the cache
    assert unequal(task((1,), tuple(range(1, 11)))) == 55  # an equal basis in another tuple


def test_batches_taken_a_group_at_a_time_equal_those_taken_task_by_task(monkeypatch):
    """The scheduler's shortcut for a group that stays ahead (PendingTasks.leads) changes no decision.

    Cheap tasks of two shapes per level (nocp and cp-like bases) with overlapping costs, so batches
    are built, means are learned and the lead passes between the groups; the whole simulated run is
    compared with the same run where every task asks for the best group.
    """
    from mbe_mpi.scheduling import scheduler

    rng = random.Random(11)
    by_level, index = {}, 0
    for level in (1, 2, 3):
        real = tuple(range(1, level + 1))
        for basis in (real, tuple(range(1, 7))):
            for _ in range(400):
                by_level.setdefault(level, []).append(Task(index, 0, real, basis, rng.uniform(0.5, 2.0)))
                index += 1
    duration = lambda t: 0.0005 * t.cost * (2 if len(t.basis) > 3 else 1)  # noqa: E731
    policy = SchedulePolicy(batch_seconds=0.01)
    leads, decided = scheduler.PendingTasks.leads, []
    monkeypatch.setattr(scheduler.PendingTasks, "leads", lambda self, queue: decided.append(leads(self, queue))
                        or decided[-1])
    fast = simulate(by_level, 4, duration, policy)
    assert any(decided) and not all(decided)  # the shortcut was taken, and refused where another group led
    calls = []
    monkeypatch.setattr(scheduler.PendingTasks, "leads", lambda self, queue: calls.append(1) and False)
    slow = simulate(by_level, 4, duration, policy)
    assert calls and fast == slow
    assert fast.messages < len(by_level[1]) + len(by_level[2]) + len(by_level[3])  # batches were built


def test_pending_groups_do_not_depend_on_chunks_or_how_many_shapes(monkeypatch):
    """PendingTasks.extend groups in C, a chunk at a time: the same groups, in the same order, as one task at a time.

    Shuffled tasks of several levels, bases, model chemistries and dispatch levels (screened vmfc-like
    tasks), grouped with chunks smaller than the input and both with the per-shape passes and with
    the loop; then put back and taken again, every task once.
    """
    from mbe_mpi.scheduling import scheduler

    rng = random.Random(5)
    tasks = []
    for index in range(500):
        level = rng.choice((1, 2, 3))
        real = tuple(range(1, level + 1))
        basis = rng.choice((real, tuple(range(1, 5)), tuple(range(1, 7))))
        dispatch = rng.choice((0, 0, 3)) if level < 3 else 0
        tasks.append(Task(index, rng.choice((0, 1)), real, basis, rng.choice((1.0, 2.0, rng.random())), dispatch))
    rng.shuffle(tasks)

    def grouped(chunk: int, passes_up_to: int) -> list[list[int]]:
        monkeypatch.setattr(scheduler, "_CHUNK", chunk)
        monkeypatch.setattr(scheduler, "_C_GROUPING_UP_TO", passes_up_to)
        pending = scheduler.PendingTasks(CostModel())
        pending.extend(tasks[:300])
        pending.extend(tasks[300:])
        return [[t.index for t in group] for shapes in pending._groups.values() for group in shapes.values()]

    reference = grouped(10_000, 0)  # one chunk, the loop
    expected = {}
    for task in sorted(tasks, key=lambda t: (-t.cost, t.index)):
        expected.setdefault((task.dispatch_level, task.mc_index, task.level, len(task.basis)), []).append(task.index)
    assert sorted(reference) == sorted(expected.values())
    assert grouped(7, 0) == reference and grouped(7, 100) == reference and grouped(64, 100) == reference

    pending = scheduler.PendingTasks(CostModel())
    pending.extend(tasks)
    queue = pending.best()
    first = pending.take(queue, 3)
    taken = first + [pending.pop(pending.best()) for _ in range(len(pending))]
    assert sorted(t.index for t in taken) == list(range(500)) and not pending._groups
