"""A plan streamed level by level: the same tasks as build_plan, first level first, checked against QCManyBody."""

from __future__ import annotations

import numpy as np
import pytest
from qcelemental.models.v2 import Molecule
from qcmanybody import ManyBodyCore

import mbe_mpi.plan_stream
from mbe_mpi.plan import Task, build_plan, iter_labels, levelwise_compute_lists, make_computer
from mbe_mpi.plan_stream import PlanStream
from mbe_mpi.scheduling import Assign, Scheduler

from ..conftest import manybody_input

SYNTHETIC = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None}}


def _helium(n: int) -> Molecule:
    rng = np.random.default_rng(1)
    # charges and multiplicities given: qcelemental's search for them is combinatorial in the fragments
    return Molecule(symbols=["He"] * n, geometry=rng.uniform(0, 30, size=(n, 3)), fragments=[[i] for i in range(n)],
                    molecular_charge=0, molecular_multiplicity=1, fragment_charges=[0] * n,
                    fragment_multiplicities=[1] * n)


LEVELS = [
    {1: "a", 2: "a", 3: "a"},
    {1: "a", 2: "b", 3: "b"},
    {1: "b", 2: "a", 3: "a", 4: "c"},  # the cheaper model chemistry first in QCManyBody's order
    {1: "a", 2: "a", "supersystem": "b"},  # not level-wise: the whole compute map
]


@pytest.mark.parametrize("levels", LEVELS, ids=["single", "multilevel", "three-mc", "supersystem"])
@pytest.mark.parametrize("bsse", [["nocp"], ["cp"], ["vmfc"], ["cp", "nocp", "vmfc"], ["vmfc", "cp"]])
@pytest.mark.parametrize("total", [True, False])
def test_level_wise_compute_lists_give_iterate_molecules_labels_in_order(levels, bsse, total):
    core = ManyBodyCore(_helium(6), bsse, levels, return_total_data=total, supersystem_ie_only=False,
                        embedding_charges=None)
    streamed = list(iter_labels(core, levelwise_compute_lists(core)))
    assert core.mc_compute_dict is None or "supersystem" in levels  # level-wise: no whole map was built
    from_molecules = [label for _, label, _ in core.iterate_molecules()]
    from qcmanybody.utils import labeler

    assert [labeler(mc, real, basis) for mc, real, basis in streamed] == from_molecules


def _input(bsse, n=9, max_nbody=3):
    return manybody_input(_helium(n), bsse=bsse, max_nbody=max_nbody, specification=SYNTHETIC)


@pytest.mark.parametrize("bsse", [["nocp"], ["cp", "nocp"], ["vmfc"]])
def test_a_streamed_plan_is_build_plan_task_for_task_and_hands_out_the_first_level_first(bsse):
    mbi = _input(bsse)
    expected = build_plan(mbi)
    stream = PlanStream(make_computer(mbi))
    first, later = [], None
    while later is None:
        new, later = stream.take()
        first.extend(new)
    assert stream.take() == ([], None)  # spent
    plan = stream.wait()
    assert plan.tasks == expected.tasks
    by_level = expected.by_level()
    assert sorted(first, key=lambda t: t.index) == sorted(by_level[1], key=lambda t: t.index)
    assert later == {level: tasks for level, tasks in by_level.items() if level > 1}
    assert plan.core.mc_compute_dict is not None  # QCManyBody's map, built for the check, is what analyze reads


def test_a_stream_that_differs_from_qcmanybody_is_an_error_before_anything_is_assembled(monkeypatch):
    def one_short(core):
        chunks = list(levelwise_compute_lists(core))
        mc, last = chunks[-1]
        return [*chunks[:-1], (mc, list(last)[:-1])]

    monkeypatch.setattr(mbe_mpi.plan_stream, "levelwise_compute_lists", one_short)
    stream = PlanStream(make_computer(_input(["nocp"], n=5)))
    with pytest.raises(RuntimeError, match="differs from QCManyBody's compute map"):
        stream.wait()
    with pytest.raises(RuntimeError, match="planning failed"):
        stream.take()


def test_a_cancelled_stream_stops(monkeypatch):
    stream = PlanStream(make_computer(_input(["cp", "nocp"], n=40)))
    stream.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        stream.wait()
    assert len(stream.plan.tasks) < len(build_plan(_input(["cp", "nocp"], n=40)).tasks)


def _tasks(level: int, indices) -> list[Task]:
    return [Task(i, 0, tuple(range(1, level + 1)), tuple(range(1, level + 1)), cost=1.0) for i in indices]


def _complete_all(scheduler: Scheduler) -> list[int]:
    done = []
    for action in scheduler.actions():
        assert isinstance(action, Assign)
        for task in action.tasks:
            scheduler.task_done(action.worker, task.index, 0.01)
            done.append(task.index)
    return done


@pytest.mark.parametrize("barrier", [True, False])
def test_the_scheduler_runs_a_streamed_level_and_opens_the_next_only_once_planning_has_ended(barrier):
    scheduler = Scheduler({}, [1], level_barrier=barrier, prefetch=1)
    scheduler.stream(1)
    assert not scheduler.finished
    assert scheduler.actions() == []  # nothing planned yet: nothing to hand out, and not finished
    scheduler.grow(_tasks(1, [0, 1]))
    assert _complete_all(scheduler) == [0]
    assert _complete_all(scheduler) == [1]
    assert not scheduler.finished and scheduler.actions() == []  # every known monomer done, planning goes on
    scheduler.grow(_tasks(1, [3]))
    scheduler.planned({2: _tasks(2, [2, 4])})
    assert _complete_all(scheduler) == [3]  # the level-1 task planned last still goes before any dimer
    assert _complete_all(scheduler) + _complete_all(scheduler) == [2, 4]
    assert scheduler.finished


def test_a_stopped_scheduler_ignores_the_rest_of_the_stream():
    scheduler = Scheduler({}, [1])
    scheduler.stream(1)
    scheduler.stop()
    scheduler.grow(_tasks(1, [0]))
    scheduler.planned({2: _tasks(2, [1])})
    assert scheduler.actions() == [] and scheduler.finished
