"""The timing report, the --report file and the Gantt chart, on hand-made timelines (no QC, no processes)."""

from __future__ import annotations

import json
import random
import sys

import pytest

from mbe_mpi.report import (
    MATPLOTLIB_MISSING,
    TaskTiming,
    format_timing,
    gantt_chart,
    level_spans,
    run_report,
    timing_report,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _simulated(n_workers: int, counts: tuple[int, ...], seed: int = 0, startup: float = 1.0,
               latency: float = 0.002) -> tuple[list[TaskTiming], float]:
    """A level-by-level run: each task goes to the worker that is free first; returns (timeline, wall time)."""
    rng = random.Random(seed)
    timeline: list[TaskTiming] = []
    level_start = startup
    for level, count in enumerate(counts, start=1):
        free = {worker: level_start for worker in range(1, n_workers + 1)}
        for _ in range(count):
            worker = min(free, key=lambda w: (free[w], w))
            sent = free[worker]
            start = sent + latency
            end = start + rng.uniform(0.2, 1.0) * level
            timeline.append(TaskTiming(len(timeline), level, worker, sent, start, end))
            free[worker] = end
        level_start = max(t.end for t in timeline if t.level == level)
    return timeline, level_start + 0.3


def _stats(timeline, n_workers, wall_time, master_cpu=0.25, startup=1.0):
    levels = sorted({t.level for t in timeline})
    return {
        "transport": "local",
        "n_workers": n_workers,
        "wall_time": wall_time,
        "tasks_per_level": {level: sum(t.level == level for t in timeline) for level in levels},
        "task_time": sum(t.duration for t in timeline),
        "computed": len(timeline),
        "from_checkpoint": 0,
        "from_cache": 0,
        "timing": timing_report(timeline, n_workers, wall_time, master_cpu, startup=startup),
    }


@pytest.mark.parametrize("seed", range(5))
def test_utilisation_times_workers_times_wall_is_the_summed_task_time(seed):
    rng = random.Random(seed)
    n_workers = rng.randint(1, 9)
    counts = tuple(rng.randint(1, 30) for _ in range(rng.randint(1, 4)))
    timeline, wall = _simulated(n_workers, counts, seed=seed)
    report = timing_report(timeline, n_workers, wall, master_cpu=0.1)
    assert [int(level) for level in report["levels"]] == list(range(1, len(counts) + 1))
    for level, row in report["levels"].items():
        items = [t for t in timeline if t.level == int(level)]
        busy = sum(t.duration for t in items)
        assert row["tasks"] == len(items)
        assert row["utilisation"] * n_workers * row["wall_time"] == pytest.approx(busy, abs=1e-9)
        assert row["task_time_sum"] == pytest.approx(busy, abs=1e-9)
        assert row["task_time_mean"] == pytest.approx(busy / len(items), abs=1e-12)
        assert row["task_time_max"] == pytest.approx(max(t.duration for t in items), abs=1e-12)
        assert 0 < row["utilisation"] <= 1 + 1e-12
        # each level's wall runs from its first task sent to its last task done
        assert row["wall_time"] == pytest.approx(max(t.end for t in items) - min(t.sent for t in items), abs=1e-12)
    total = sum(t.duration for t in timeline)
    assert report["task_time_sum"] == pytest.approx(total, abs=1e-9)
    assert report["utilisation"] * n_workers * wall == pytest.approx(total, abs=1e-9)


def test_barrier_idle_when_one_worker_finishes_three_seconds_early():
    timeline = [
        TaskTiming(0, 1, 1, sent=0.0, start=0.0, end=5.0),
        TaskTiming(1, 1, 2, sent=0.0, start=0.0, end=2.0),
    ]
    row = timing_report(timeline, n_workers=2, wall_time=6.0, master_cpu=0.0)["levels"]["1"]
    assert row["wall_time"] == pytest.approx(5.0)
    assert row["barrier_idle"] == pytest.approx(3.0)
    assert row["utilisation"] == pytest.approx(7.0 / 10.0)


def test_barrier_idle_counts_only_the_wait_after_a_workers_last_task():
    timeline = [  # worker 2 runs two tasks and ends 1 s before worker 1's single long one
        TaskTiming(0, 1, 1, sent=0.0, start=0.1, end=4.0),
        TaskTiming(1, 1, 2, sent=0.0, start=0.1, end=1.5),
        TaskTiming(2, 1, 2, sent=1.5, start=1.6, end=3.0),
    ]
    row = timing_report(timeline, n_workers=2, wall_time=4.0, master_cpu=0.0)["levels"]["1"]
    assert row["barrier_idle"] == pytest.approx(1.0)


def test_a_worker_without_a_task_in_a_level_is_idle_for_the_whole_level():
    timeline = [
        TaskTiming(0, 1, 1, sent=1.0, start=1.0, end=3.0),
        TaskTiming(1, 1, 2, sent=1.0, start=1.0, end=3.0),
        TaskTiming(2, 1, 3, sent=1.0, start=1.0, end=3.0),
        TaskTiming(3, 2, 2, sent=3.0, start=3.5, end=7.0),  # the only 2-body task: workers 1 and 3 wait 4 s
    ]
    report = timing_report(timeline, n_workers=3, wall_time=8.0, master_cpu=0.0)
    one, two = report["levels"]["1"], report["levels"]["2"]
    assert one["barrier_idle"] == pytest.approx(0.0)
    assert one["utilisation"] == pytest.approx(1.0)
    assert two["wall_time"] == pytest.approx(4.0)
    assert two["barrier_idle"] == pytest.approx(2 * 4.0)
    assert two["utilisation"] == pytest.approx(3.5 / (3 * 4.0))


def test_master_cpu_per_task_and_run_totals():
    timeline, wall = _simulated(3, (4, 6))
    report = timing_report(timeline, 3, wall, master_cpu=0.5, startup=1.25)
    assert report["master_cpu_time"] == 0.5
    assert report["master_cpu_per_task"] == pytest.approx(0.5 / 10)
    assert report["startup"] == 1.25
    assert report["n_workers"] == 3 and report["wall_time"] == wall
    empty = timing_report([], 3, 2.0, master_cpu=0.5)
    assert empty["master_cpu_per_task"] == 0.0 and empty["levels"] == {} and empty["utilisation"] == 0.0


def test_format_timing_has_one_row_per_level():
    timeline, wall = _simulated(4, (5, 10, 10))
    report = timing_report(timeline, 4, wall, master_cpu=0.2)
    lines = format_timing(report)
    assert "barrier idle" in lines[0] and "util" in lines[0]
    rows = [line.split() for line in lines[1:] if line.split()[0].isdigit()]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert [int(row[1]) for row in rows] == [5, 10, 10]
    assert len(lines) == 1 + 3 + 1  # header, one row per level, the closing line
    assert "master CPU" in lines[-1]


def test_level_spans_are_first_sent_to_last_end():
    timeline, _ = _simulated(2, (3, 4))
    spans = level_spans(timeline)
    assert list(spans) == [1, 2]
    for level, (begin, finish) in spans.items():
        items = [t for t in timeline if t.level == level]
        assert begin == min(t.sent for t in items) and finish == max(t.end for t in items)


def test_report_file_has_timing_run_info_and_the_timeline(tmp_path):
    timeline, wall = _simulated(3, (3, 3, 1))
    stats = _stats(timeline, 3, wall)
    path = tmp_path / "report.json"
    write_report(path, stats, list(reversed(timeline)))
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(run_report(stats, timeline)))
    for key in ("n_workers", "wall_time", "startup", "task_time_sum", "utilisation", "master_cpu_time",
                "master_cpu_per_task", "levels"):
        assert data[key] == stats["timing"][key]
    assert data["run"]["transport"] == "local"
    assert {"computed", "from_checkpoint", "from_cache", "wall_time", "n_workers"} <= set(data["run"])
    assert sorted(entry["index"] for entry in data["timeline"]) == list(range(7))
    assert set(data["timeline"][0]) == {"index", "level", "worker", "sent", "start", "end"}
    starts = [entry["start"] for entry in data["timeline"]]
    assert starts == sorted(starts)
    by_index = {t.index: t for t in timeline}
    for entry in data["timeline"]:
        assert TaskTiming(**entry) == by_index[entry["index"]]


