"""The ``plan`` dry run, and its predictions checked against real runs of the synthetic program."""

from __future__ import annotations

import pytest

from ..conftest import cluster_molecule, manybody_input
from .helpers import run_cli


def _synthetic(seconds=0.004, exponent=2.0, waters=4):
    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": {"seconds": seconds, "exponent": exponent}}
    return manybody_input(cluster_molecule(waters), bsse=["vmfc"], max_nbody=3, specification=spec)


@pytest.mark.parametrize("barrier", [True, False])
def test_prediction_within_10_percent_of_a_real_run(barrier):
    """50 sleep tasks of 36-324 ms (11.8 s of work) on 2 local workers."""
    from mbe_mpi.costs import program_estimates
    from mbe_mpi.forecast import TASK_OVERHEAD_SECONDS
    from mbe_mpi.options import ExecutionOptions
    from mbe_mpi.plan import build_plan
    from mbe_mpi.run import run
    from mbe_mpi.scheduling import SchedulePolicy
    from mbe_mpi.scheduling.simulate import simulate

    mbi = _synthetic()
    plan = build_plan(mbi)
    expected = program_estimates(plan)
    predicted = simulate(plan.by_level(), 2, lambda task: expected(task) + TASK_OVERHEAD_SECONDS,
                         SchedulePolicy(level_barrier=barrier)).makespan
    options = ExecutionOptions(n_workers=2, checkpoint=False, level_barrier=barrier)
    timeline = run(lambda: (mbi, options)).timeline
    real = max(t.end for t in timeline) - min(t.sent for t in timeline)
    assert abs(predicted - real) / real < 0.10, (predicted, real)


def test_plan_command_counts_tasks_and_predicts_wall_time(tmp_path):
    case = tmp_path / "case.json"
    case.write_text(_synthetic().model_dump_json())
    proc = run_cli(["plan", str(case), "--ranks", "3"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "50 QC tasks in 3 levels" in out and "2 workers" in out
    for level, count in ((1, 28), (2, 18), (3, 4)):
        assert any(line.split()[:1] == [str(level)] and str(count) in line.split() for line in out.splitlines())
    assert "level barrier:" in out and "efficiency" in out and " s," in out
    assert not (tmp_path / "case.result.json").exists()  # a dry run computes nothing


def test_plan_without_known_costs_reports_relative_units(tmp_path):
    case = tmp_path / "case.json"
    case.write_text(manybody_input(cluster_molecule(3), bsse=["cp"]).model_dump_json())
    proc = run_cli(["plan", str(case), "--ranks", "5"])
    assert proc.returncode == 0, proc.stderr
    assert "units" in proc.stdout and "--seconds-per-unit" in proc.stdout
    timed = run_cli(["plan", str(case), "--ranks", "5", "--seconds-per-unit", "0.001"])
    assert "units" not in timed.stdout.split("lower bound")[0]


def test_plan_refuses_bad_input_and_ranks(tmp_path):
    proc = run_cli(["plan", str(tmp_path / "missing.yaml")])
    assert proc.returncode == 2 and "no such file" in proc.stderr
    case = tmp_path / "case.json"
    case.write_text(_synthetic().model_dump_json())
    proc = run_cli(["plan", str(case), "--ranks", "1"])
    assert proc.returncode == 2 and "--ranks" in proc.stderr


def test_results_identical_with_and_without_barrier_and_batching():
    """Scheduling changes when tasks run, never the numbers: bit-identical to QCManyBody sequential."""
    import mbe_mpi

    from ..conftest import assert_same_result, sequential_reference

    mbi = manybody_input(cluster_molecule(4), driver="gradient", bsse=["nocp", "cp", "vmfc"], max_nbody=3,
                         specification={"program": "synthetic", "driver": "gradient",
                                        "model": {"method": "synthetic", "basis": None}})
    reference = sequential_reference(mbi)
    for options in ({"level_barrier": True, "batch_seconds": 0.0, "prefetch": 1},
                    {"level_barrier": False, "batch_seconds": 1.0, "prefetch": 4},
                    {"level_barrier": False, "order": "fifo"}):
        assert_same_result(mbe_mpi.compute(mbi, n_workers=2, **options), reference)
