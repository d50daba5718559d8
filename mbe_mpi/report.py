"""What rank 0 tells the user after a run: the summary table and where the time went."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from qcelemental import constants
from qcmanybody.models.v2 import ManyBodyResult

HARTREE_TO_KCAL = constants.conversion_factor("hartree", "kcal/mol")


def _fmt(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def summary(result: ManyBodyResult, output_path: str | None = None) -> str:
    """Per BSSE treatment and n-body level: total and interaction energy (Eh, kcal/mol); tasks; wall time."""
    props = result.properties.model_dump()
    keywords = result.input_data.specification.keywords
    nfrag = len(result.molecule.fragments)
    max_nbody = keywords.max_nbody or nfrag
    bsse_types = [bt.value if hasattr(bt, "value") else str(bt) for bt in keywords.bsse_type]
    for extra in ("nocp", "cp"):  # QCManyBody may add these for free with vmfc
        if extra not in bsse_types and any(k.startswith(f"{extra}_corrected_") for k in props):
            bsse_types.append(extra)
    stats = result.extras.get("mbe_mpi", {})

    lines = [
        f"Many-body expansion: {nfrag} fragments, {len(result.molecule.symbols)} atoms, "
        f"driver {result.input_data.specification.driver.value}, max n-body {max_nbody}",
        "",
        f"  {'BSSE':<5} {'n-body':>6} {'total energy [Eh]':>20} {'interaction [Eh]':>18} {'[kcal/mol]':>12}",
    ]
    for bt in bsse_types:
        for n in range(1, max_nbody + 1):
            total = props.get(f"{bt}_corrected_total_energy_through_{n}_body")
            interaction = props.get(f"{bt}_corrected_interaction_energy_through_{n}_body")
            if total is None and interaction is None:
                continue
            kcal = interaction * HARTREE_TO_KCAL if interaction is not None else None
            lines.append(
                f"  {bt:<5} {n:>6} {_fmt(total, 20, 10)} {_fmt(interaction, 18, 10)} {_fmt(kcal, 12, 4)}"
            )
    lines.append("")
    if stats:
        per_level = ", ".join(f"{level}-body {count}" for level, count in sorted(stats["tasks_per_level"].items()))
        lines.append(f"  QC tasks: {result.properties.calcinfo_nmbe} ({per_level})")
        reused = stats.get("from_checkpoint", 0) + stats.get("from_cache", 0)
        if reused:
            lines.append(f"  computed {stats['computed']}, reused {reused} "
                         f"({stats['from_checkpoint']} from the checkpoint, {stats['from_cache']} cache hits)")
        lines.append(
            f"  wall time {stats['wall_time']:.2f} s on {stats['n_workers']} {stats['transport']} workers; "
            f"QC time {stats['task_time']:.2f} s"
        )
    else:
        lines.append(f"  QC tasks: {result.properties.calcinfo_nmbe}")
    if stats.get("timing", {}).get("levels"):
        lines.append("")
        lines.extend(format_timing(stats["timing"]))
    lines.append(f"  return_energy = {result.properties.return_energy:.12f} Eh")
    if output_path:
        lines.append(f"  result written to {output_path}")
    return "\n".join(lines)


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
