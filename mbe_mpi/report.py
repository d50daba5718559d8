"""What rank 0 tells the user after a run: the summary table and where the time went."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
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
    if stats.get("lost_workers"):
        lines.append(f"  workers lost during the run: {', '.join(map(str, stats['lost_workers']))} "
                     "(their tasks ran on the others)")
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


# --- the --report file -------------------------------------------------------------------------

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
    (results from a checkpoint or the cache were not run).
    """
    from . import __version__

    timing = stats.get("timing") or {}
    run = {key: stats[key] for key in RUN_INFO_KEYS if key in stats}
    run["mbe_mpi_version"] = __version__
    return {**timing, "run": run, "timeline": timeline_records(timeline)}


def write_report(path: str | Path, stats: dict, timeline: Sequence[TaskTiming]) -> None:
    """Write :func:`run_report` as JSON to ``path`` (indented; one line per timeline entry)."""
    document = run_report(stats, timeline)
    entries = document.pop("timeline")
    head = json.dumps(document, indent=1)
    body = ",\n".join(f"  {json.dumps(entry)}" for entry in entries)
    timeline_json = f"[\n{body}\n ]" if entries else "[]"
    Path(path).write_text(f'{head[:-2]},\n "timeline": {timeline_json}\n}}\n')


# --- the --gantt chart -------------------------------------------------------------------------

MATPLOTLIB_MISSING = "--gantt needs matplotlib, which is not installed: pip install matplotlib"


def matplotlib_available() -> bool:
    """Whether matplotlib can be found, without importing it (cheap; used to reject --gantt up front)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def level_spans(timeline: Sequence[TaskTiming]) -> dict[int, tuple[float, float]]:
    """Per n-body level: (when its first task was sent, when its last task ended), seconds since start."""
    spans: dict[int, tuple[float, float]] = {}
    for t in timeline:
        begin, finish = spans.get(t.level, (t.sent, t.end))
        spans[t.level] = (min(begin, t.sent), max(finish, t.end))
    return dict(sorted(spans.items()))


def gantt_chart(timeline: Sequence[TaskTiming], path: str | Path, *, n_workers: int | None = None,
                wall_time: float | None = None, startup: float | None = None, transport: str | None = None,
                dpi: int = 120) -> None:
    """Draw workers x time as a PNG (or any format matplotlib knows by ``path``'s suffix).

    One horizontal bar per task from its start to its end, coloured by n-body level; each level's
    span (first task sent to last task done) is shaded and bounded by dashed lines. Uses the Agg
    canvas directly (no pyplot, no display, no global backend switch). Raises ImportError with
    :data:`MATPLOTLIB_MISSING` when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise ImportError(MATPLOTLIB_MISSING) from exc

    timeline = list(timeline)
    workers = sorted({t.worker for t in timeline} | set(range(1, (n_workers or 0) + 1)))
    n_workers = n_workers or len(workers)
    last = max((t.end for t in timeline), default=0.0)
    wall_time = wall_time if wall_time is not None else last
    x_max = max(wall_time, last, 1e-3)
    busy = sum(t.duration for t in timeline)
    utilisation = busy / (n_workers * wall_time) if n_workers and wall_time > 0 else 0.0
    spans = level_spans(timeline)
    first = min((t.sent for t in timeline), default=0.0)
    zoomed = bool(timeline) and (last - first) < 0.5 * x_max  # start-up (or assembly) dominates
    view = (max(first - 0.03 * max(last - first, 1e-3), 0.0), last + 0.03 * max(last - first, 1e-3)) \
        if zoomed else (0.0, x_max * 1.01)
    view_width = view[1] - view[0]

    n_rows = max(len(workers), 1)
    width = 12.0
    height = min(10.0, max(3.6, 2.0 + 0.24 * n_rows))
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]

    def colour(level: int) -> str:
        return palette[(level - 1) % len(palette)]

    # level spans: light shading in the level's colour, dashed lines where each began and ended
    for level, (begin, finish) in spans.items():
        ax.axvspan(begin, finish, color=colour(level), alpha=0.08, lw=0, zorder=0)
        for x in (begin, finish):
            ax.axvline(x, color="0.35", ls="--", lw=0.8, zorder=1)
        if finish - begin > 0.06 * view_width:
            ax.text((begin + finish) / 2, 1.005, f"{level}-body", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=9, color=colour(level))
    if startup and not zoomed:
        ax.axvspan(0, startup, color="0.85", alpha=0.5, lw=0, zorder=0)
        if startup > 0.06 * view_width:
            ax.text(startup / 2, 1.005, "start-up", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=9, color="0.4")

    # the bars: one broken_barh per worker (fast for thousands of tasks)
    by_worker: dict[int, list[TaskTiming]] = {}
    for t in timeline:
        by_worker.setdefault(t.worker, []).append(t)
    tasks_per_row = len(timeline) / n_rows
    px_per_second = width * 0.85 * dpi / view_width
    row_px = height * 0.7 * dpi / n_rows
    # white gaps between neighbouring tasks, while bars stay wide and tall enough to show them
    edge: dict[str, Any] = {}
    if row_px >= 8 and tasks_per_row <= 100:
        edge = {"edgecolor": "white", "linewidth": 0.6 if tasks_per_row <= 30 else 0.3}
    bar_height = 0.8 if n_rows <= 16 else 0.9
    for worker, items in by_worker.items():
        ax.broken_barh([(t.start, max(t.duration, 0.0)) for t in items], (worker - bar_height / 2, bar_height),
                       facecolors=[colour(t.level) for t in items], zorder=2, **edge)
    if len(timeline) <= 60 and row_px >= 14:  # few tasks: name them, where the bar is wide enough
        for t in timeline:
            if t.duration * px_per_second >= 26:
                ax.text(t.start + t.duration / 2, t.worker, f"#{t.index}", ha="center", va="center",
                        fontsize=8, color="white", zorder=3)

    ax.set_xlim(*view)
    ax.set_ylim(min(workers, default=1) - 0.7, max(workers, default=1) + 0.7)
    ax.invert_yaxis()  # rank 1 on top
    if n_rows <= 24:
        ax.set_yticks(workers)
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))
    xlabel = "seconds since start"
    if zoomed:
        ready = f"; start-up {startup:.2f} s" if startup is not None else ""
        xlabel += f"  (zoomed onto the QC tasks, {first:.2f} s to {last:.2f} s of {wall_time:.2f} s{ready})"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("worker rank")
    ax.grid(axis="x", color="0.9", lw=0.6, zorder=0)
    ax.set_axisbelow(True)

    where = f"{n_workers} {transport} workers" if transport else f"{n_workers} workers"
    ax.set_title(f"mbe_mpi: {len(timeline)} tasks on {where}, wall time {wall_time:.2f} s, "
                 f"utilisation {utilisation:.0%}", pad=18 if spans or startup else 6)
    if not timeline:
        ax.text(0.5, 0.5, "no QC task was computed in this run", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    handles = [Patch(facecolor=colour(level), label=f"{level}-body") for level in spans]
    if startup and not zoomed and startup > 0.01 * view_width:
        handles.append(Patch(facecolor="0.85", label="start-up"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False, fontsize=9,
                  borderaxespad=0.0)
    fig.savefig(path, dpi=dpi)
