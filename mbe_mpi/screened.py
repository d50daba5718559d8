"""A screened run's wiring: the master's level schedule, energies taken in as results arrive, the prescreen.

Between the pure :mod:`mbe_mpi.screening` and the run (:mod:`mbe_mpi.run`): levels known before
any QC (distance cutoffs, a finished prescreen) go to the master as task lists; a level with an
energy rule, and every level after it, goes as a :class:`~mbe_mpi.scheduling.Deferred` that the
scheduler decides when it may open -- an energy-ruled level only once every task below it has
completed, whatever ``level_barrier`` says. Results from the checkpoint or the cache count as
done; results of tasks no kept n-mer needs are never used (their n-mers get surrogates).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping

from qcmanybody.models.v2 import ManyBodyInput

from .master import Completion, RunObserver
from .plan import Plan, Task, build_plan
from .protocol import JobMessage, ResultMessage
from .scheduling import Deferred
from .screening import (
    ScreenedExpansion,
    ScreeningRules,
    Surrogates,
    left_out,
    prescreen_input,
    prescreened,
    surrogate_values,
)

Withdraw = Callable[[list[Task]], None]


class EnergyRecorder(RunObserver):
    """Every completed task's energy goes to the expansion whose next levels it may decide."""

    def __init__(self, expansion: ScreenedExpansion):
        self.expansion = expansion

    def completed(self, done: Completion) -> None:
        if done.message.ok:
            self.expansion.record(done.task.index, done.message.energy)
        elif done.final:
            self.expansion.record(done.task.index, None)


@dataclasses.dataclass
class Prescreen:
    """The cheap expansion computed first: its plan, its tasks (after distance cutoffs), what it found."""

    mbi: ManyBodyInput
    plan: Plan
    expansion: ScreenedExpansion
    thresholds: dict[int, float]
    reused: dict[int, ResultMessage] = dataclasses.field(default_factory=dict)
    computed: int = 0
    wall_time: float = 0.0

    @classmethod
    def of(cls, mbi: ManyBodyInput, plan: Plan, rules: ScreeningRules) -> Prescreen:
        first = plan.core.return_bsse_type.value
        cheap_mbi = prescreen_input(mbi, rules.prescreen, first, plan.core.max_nbody)
        cheap_plan = build_plan(cheap_mbi)
        expansion = ScreenedExpansion(cheap_plan, ScreeningRules(distance=dict(rules.distance)), treatments=[first],
                                      energy_rules=False)
        expansion.decide_all()
        return cls(cheap_mbi, cheap_plan, expansion, dict(rules.prescreen.threshold))

    def reuse(self, reused: Mapping[int, ResultMessage]) -> None:
        self.reused = dict(reused)
        for index, message in reused.items():
            self.expansion.record(index, message.energy)

    @property
    def todo(self) -> list[Task]:
        return [task for task in self.expansion.needed() if task.index not in self.reused]

    def job(self, job_id: int) -> JobMessage:
        return JobMessage(job_id, self.mbi.model_dump_json(), self.plan.model_chemistries)

    def done(self, computed: Mapping[int, ResultMessage], wall_time: float) -> dict[int, set]:
        """Take in the cheap results; the n-mers per level the requested expansion may compute."""
        for index, message in computed.items():
            self.expansion.record(index, message.energy)
        self.computed = len(computed)
        self.wall_time = wall_time
        return prescreened(self.expansion, self.thresholds)


class ScreenedRun:
    """The requested expansion of a screened run, level by level; with a prescreen, after it."""

    def __init__(self, mbi: ManyBodyInput, plan: Plan, rules: ScreeningRules, reused: Mapping[int, ResultMessage]):
        self.plan = plan
        self.rules = rules
        self.reused = dict(reused)  # everything on disk; only what kept n-mers need is used
        self.prescreen = Prescreen.of(mbi, plan, rules) if rules.prescreen is not None else None
        self.expansion: ScreenedExpansion | None = None
        if self.prescreen is None:
            self.begin(None)

    def begin(self, allowed: Mapping[int, set] | None) -> None:
        """Start the requested expansion within what the prescreen ``allowed`` (None: no prescreen)."""
        self.expansion = ScreenedExpansion(self.plan, self.rules, allowed=allowed)
        for index, message in self.reused.items():
            self.expansion.record(index, message.energy)

    def upper_bound(self) -> list[Task]:
        """The most the requested expansion can compute: every n-mer distance (and the prescreen) allow."""
        return self.expansion.tasks_of(set().union(*(self.expansion.most(n) for n in self._levels())))

    def _levels(self) -> range:
        return range(1, self.expansion.max_nbody + 1)

    def levels(self, withdraw: Withdraw | None = None) -> dict[int, list[Task] | Deferred]:
        """The master's schedule: levels decided now as task lists, the rest as Deferred.

        ``withdraw`` hears of tasks an energy decision dropped from :meth:`upper_bound` (for progress).
        """
        schedule: dict[int, list[Task] | Deferred] = {}
        for level in self._levels():
            if not schedule or (not self.expansion.gated(level) and not isinstance(schedule[level - 1], Deferred)):
                schedule[level] = self._todo(self.expansion.decide(level))
            else:
                schedule[level] = Deferred(functools.partial(self._decide, level, withdraw),
                                           after_complete=self.expansion.gated(level))
        return schedule

    def _decide(self, level: int, withdraw: Withdraw | None) -> list[Task]:
        most = self.expansion.tasks_of(self.expansion.most(level))
        tasks = self.expansion.decide(level)
        if withdraw is not None:
            kept = {task.index for task in tasks}
            withdraw([task for task in most if task.index not in kept])
        return self._todo(tasks)

    def _todo(self, tasks: Iterable[Task]) -> list[Task]:
        return [task for task in tasks if task.index not in self.reused]

    def for_assembly(self, computed: Mapping[int, ResultMessage]) -> tuple[dict[int, ResultMessage], Surrogates]:
        """The results of every needed task (computed now or reused), and the surrogates of the others."""
        needed = self.expansion.needed()
        results = {task.index: computed[task.index] if task.index in computed else self.reused[task.index]
                   for task in needed}
        values = {index: message.properties() for index, message in results.items()}
        return results, surrogate_values(self.plan, results.keys(), values)

    def report(self, computed: int) -> dict:
        """What ``extras["mbe_mpi"]["screening"]`` holds (see :meth:`ScreenedExpansion.report`)."""
        report = self.expansion.report()
        report["tasks"]["computed"] = computed
        if self.prescreen is not None:
            cheap = self.prescreen
            report["prescreen"] = {
                "model": self.rules.prescreen.name,
                "treatment": cheap.expansion.first,
                "tasks": {"full": len(cheap.plan.tasks), "needed": len(cheap.expansion.needed()),
                          "computed": cheap.computed},
                "wall_time": cheap.wall_time,
                "left_out": left_out(cheap.expansion, self.expansion.decisions.kept),
            }
        return report

