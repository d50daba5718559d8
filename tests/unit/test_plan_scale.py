"""Planning a large expansion does work per task only where it must: counted, not timed.

200 fragments at 3-body is 1.3 M tasks (2.7 M with cp and nocp); what keeps the master's first
dispatch within seconds there is that no label string, no cost sum over a whole counterpoise
basis and no content hash is made per task before the first dispatch. These tests count those.
"""

from __future__ import annotations

import numpy as np
from qcelemental.models.v2 import Molecule
from qcmanybody.utils import labeler

import mbe_mpi.hashing
import mbe_mpi.plan
from mbe_mpi.checkpoint import Journal
from mbe_mpi.hashing import TaskHasher
from mbe_mpi.plan import build_plan, group_by_level
from mbe_mpi.protocol import ResultMessage
from mbe_mpi.report import Progress

from ..conftest import manybody_input

SYNTHETIC = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None}}


def _helium(n: int, bsse: list[str]):
    rng = np.random.default_rng(0)
    molecule = Molecule(symbols=["He"] * n, geometry=rng.uniform(0, 40, size=(n, 3)), fragments=[[i] for i in range(n)],
                        fragment_charges=[0] * n, fragment_multiplicities=[1] * n, molecular_charge=0,
                        molecular_multiplicity=1)
    return manybody_input(molecule, bsse=bsse, max_nbody=3, specification=SYNTHETIC)


def _count_calls(monkeypatch, owner, name: str) -> list[int]:
    calls = [0]
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_counterpoise_plan_builds_no_label_and_one_cost_sum_per_basis(monkeypatch):
    labels = _count_calls(monkeypatch, mbe_mpi.plan, "labeler")
    sums = _count_calls(monkeypatch, mbe_mpi.plan, "estimate_cost")
    plan = build_plan(_helium(30, ["cp", "nocp"]))
    n = 30 + 30 * 29 // 2 + 30 * 29 * 28 // 6
    assert len(plan.tasks) == 2 * n
    assert labels[0] == 0
    cp = [task for task in plan.tasks if len(task.basis) == 30]
    assert len(cp) == n and len({id(task.basis) for task in cp}) == 1  # one shared tuple, not n copies
    assert sums[0] <= n + 2  # nocp: one per task; cp: one for the whole level
    assert all(task.basis is task.real for task in plan.tasks if len(task.basis) < 30)


def test_group_by_level_is_cost_then_index_order_for_any_input():
    plan = build_plan(_helium(12, ["nocp"]))
    shuffled = list(plan.tasks)
    np.random.default_rng(3).shuffle(shuffled)
    expected = {}
    for task in sorted(plan.tasks, key=lambda t: (t.level, -t.cost, t.index)):
        expected.setdefault(task.level, []).append(task)
    assert group_by_level(shuffled) == expected == plan.by_level()
    assert list(group_by_level(shuffled[::2])) == sorted({t.level for t in shuffled[::2]})


def test_a_new_checkpoint_hashes_no_task_before_results_arrive(monkeypatch, tmp_path):
    mbi = _helium(10, ["cp"])
    plan = build_plan(mbi)
    hashed = _count_calls(monkeypatch, TaskHasher, "__call__")
    journal = Journal(plan, mbi.model_dump_json(), checkpoint=str(tmp_path / "run.sqlite"),
                      cache_dir=str(tmp_path / "cache"))
    assert journal.reusable() == {}
    assert hashed[0] == 0
    for task in plan.tasks[:5]:
        journal.record(task, ResultMessage(task.index, 1, 0.01, energy=-float(task.index)))
    assert hashed[0] == 5
    journal.close(completed=False)

    again = Journal(plan, mbi.model_dump_json(), checkpoint=str(tmp_path / "run.sqlite"), cache_dir=None)
    reused = again.reusable()
    assert sorted(reused) == [task.index for task in plan.tasks[:5]]
    assert again.hashes == mbe_mpi.hashing.task_hashes(plan)  # a resume looks every task up
    again.close(completed=False)


def test_progress_counts_levels_without_a_pass_per_task_in_python():
    plan = build_plan(_helium(12, ["nocp"]))
    shown = Progress(plan.tasks, set(), 2, tty=False)
    assert shown.total == {1: 12, 2: 66, 3: 220}
    assert shown.cost_left == sum(task.cost for task in plan.tasks)
    reused = {task.index for task in plan.tasks[:20]}
    resumed = Progress(plan.tasks, reused, 2, tty=False)
    assert sum(resumed.reused.values()) == 20 == sum(resumed.done.values())


def test_labels_with_bases_longer_than_the_directly_hashed_ones_equal_iterate_molecules():
    """Counterpoise bases over 8 fragments are de-duplicated by a number per basis: the same tasks, same order."""
    n = 2 * mbe_mpi.plan._HASHED_BASIS  # cp's basis is every fragment: above the directly hashed length
    core = build_plan(_helium(n, ["cp", "nocp", "vmfc"])).core
    ours = [labeler(mc, real, basis) for mc, real, basis in mbe_mpi.plan.iter_labels(core)]
    assert ours == [label for _, label, _ in core.iterate_molecules()]
    assert len(ours) == len(set(ours)) and any(len(basis) == n for _, _, basis in mbe_mpi.plan.iter_labels(core))
