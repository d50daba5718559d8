"""What the master tells the rest of a run as it goes: one observer interface, many listeners.

The checkpoint journal, the progress display and the timing record each implement the hooks they
need (every hook defaults to doing nothing); :class:`Observers` hands each event to all of them in
order -- the journal first, so a result is on disk before anything else happens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from ..plan import Task
from ..protocol import ResultMessage


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """One task's result as the master saw it: who ran it, when it was sent and answered (perf_counter)."""

    task: Task
    message: ResultMessage
    worker: int
    sent: float
    received: float
    final: bool = True  # False: a failed attempt that will be retried


class RunObserver:
    """Hooks the master calls; subclasses override what they need."""

    def worker_ready(self, worker: int, at: float) -> None:
        """``worker`` reported READY at ``at`` (perf_counter)."""

    def planned(self, levels: Mapping[int, Sequence[Task]], complete: bool) -> None:
        """More tasks of a plan still being built are known, by level; ``complete``: that was the last of them.

        (:mod:`mbe_mpi.plan_stream`; a plan built before the run does not call it.)
        """

    def dispatched(self, worker: int, task: Task) -> None:
        """``task`` was sent to ``worker``."""

    def completed(self, done: Completion) -> None:
        """A result (or a failed attempt) arrived."""

    def requeued(self, task: Task) -> None:
        """A dispatched task came back unrun (stolen for another worker, or its worker was lost)."""

    def worker_lost(self, worker: int, why: str) -> None:
        """``worker`` is declared lost; its tasks went back to the others."""


class Observers(RunObserver):
    """Several observers as one, called in the order given."""

    def __init__(self, observers: Iterable[RunObserver]):
        self.observers = [observer for observer in observers if observer is not None]

    def worker_ready(self, worker: int, at: float) -> None:
        for observer in self.observers:
            observer.worker_ready(worker, at)

    def planned(self, levels: Mapping[int, Sequence[Task]], complete: bool) -> None:
        for observer in self.observers:
            observer.planned(levels, complete)

    def dispatched(self, worker: int, task: Task) -> None:
        for observer in self.observers:
            observer.dispatched(worker, task)

    def completed(self, done: Completion) -> None:
        for observer in self.observers:
            observer.completed(done)

    def requeued(self, task: Task) -> None:
        for observer in self.observers:
            observer.requeued(task)

    def worker_lost(self, worker: int, why: str) -> None:
        for observer in self.observers:
            observer.worker_lost(worker, why)
