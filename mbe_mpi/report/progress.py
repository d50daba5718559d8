"""Progress with ETA on rank 0: a live bar per n-body level on a terminal, plain lines in batch logs.

Workers say nothing. The ETA divides the remaining *estimated* cost (the plan's cost model) by the
rate at which estimated cost has been getting done, so one slow trimer level is not predicted from
fast monomers alone.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

from ..master import Completion, RunObserver
from ..plan import TASK_COST, TASK_REAL, Task


def _is_terminal(path: str) -> bool:
    return path.startswith(("/dev/pts/", "/dev/tty")) and path != "/dev/tty"


def behind_a_terminal(stream: TextIO, launched_by_mpi: bool) -> bool:
    """Whether what we write ends up on a terminal.

    Under ``mpiexec`` rank 0 writes into the launcher's pipes, never a terminal, although the
    launcher itself may be writing to one (hydra forwards the bytes as they come). So, under MPI,
    look up the process ancestry (Linux /proc) for a launcher whose stderr is a terminal.
    """
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        return False
    if not launched_by_mpi:
        return False
    pid = os.getppid()
    for _ in range(6):  # rank -> hydra proxy -> mpiexec (-> shell); stop at the first tty or at init
        if pid <= 1:
            return False
        try:
            if _is_terminal(os.readlink(f"/proc/{pid}/fd/2")):
                return True
            with open(f"/proc/{pid}/stat") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


class Progress(RunObserver):
    """Counts per level (done, running, failed, reused) and renders them; driven by the master's callbacks."""

    def __init__(self, tasks: list[Task], reused: set[int], n_workers: int, *, stream: TextIO | None = None,
                 tty: bool | None = None, interval: float = 30.0, refresh: float = 0.2,
                 launched_by_mpi: bool = False, planning: bool = False):
        self.stream = stream or sys.stderr
        self.planning = planning  # the plan is still being built: totals grow (planned()), no ETA yet
        self.tty = behind_a_terminal(self.stream, launched_by_mpi) if tty is None else tty
        self.interval = interval if not self.tty else refresh
        self.n_workers = n_workers
        self.total: dict[int, int] = {}
        self.done: dict[int, int] = {}
        self.reused: dict[int, int] = {}
        self.running: dict[int, int] = {}
        self.failed: dict[int, int] = {}
        self.cost_left = 0.0
        self.cost_done = 0.0
        # one C-level pass per count: a plan may hold millions of tasks, and this runs before the first dispatch
        self.total = dict(collections.Counter(map(len, map(TASK_REAL, tasks))))  # levels in order of first appearance
        for counter in (self.done, self.reused, self.running, self.failed):
            counter.update(dict.fromkeys(self.total, 0))
        for task in tasks if reused else ():
            if task.index in reused:
                self.reused[task.level] += 1
                self.done[task.level] += 1
        self.cost_left = sum(task.cost for task in tasks if task.index not in reused) if reused else sum(
            map(TASK_COST, tasks))
        self._reused = reused
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._lines_drawn = 0
        self._first_dispatch: float | None = None
        self._last_lines: list[str] = []

    def planned(self, levels: Mapping[int, Sequence[Task]], complete: bool) -> None:
        for level, tasks in levels.items():
            self.total[level] = self.total.get(level, 0) + len(tasks)
            for counter in (self.done, self.reused, self.running, self.failed):
                counter.setdefault(level, 0)
            self.cost_left += sum(map(TASK_COST, tasks))
        self.planning = not complete
        self._maybe_draw(force=complete)

    def withdraw(self, tasks: list[Task]) -> None:
        """Tasks counted in the totals that will not run after all (a screened level kept fewer n-mers)."""
        for task in tasks:
            level = task.level
            self.total[level] -= 1
            if task.index in self._reused:
                self.reused[level] -= 1
                self.done[level] -= 1
            else:
                self.cost_left -= task.cost
        self._maybe_draw(force=True)

    def dispatched(self, worker: int, task: Task) -> None:
        if self._first_dispatch is None:  # rates count from the first task, not from worker start-up
            self._first_dispatch = time.monotonic()
        self.running[task.level] += 1
        self._maybe_draw()

    def requeued(self, task: Task) -> None:
        """A dispatched task came back unrun (stolen for another worker, or its worker was lost)."""
        self.running[task.level] -= 1

    def completed(self, done: Completion) -> None:
        level = done.task.level
        self.running[level] -= 1
        if done.message.ok:
            self.done[level] += 1
        elif done.final:
            self.failed[level] += 1
        else:  # a failed attempt: the retry counts as running again when it is dispatched
            self._maybe_draw()
            return
        self.cost_left -= done.task.cost
        self.cost_done += done.task.cost
        level_finished = self.done[level] + self.failed[level] == self.total[level]
        self._maybe_draw(force=level_finished)

    def eta(self) -> float | None:
        if self._first_dispatch is None or self.planning:
            return None
        elapsed = time.monotonic() - self._first_dispatch
        if self.cost_done <= 0 or elapsed <= 0:
            return None
        return self.cost_left * elapsed / self.cost_done

    def current_level(self) -> int:
        """The lowest level with work left (the open one, in level-barrier order)."""
        for level in sorted(self.total):
            if self.done[level] + self.failed[level] < self.total[level]:
                return level
        return max(self.total, default=0)

    def lines(self) -> list[str]:
        if not self.tty:  # batch logs: one line per report
            level = self.current_level()
            total_done = sum(self.done.values())
            return [
                f"mbe_mpi: {level}-body {self.done[level]}/{self.total[level]} done; all levels "
                f"{total_done}/{sum(self.total.values())} done, {sum(self.running.values())} running, "
                f"{sum(self.failed.values())} failed, {sum(self.reused.values())} cached; "
                f"elapsed {_duration(time.monotonic() - self.started)}, {self._eta_text()}"
            ]
        out = []
        for level in sorted(self.total):
            total, done = self.total[level], self.done[level]
            name = f"{level}-body"
            counts = f"{done:>{len(str(total))}}/{total}"
            extra = f"running {self.running[level]}, failed {self.failed[level]}, cached {self.reused[level]}"
            width = 30
            filled = int(width * (done + self.failed[level]) / total) if total else width
            out.append(f"{name:>7} [{'#' * filled}{'.' * (width - filled)}] {counts}  {extra}")
        out.append(f"{'':>7} elapsed {_duration(time.monotonic() - self.started)}, {self._eta_text()}")
        return out

    def _eta_text(self) -> str:
        return f"ETA {_duration(self.eta())}" + (" (the levels above are being planned)" if self.planning else "")

    def _maybe_draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_draw >= self.interval:
            self._last_draw = now
            self.draw()

    def draw(self) -> None:
        lines = self.lines()
        if self.tty:
            # move the cursor back over the previous drawing and overwrite it in place
            up = f"\x1b[{self._lines_drawn}F" if self._lines_drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._lines_drawn = len(lines)
        elif lines != self._last_lines:  # a batch log need not repeat itself
            self.stream.write("\n".join(lines) + "\n")
        self._last_lines = lines
        self.stream.flush()

    def close(self) -> None:
        self.draw()
