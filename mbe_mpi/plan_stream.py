"""A plan built while its first level already runs: the master's first task within seconds at any size.

A 200-fragment 3-body counterpoise expansion has 2.7 M tasks; planning all of them (QCManyBody's
compute map, then one Task per label) takes 15-25 s on one core, and every worker would wait for
it. :class:`PlanStream` builds the same plan in a background thread instead, one n-body level's
compute list at a time (:func:`~mbe_mpi.plan.levelwise_compute_lists`), and the master hands out
the lowest level's tasks as they appear; the levels above open once planning has ended, exactly
as they would have (they wait for the lowest level to complete anyway).

Why a thread is safe here: it makes no MPI calls and touches no file or process; it only appends
to ``plan.tasks`` (atomic under the GIL) and publishes a count; the master reads what is
published. The process never forks while it runs (local workers come from a forkserver started
by fork+exec, MPI ranks fork nothing). The thread holds the GIL in slices of
``sys.getswitchinterval()`` (5 ms), so the master answers workers a few ms later at worst.

Why the numbers cannot change: the streamed tasks are the same tasks in the same order (``index``
is the position in ``iterate_molecules`` order either way). Once planning has ended, the thread
builds QCManyBody's own compute map (which ``analyze`` reads, so it is built once either way) and
checks the streamed labels against it one by one; a difference is an internal error raised before
anything is assembled, never a wrong result.
"""

from __future__ import annotations

import itertools
import threading

from qcmanybody.v2.computer import ManyBodyComputer

from .plan import (
    Plan,
    Task,
    collector_paused,
    group_by_level,
    iter_labels,
    levelwise_compute_lists,
    make_tasks,
    model_chemistries,
)

FIRST_LEVEL = 1  # every expansion has monomers; the lowest level is the one that streams


class PlanCancelled(Exception):
    """The run the plan was for has ended; the thread stops at its next publication."""


class PlanStream:
    """``plan`` grows in a background thread; :meth:`take` gives the master what is new.

    Publication is geometric (after 256 tasks, then each time the plan has grown by an eighth), so
    the first monomers are out at once and a million-task plan is taken in a few dozen pieces.
    """

    def __init__(self, computer: ManyBodyComputer):
        core = computer.qcmb_core
        self.plan = Plan(computer=computer, model_chemistries=model_chemistries(core), tasks=[])
        self._first: list[Task] = []  # the first level's tasks, in plan order
        self._published = 0  # of those, how many the master may take
        self._taken = 0
        self._later: dict[int, list[Task]] | None = None  # the levels above the first, once planned
        self._handed_over = False
        self._cancelled = False
        self.error: BaseException | None = None
        self._finished = threading.Event()  # planned and checked (or failed)
        self._thread = threading.Thread(target=self._build, name="mbe_mpi-plan", daemon=True)
        self._thread.start()

    # ---- the thread ----------------------------------------------------------------------------

    def _build(self) -> None:
        try:
            with collector_paused():
                tasks, first, later = self.plan.tasks, self._first, []
                threshold = 256
                core = self.plan.core
                for task in make_tasks(self.plan.computer, iter_labels(core, levelwise_compute_lists(core))):
                    tasks.append(task)
                    (first if len(task.real) == FIRST_LEVEL else later).append(task)
                    if len(tasks) >= threshold:
                        self._publish()
                        threshold = len(tasks) + max(256, len(tasks) // 8)
                self._publish()
                levels = group_by_level(later)
                del later
                self._check()
                self._later = levels
        except BaseException as exc:  # handed to the master by take() / wait()
            self.error = exc
        finally:
            self._finished.set()

    def _publish(self) -> None:
        if self._cancelled:
            raise PlanCancelled()
        self._published = len(self._first)

    def _check(self) -> None:
        """The streamed tasks against QCManyBody's own compute map (``iterate_molecules``' order)."""
        names = self.plan.model_chemistries
        expected = iter_labels(self.plan.core)
        for count, (task, label) in enumerate(itertools.zip_longest(self.plan.tasks, expected)):
            if task is None or label is None or (names[task.mc_index], task.real, task.basis) != label:
                raise RuntimeError(f"the plan built level by level differs from QCManyBody's compute map at task "
                                   f"{count} ({task} against {label})")
            if not count & 0xFFFF and self._cancelled:
                raise PlanCancelled()

    # ---- the master ----------------------------------------------------------------------------

    def take(self) -> tuple[list[Task], dict[int, list[Task]] | None]:
        """First-level tasks planned since the last call; and, once planning has ended, the other levels.

        The other levels are handed over once (dispatch order, as :func:`~mbe_mpi.plan.group_by_level`);
        after that, and after a failure of the thread (raised here), the stream is spent.
        """
        if self.error is not None:
            self._raise()
        published = self._published
        later = self._later
        new = self._first[self._taken:published]
        self._taken = published
        if later is None or self._handed_over:
            return new, None
        self._handed_over = True
        return new, later

    @property
    def planned(self) -> bool:
        """Every task is planned and checked (or the thread failed: :meth:`wait` says so)."""
        return self._finished.is_set()

    def wait(self) -> Plan:
        """The whole plan, checked (waits for the thread); raises what the thread raised."""
        self._finished.wait()
        if self.error is not None:
            self._raise()
        return self.plan

    def cancel(self) -> None:
        """The run has ended without its plan: the thread stops soon (its CPU is not wasted on nothing)."""
        self._cancelled = True

    def _raise(self) -> None:
        if isinstance(self.error, PlanCancelled):
            raise RuntimeError("the plan was cancelled") from None
        raise RuntimeError(f"planning failed: {type(self.error).__name__}: {self.error}") from self.error
