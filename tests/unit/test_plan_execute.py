"""Planning (labels, levels, costs) and running one task in-process, without any transport."""

from __future__ import annotations

import os
from pathlib import Path

import qcengine

from mbe_mpi.fragments import build_atomic_input, build_fragment_molecule
from mbe_mpi.plan import build_plan
from mbe_mpi.protocol import TaskSpec
from mbe_mpi.worker.execute import WorkerContext, run_task, task_scratch

from ..cases import case_inputs
from ..conftest import cluster_molecule, manybody_input


def test_dispatch_order_is_level_by_level_largest_first_supersystem_last():
    plan = build_plan(case_inputs()["xtb-gradient-supersystem"])
    order = [task for group in plan.by_level().values() for task in group]
    assert sorted(t.index for t in order) == list(range(len(plan.tasks)))
    levels = [t.level for t in order]
    assert levels == sorted(levels)
    assert order[-1].level == 4 and order[-1].real == (1, 2, 3, 4)  # the supersystem task
    for group in plan.by_level().values():
        costs = [t.cost for t in group]
        assert costs == sorted(costs, reverse=True)


def test_counterpoise_tasks_cost_more_than_bare_ones():
    plan = build_plan(manybody_input(cluster_molecule(3), bsse=["cp", "nocp"]))
    monomers = [t for t in plan.tasks if t.level == 1]
    bare = [t.cost for t in monomers if len(t.basis) == 1]
    ghosted = [t.cost for t in monomers if len(t.basis) > 1]
    assert bare and ghosted and min(ghosted) > max(bare)
    assert plan.by_level()[1][0].basis == (1, 2, 3)  # ghosted monomers go first in level 1


def test_run_task_equals_a_direct_qcengine_call():
    mbi = case_inputs()["xtb-gradient-supersystem"]
    plan = build_plan(mbi)
    ctx = WorkerContext.build(mbi, rank=5, threads=1, memory_gib=1.5)
    assert ctx.task_config == {"ncores": 1, "memory": 1.5, "retries": 0}
    task = plan.tasks[-1]
    result = run_task(ctx, TaskSpec(task.index, task.mc_index, task.real, task.basis))
    assert result.ok and result.rank == 5 and result.task_id == task.index
    spec = plan.computer.input_data.specification.specification[plan.model_chemistries[task.mc_index]]
    molecule = build_fragment_molecule(plan.core, task.real, task.basis)
    direct = qcengine.compute(
        build_atomic_input(molecule, spec.program, {"driver": "gradient", "model": spec.model.model_dump()}),
        spec.program)
    assert result.energy == direct.properties.return_energy
    assert result.gradient.tobytes() == direct.properties.return_gradient.tobytes()
    assert result.atomic_result_json is None  # cluster_results protocol "none": nothing extra travels


def test_failing_task_becomes_a_structured_error():
    mbi = case_inputs()["hessian-nocp"]
    spec = mbi.specification.specification["(auto)"].model_copy(update={"keywords": {"max_cycle": 1,
                                                                                       "conv_tol": 1e-14}})
    mbi = mbi.model_copy(update={"specification": mbi.specification.model_copy(update={
        "specification": {"(auto)": spec}})})
    ctx = WorkerContext.build(mbi, rank=2, threads=1, memory_gib=1.0)
    result = run_task(ctx, TaskSpec(0, 0, (1,), (1,), attempt=3))
    assert not result.ok
    assert result.error.label == '["(auto)", [1], [1]]'
    assert result.error.rank == 2 and result.error.attempt == 3
    assert "converge" in result.error.message.lower()
    assert result.error.traceback


def test_cluster_results_all_sends_the_atomic_result():
    mbi = manybody_input(cluster_molecule(2), bsse=["nocp"], cluster_results="all",
                         specification={"program": "tblite", "driver": "energy",
                                        "model": {"method": "gfn2-xtb", "basis": None}})
    ctx = WorkerContext.build(mbi, rank=1, threads=1, memory_gib=1.0)
    result = run_task(ctx, TaskSpec(0, 0, (1,), (1,)))
    assert result.ok and '"return_energy"' in result.atomic_result_json


def test_tasks_share_the_worker_scratch_folder_but_never_its_contents(tmp_path):
    mbi = manybody_input(cluster_molecule(2), bsse=["nocp"])
    ctx = WorkerContext.build(mbi, rank=3, threads=1, memory_gib=1.0, scratch_dir=str(tmp_path))
    seen = []
    for task_id in range(2):
        with task_scratch(ctx, TaskSpec(task_id, 0, (1,), (1,))) as path:
            seen.append((path, sorted(os.listdir(path))))
            (Path(path) / "fort.7").write_text("left behind")
            (Path(path) / "sub").mkdir()
            (Path(path) / "sub" / "more").write_text("also")
    assert seen[0] == seen[1] == (seen[0][0], [])  # the second task finds an empty folder
    assert Path(seen[0][0]).parent == tmp_path and os.listdir(seen[0][0]) == []
    ctx.close()
    assert list(tmp_path.iterdir()) == []


def test_keep_scratch_gives_every_task_a_folder_that_stays(tmp_path):
    mbi = manybody_input(cluster_molecule(2), bsse=["nocp"])
    ctx = WorkerContext.build(mbi, rank=3, threads=1, memory_gib=1.0, scratch_dir=str(tmp_path), keep_scratch=True)
    paths = []
    for task_id in range(2):
        with task_scratch(ctx, TaskSpec(task_id, 0, (1,), (1,))) as path:
            (Path(path) / "out.log").write_text(str(task_id))
            paths.append(path)
    ctx.close()
    assert paths[0] != paths[1]
    assert [(Path(p) / "out.log").read_text() for p in paths] == ["0", "1"]


def test_an_invalid_task_molecule_is_an_input_error_not_internal(monkeypatch):
    from qcelemental.exceptions import ValidationError

    mbi = manybody_input(cluster_molecule(2), bsse=["nocp"], specification={
        "program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None}})
    ctx = WorkerContext.build(mbi, rank=1, threads=1, memory_gib=1.0)

    def invalid(real, basis):
        raise ValidationError("Inconsistent or unspecified chg/mult")

    monkeypatch.setattr(ctx.fragments, "molecule", invalid)
    result = run_task(ctx, TaskSpec(0, 0, (1,), (1,)))
    assert result.error.kind == "input" and "Inconsistent or unspecified chg/mult" in result.error.message


def test_a_non_finite_result_fails_the_task():
    mbi = manybody_input(cluster_molecule(2), driver="gradient", bsse=["nocp"], specification={
        "program": "synthetic", "driver": "gradient", "model": {"method": "synthetic", "basis": None},
        "keywords": {"fault": {"kind": "nan", "when_natoms_real": 3}}})
    ctx = WorkerContext.build(mbi, rank=1, threads=1, memory_gib=1.0)
    result = run_task(ctx, TaskSpec(0, 0, (1,), (1,)))
    assert not result.ok and result.error.kind == "nonfinite_result"
    assert "non-finite energy" in result.error.message
    assert run_task(ctx, TaskSpec(2, 0, (1, 2), (1, 2))).ok  # the dimer is not selected
