"""Where the time went: per-task timings, the per-level report, and the ``--report`` file."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class TaskTiming:
    """When one task ran, in seconds since the run started (master clock).

    ``start`` is inferred as the result's arrival minus the worker-measured run time: worker
    clocks on other nodes are not comparable with the master's, the durations are.
    """

    index: int
    level: int
    worker: int
    sent: float
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    @classmethod
    def from_completion(cls, done: Any, origin: float) -> TaskTiming:
        end = done.received - origin
        start = max(done.sent - origin, end - done.message.wall_time)
        return cls(done.task.index, done.task.level, done.worker, done.sent - origin, start, end)


def timing_report(timeline: Sequence[TaskTiming], n_workers: int, wall_time: float, master_cpu: float,
                  startup: float = 0.0) -> dict:
    """Where the time went, per n-body level: tasks, wall, task times, utilisation, idle at the barrier.

    Per level, ``utilisation = sum(task times) / (workers * level wall)``, so
    utilisation x workers x wall equals the summed task time by construction; ``barrier_idle`` is
    the worker-seconds spent waiting for the level's last task once a worker had nothing left to do.
    ``startup`` is when the last worker reported READY; ``master_cpu`` covers the scheduling loop.
    """
    levels: dict[int, list[TaskTiming]] = {}
    for item in timeline:
        levels.setdefault(item.level, []).append(item)
    per_level = {}
    for level in sorted(levels):
        items = levels[level]
        begin = min(t.sent for t in items)
        finish = max(t.end for t in items)
        wall = max(finish - begin, 1e-12)
        busy = sum(t.duration for t in items)
        last_end: dict[int, float] = {}
        for t in items:
            last_end[t.worker] = max(last_end.get(t.worker, begin), t.end)
        idle_workers = n_workers - len(last_end)  # workers that got no task of this level idle throughout
        barrier_idle = sum(finish - end for end in last_end.values()) + idle_workers * wall
        per_level[str(level)] = {
            "tasks": len(items),
            "wall_time": wall,
            "task_time_sum": busy,
            "task_time_mean": busy / len(items),
            "task_time_max": max(t.duration for t in items),
            "utilisation": busy / (n_workers * wall),
            "barrier_idle": barrier_idle,
        }
    total_busy = sum(t.duration for t in timeline)
    return {
        "n_workers": n_workers,
        "wall_time": wall_time,
        "startup": startup,
        "task_time_sum": total_busy,
        "utilisation": total_busy / (n_workers * wall_time) if wall_time > 0 else 0.0,
        "master_cpu_time": master_cpu,
        "master_cpu_per_task": master_cpu / len(timeline) if timeline else 0.0,
        "levels": per_level,
    }


def format_timing(report: dict) -> list[str]:
    """The per-level timing table of the summary."""
    lines = [f"  {'level':>5} {'tasks':>6} {'wall [s]':>9} {'mean [s]':>9} {'max [s]':>9} {'util':>6} "
             f"{'barrier idle [s]':>17}"]
    for level, row in report["levels"].items():
        lines.append(
            f"  {level:>5} {row['tasks']:>6} {row['wall_time']:>9.2f} {row['task_time_mean']:>9.3f} "
            f"{row['task_time_max']:>9.3f} {row['utilisation']:>6.0%} {row['barrier_idle']:>17.2f}"
        )
    lines.append(f"  workers ready after {report['startup']:.2f} s; master CPU {report['master_cpu_time']:.3f} s "
                 f"({1e6 * report['master_cpu_per_task']:.0f} us per task); overall utilisation "
                 f"{report['utilisation']:.0%} of {report['n_workers']} workers")
    return lines


RUN_INFO_KEYS = ("transport", "n_workers", "wall_time", "computed", "from_checkpoint", "from_cache",
                 "tasks_per_level", "task_time")


def timeline_records(timeline: Sequence[TaskTiming]) -> list[dict]:
    """The per-task timeline as plain dicts (index, level, worker, sent, start, end), in order of start."""
    return [dataclasses.asdict(t) for t in sorted(timeline, key=lambda t: (t.start, t.index))]


def run_report(stats: dict, timeline: Sequence[TaskTiming]) -> dict:
    """What ``--report`` writes: the timing report plus ``run`` (run info) and ``timeline`` (one entry per task).

    ``stats`` is the run's ``result.extras["mbe_mpi"]``; its ``timing`` is :func:`timing_report`'s
    dict, whose keys stay at the top level so that the file reads like the extras' ``timing``.
    Times are seconds since the run started; only tasks computed in this run are in the timeline
    (results from a checkpoint or the cache were not run). A screened run adds ``screening`` (the
    extras' report: n-mers per level kept and skipped, QC tasks against the full expansion).
    """
    from ..version import __version__

    timing = stats.get("timing") or {}
    run = {key: stats[key] for key in RUN_INFO_KEYS if key in stats}
    run["mbe_mpi_version"] = __version__
    document = {**timing, "run": run}
    if stats.get("screening"):
        document["screening"] = stats["screening"]
    return {**document, "timeline": timeline_records(timeline)}


def write_report(path: str | Path, stats: dict, timeline: Sequence[TaskTiming]) -> None:
    """Write :func:`run_report` as JSON to ``path`` (indented; one line per timeline entry)."""
    document = run_report(stats, timeline)
    entries = document.pop("timeline")
    head = json.dumps(document, indent=1)
    body = ",\n".join(f"  {json.dumps(entry)}" for entry in entries)
    timeline_json = f"[\n{body}\n ]" if entries else "[]"
    Path(path).write_text(f'{head[:-2]},\n "timeline": {timeline_json}\n}}\n')