def test_report_file_without_tasks(tmp_path):
    stats = _stats([], 2, 3.0)
    write_report(tmp_path / "r.json", stats, [])
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["timeline"] == [] and data["levels"] == {}


def _assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes


def test_gantt_chart_small_run(tmp_path):
    pytest.importorskip("matplotlib")
    timeline, wall = _simulated(2, (3, 3, 1))
    path = tmp_path / "small.png"
    gantt_chart(timeline, path, n_workers=2, wall_time=wall, startup=1.0, transport="local")
    _assert_png(path)


def test_gantt_chart_zooms_when_start_up_dominates(tmp_path):
    pytest.importorskip("matplotlib")
    timeline, wall = _simulated(2, (3, 3, 1), startup=60.0)
    path = tmp_path / "zoomed.png"
    gantt_chart(timeline, path, n_workers=2, wall_time=wall, startup=60.0)
    _assert_png(path)


def test_gantt_chart_2000_tasks_on_64_workers(tmp_path):
    pytest.importorskip("matplotlib")
    timeline, wall = _simulated(64, (40, 600, 1360), seed=3)
    assert len(timeline) == 2000
    path = tmp_path / "large.png"
    gantt_chart(timeline, path, n_workers=64, wall_time=wall, startup=1.0, transport="mpi")
    _assert_png(path, min_bytes=20_000)


def test_gantt_chart_without_tasks_and_with_an_idle_worker(tmp_path):
    pytest.importorskip("matplotlib")
    gantt_chart([], tmp_path / "empty.png", n_workers=3, wall_time=2.0)
    _assert_png(tmp_path / "empty.png", min_bytes=2_000)
    timeline = [TaskTiming(0, 1, 1, 0.5, 0.5, 1.5)]  # worker 2 never got a task: still a row
    gantt_chart(timeline, tmp_path / "one.png", n_workers=2, wall_time=2.0)
    _assert_png(tmp_path / "one.png", min_bytes=2_000)


def test_gantt_chart_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg",
                 "matplotlib.patches", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: import raises ImportError
    with pytest.raises(ImportError, match="pip install matplotlib"):
        gantt_chart([TaskTiming(0, 1, 1, 0.0, 0.0, 1.0)], tmp_path / "g.png")
    assert "pip install matplotlib" in MATPLOTLIB_MISSING
    assert not (tmp_path / "g.png").exists()


def test_unit_factors_written_out_equal_qcelementals():
    from qcelemental import constants

    from mbe_mpi import units
    from mbe_mpi.inputs.molecule import ANGSTROM_TO_BOHR
    from mbe_mpi.inputs.validate import BOHR_TO_ANGSTROM
    from mbe_mpi.report.summary import HARTREE_TO_KCAL

    assert HARTREE_TO_KCAL == constants.conversion_factor("hartree", "kcal/mol")
    assert ANGSTROM_TO_BOHR == constants.conversion_factor("angstrom", "bohr")
    assert BOHR_TO_ANGSTROM == constants.conversion_factor("bohr", "angstrom")
    assert units.HARTREE_TO_KCAL == constants.conversion_factor("hartree", "kcal/mol")
    assert units.BOHR_TO_ANGSTROM == constants.conversion_factor("bohr", "angstrom")
