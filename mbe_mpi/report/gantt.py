"""The ``--gantt`` chart: worker rank x time, one bar per task coloured by n-body level."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .timing import TaskTiming

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


_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]
_WIDTH = 12.0  # inches


def _colour(level: int) -> str:
    return _PALETTE[(level - 1) % len(_PALETTE)]


@dataclasses.dataclass
class _Layout:
    """What the chart shows: the workers, the time window (zoomed onto the tasks when start-up dominates)."""

    timeline: list[TaskTiming]
    workers: list[int]
    n_workers: int
    wall_time: float
    first: float
    last: float
    zoomed: bool
    view: tuple[float, float]
    height: float

    @classmethod
    def of(cls, timeline: Sequence[TaskTiming], n_workers: int | None, wall_time: float | None) -> _Layout:
        timeline = list(timeline)
        workers = sorted({t.worker for t in timeline} | set(range(1, (n_workers or 0) + 1)))
        last = max((t.end for t in timeline), default=0.0)
        wall_time = wall_time if wall_time is not None else last
        x_max = max(wall_time, last, 1e-3)
        first = min((t.sent for t in timeline), default=0.0)
        zoomed = bool(timeline) and (last - first) < 0.5 * x_max  # start-up (or assembly) dominates
        margin = 0.03 * max(last - first, 1e-3)
        view = (max(first - margin, 0.0), last + margin) if zoomed else (0.0, x_max * 1.01)
        height = min(10.0, max(3.6, 2.0 + 0.24 * max(len(workers), 1)))
        return cls(timeline, workers, n_workers or len(workers), wall_time, first, last, zoomed, view, height)

    @property
    def rows(self) -> int:
        return max(len(self.workers), 1)

    @property
    def view_width(self) -> float:
        return self.view[1] - self.view[0]


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
    except ImportError as exc:
        raise ImportError(MATPLOTLIB_MISSING) from exc
    layout = _Layout.of(timeline, n_workers, wall_time)
    fig = Figure(figsize=(_WIDTH, layout.height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    spans = level_spans(layout.timeline)
    _draw_spans(ax, layout, spans, startup)
    _draw_bars(ax, layout, dpi)
    _draw_axes(ax, layout, startup)
    _draw_title_and_legend(ax, layout, spans, startup, transport)
    fig.savefig(path, dpi=dpi)


def _draw_spans(ax: Any, layout: _Layout, spans: dict[int, tuple[float, float]], startup: float | None) -> None:
    """Level spans: light shading in the level's colour, dashed lines where each began and ended."""
    for level, (begin, finish) in spans.items():
        ax.axvspan(begin, finish, color=_colour(level), alpha=0.08, lw=0, zorder=0)
        for x in (begin, finish):
            ax.axvline(x, color="0.35", ls="--", lw=0.8, zorder=1)
        if finish - begin > 0.06 * layout.view_width:
            ax.text((begin + finish) / 2, 1.005, f"{level}-body", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=9, color=_colour(level))
    if startup and not layout.zoomed:
        ax.axvspan(0, startup, color="0.85", alpha=0.5, lw=0, zorder=0)
        if startup > 0.06 * layout.view_width:
            ax.text(startup / 2, 1.005, "start-up", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=9, color="0.4")


def _draw_bars(ax: Any, layout: _Layout, dpi: int) -> None:
    """One broken_barh per worker (fast for thousands of tasks); task numbers where there is room."""
    by_worker: dict[int, list[TaskTiming]] = {}
    for t in layout.timeline:
        by_worker.setdefault(t.worker, []).append(t)
    tasks_per_row = len(layout.timeline) / layout.rows
    px_per_second = _WIDTH * 0.85 * dpi / layout.view_width
    row_px = layout.height * 0.7 * dpi / layout.rows
    # white gaps between neighbouring tasks, while bars stay wide and tall enough to show them
    edge: dict[str, Any] = {}
    if row_px >= 8 and tasks_per_row <= 100:
        edge = {"edgecolor": "white", "linewidth": 0.6 if tasks_per_row <= 30 else 0.3}
    bar_height = 0.8 if layout.rows <= 16 else 0.9
    for worker, items in by_worker.items():
        ax.broken_barh([(t.start, max(t.duration, 0.0)) for t in items], (worker - bar_height / 2, bar_height),
                       facecolors=[_colour(t.level) for t in items], zorder=2, **edge)
    if len(layout.timeline) <= 60 and row_px >= 14:  # few tasks: name them, where the bar is wide enough
        for t in layout.timeline:
            if t.duration * px_per_second >= 26:
                ax.text(t.start + t.duration / 2, t.worker, f"#{t.index}", ha="center", va="center",
                        fontsize=8, color="white", zorder=3)


def _draw_axes(ax: Any, layout: _Layout, startup: float | None) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(*layout.view)
    ax.set_ylim(min(layout.workers, default=1) - 0.7, max(layout.workers, default=1) + 0.7)
    ax.invert_yaxis()  # rank 1 on top
    if layout.rows <= 24:
        ax.set_yticks(layout.workers)
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))
    xlabel = "seconds since start"
    if layout.zoomed:
        ready = f"; start-up {startup:.2f} s" if startup is not None else ""
        xlabel += (f"  (zoomed onto the QC tasks, {layout.first:.2f} s to {layout.last:.2f} s "
                   f"of {layout.wall_time:.2f} s{ready})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("worker rank")
    ax.grid(axis="x", color="0.9", lw=0.6, zorder=0)
    ax.set_axisbelow(True)


def _draw_title_and_legend(ax: Any, layout: _Layout, spans: dict[int, tuple[float, float]],
                           startup: float | None, transport: str | None) -> None:
    from matplotlib.patches import Patch

    busy = sum(t.duration for t in layout.timeline)
    n_workers, wall_time = layout.n_workers, layout.wall_time
    utilisation = busy / (n_workers * wall_time) if n_workers and wall_time > 0 else 0.0
    where = f"{n_workers} {transport} workers" if transport else f"{n_workers} workers"
    ax.set_title(f"mbe_mpi: {len(layout.timeline)} tasks on {where}, wall time {wall_time:.2f} s, "
                 f"utilisation {utilisation:.0%}", pad=18 if spans or startup else 6)
    if not layout.timeline:
        ax.text(0.5, 0.5, "no QC task was computed in this run", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    handles = [Patch(facecolor=_colour(level), label=f"{level}-body") for level in spans]
    if startup and not layout.zoomed and startup > 0.01 * layout.view_width:
        handles.append(Patch(facecolor="0.85", label="start-up"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False, fontsize=9,
                  borderaxespad=0.0)
