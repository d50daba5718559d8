"""The progress display's counts stay true when tasks are stolen, handed back by a lost worker or retried."""

from __future__ import annotations

import io

from mbe_mpi.master import Completion
from mbe_mpi.plan import build_plan
from mbe_mpi.protocol import ResultMessage, TaskError
from mbe_mpi.report import Progress

from ..conftest import cluster_molecule, manybody_input


def _failed(task, final):
    error = TaskError("crash", "boom", "", "", 1, 1)
    return Completion(task, ResultMessage(task.index, 1, 0.1, error=error), 1, 0.0, 0.1, final)


def test_running_failed_and_done_counts_through_requeues_and_retries():
    plan = build_plan(manybody_input(cluster_molecule(3), bsse=["nocp"]))
    monomers = [t for t in plan.tasks if t.level == 1]
    progress = Progress(plan.tasks, set(), 2, stream=io.StringIO())
    for task in monomers:
        progress.dispatched(1, task)
    assert progress.running[1] == 3
    progress.requeued(monomers[2])  # stolen, or its worker was lost: back to pending, not running
    assert progress.running[1] == 2
    progress.completed(_failed(monomers[0], final=False))  # will be retried: not a failure yet
    assert progress.running[1] == 1 and progress.failed[1] == 0
    progress.dispatched(2, monomers[0])
    progress.dispatched(2, monomers[2])
    progress.completed(Completion(monomers[1], ResultMessage(monomers[1].index, 1, 0.1, energy=-1.0), 1, 0.0, 0.1))
    progress.completed(_failed(monomers[0], final=True))
    assert progress.running[1] == 1 and progress.done[1] == 1 and progress.failed[1] == 1
