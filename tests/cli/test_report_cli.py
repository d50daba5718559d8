"""--report and --gantt through the command line, on the ``synthetic`` program (known task cost, not chemistry)."""

from __future__ import annotations

import json
import os
import sys

import pytest
from qcmanybody.models.v2 import ManyBodyInput

from mbe_mpi.plan import build_plan

from ..conftest import cluster_molecule, manybody_input
from .helpers import run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _synthetic_case(tmp_path, n_waters=5, max_nbody=3, seconds=0.05):
    """5 waters through 3-body: 5 + 10 + 10 = 25 tasks of ``seconds`` each."""
    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": {"seconds": seconds}}
    mbi = manybody_input(cluster_molecule(n_waters), driver="energy", bsse=["nocp"], max_nbody=max_nbody,
                         specification=spec)
    case = tmp_path / "case.json"
    case.write_text(mbi.model_dump_json())
    return case


def _check_report(report: dict, case, n_workers: int, transport: str) -> None:
    plan = build_plan(ManyBodyInput.model_validate_json(case.read_text()))
    level_of = {task.index: task.level for task in plan.tasks}
    run, timeline = report["run"], report["timeline"]
    assert run["transport"] == transport
    assert run["n_workers"] == report["n_workers"] == n_workers
    assert run["computed"] == len(plan.tasks) and run["from_checkpoint"] == 0 and run["from_cache"] == 0
    assert run["wall_time"] == report["wall_time"]

    # every task exactly once, at its own level, on a real worker, in a sensible order of events
    indices = [entry["index"] for entry in timeline]
    assert sorted(indices) == sorted(level_of)
    for entry in timeline:
        assert entry["level"] == level_of[entry["index"]]
        assert 1 <= entry["worker"] <= n_workers
        assert 0 <= entry["sent"] <= entry["start"] <= entry["end"] <= report["wall_time"]

    durations = [entry["end"] - entry["start"] for entry in timeline]
    assert sum(durations) == pytest.approx(report["task_time_sum"], rel=1e-6)
    assert report["utilisation"] * n_workers * report["wall_time"] == pytest.approx(sum(durations), rel=1e-6)
    assert sorted(report["levels"], key=int) == [str(level) for level in sorted(set(level_of.values()))]
    for level, row in report["levels"].items():
        mine = [entry["end"] - entry["start"] for entry in timeline if entry["level"] == int(level)]
        assert row["tasks"] == len(mine) == run["tasks_per_level"][level]
        assert row["utilisation"] * n_workers * row["wall_time"] == pytest.approx(sum(mine), rel=1e-6)
        assert row["task_time_max"] == pytest.approx(max(mine), rel=1e-6)
        assert row["barrier_idle"] >= 0
        assert 0.04 < row["task_time_mean"] < 2.0  # 0.05 s of sleep, plus a little overhead
    assert report["master_cpu_per_task"] == pytest.approx(report["master_cpu_time"] / len(timeline))
    assert 0 < report["startup"] < report["wall_time"]


def test_report_and_gantt_from_a_local_run(tmp_path):
    pytest.importorskip("matplotlib")
    case = _synthetic_case(tmp_path)
    proc = run_cli([str(case), "-o", str(tmp_path / "out.json"), "--n-workers", "2", "--no-progress",
                    "--report", "r.json", "--gantt", "g.png"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    _check_report(report, case, n_workers=2, transport="local")

    # the same timing as the result's extras
    extras = json.loads((tmp_path / "out.json").read_text())["extras"]["mbe_mpi"]["timing"]
    assert {key: value for key, value in report.items() if key not in ("run", "timeline")} == extras

    png = (tmp_path / "g.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 5_000

    # the summary's per-level table: a header and one row per level
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "barrier idle" in line)
    rows = [line.split() for line in lines[header + 1: header + 4]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert [int(row[1]) for row in rows] == [5, 10, 10]
    assert "timing report written to r.json" in proc.stdout
    assert "Gantt chart written to g.png" in proc.stdout


def test_report_under_mpiexec(tmp_path):
    case = _synthetic_case(tmp_path)
    proc = run_cli([str(case), "-o", str(tmp_path / "out.json"), "--no-progress", "--report",
                    str(tmp_path / "r.json")], ranks=3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("timing report written to") == 1  # rank 0 alone writes and says so
    _check_report(json.loads((tmp_path / "r.json").read_text()), case, n_workers=2, transport="mpi")


def test_gantt_without_matplotlib_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from mbe_mpi.__main__ import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "case.json"), "--gantt", str(tmp_path / "g.png")])
    assert exc.value.code == 2
    assert "pip install matplotlib" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_gantt_with_a_broken_matplotlib_keeps_the_results_and_exits_2(tmp_path):
    """matplotlib found but failing to import: result and report are written, then one error line, exit 2."""
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('this matplotlib is broken')\n")
    case = _synthetic_case(tmp_path, n_waters=3, max_nbody=2, seconds=0.0)
    proc = run_cli([str(case), "-o", str(tmp_path / "out.json"), "--n-workers", "2", "--no-progress",
                    "--report", "r.json", "--gantt", "g.png"], cwd=tmp_path,
                   env={"PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 2, proc.stderr
    assert "pip install matplotlib" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "out.json").exists() and (tmp_path / "r.json").exists()
    assert not (tmp_path / "g.png").exists()
    assert "return_energy" in proc.stdout  # the summary is still shown
