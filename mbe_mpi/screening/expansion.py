"""One screened expansion: its tasks level by level, the energies that decide the next level, the report.

Pure state, no processes: the run feeds it the energies of completed tasks (:meth:`record`) and asks
it for a level's tasks when that level may open (:meth:`decide`); a level with an energy rule may
only be asked once every task of the levels below has completed (:meth:`gated`). Levels are those
of the tasks' owners (:mod:`mbe_mpi.screening.owners`): a task is handed out with the level of its
owner, which is its own level except for vmfc's (U)@(B), which waits for B, and, with several model
chemistries, a task of a model chemistry whose levels start above the task's, which waits for them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from itertools import combinations

from qcmanybody.models.v2 import ManyBodyInput

from ..plan import Plan, Task
from ..units import HARTREE_TO_KCAL
from .contacts import closest_contacts
from .levels import LevelDecisions, Nmer, grow, sub_clusters
from .owners import Owner, increment, task_owners
from .rules import Prescreen, ScreeningRules

logger = logging.getLogger(__name__)


def level_model_chemistries(plan: Plan) -> dict[int, int]:
    """n-body level -> the ``mc_index`` of the model chemistry whose increments make up that level."""
    return {n: plan.model_chemistries.index(mc) for mc, levels in plan.core.nbodies_per_mc_level.items()
            for n in levels if n != "supersystem"}


class ScreenedExpansion:
    """Which tasks a screened expansion needs, decided level by level.

    ``allowed`` (level -> n-mers) is what a prescreen kept; ``treatments`` restricts the tasks to
    the increments of those treatments (a prescreen needs only the first one's); ``energy_rules``
    false ignores the energy thresholds (a prescreen's expansion, or a forecast before any QC).
    """

    def __init__(self, plan: Plan, rules: ScreeningRules, *, allowed: Mapping[int, set[Nmer]] | None = None,
                 treatments: Collection[str] | None = None, energy_rules: bool = True):
        core = plan.core
        self.plan = plan
        self.rules = rules
        self.energy_rules = dict(rules.energy) if energy_rules else {}
        self.max_nbody = core.max_nbody
        self.first = list(treatments)[0] if treatments else core.return_bsse_type.value
        self.everything = tuple(range(1, core.nfragments + 1))
        contacts = closest_contacts(core.molecule.geometry, [list(f) for f in core.molecule.fragments])
        self.decisions = LevelDecisions(contacts, core.max_nbody, rules.distance, allowed)
        self.owners = task_owners(plan, treatments)
        self._owned: dict[Owner, list[Task]] = {}
        self._below: set[int] = set()  # levels with owners whose anchor is smaller than the level
        for task, owner in zip(plan.tasks, self.owners, strict=True):
            if owner is not None:
                tagged = task if owner.level == task.level else dataclasses.replace(task, dispatch=owner.level)
                self._owned.setdefault(owner, []).append(tagged)
                if len(owner.anchor) < owner.level:
                    self._below.add(owner.level)
        self._index = {(t.mc_index, t.real, t.basis): t.index for t in plan.tasks}
        self._level_mc = level_model_chemistries(plan)
        self.energies: dict[int, float] = {}
        self.failed: set[int] = set()
        self._increments: dict[Nmer, float] = {}

    # ---- results --------------------------------------------------------------------------

    def record(self, index: int, energy: float | None) -> None:
        """The energy of a completed task (None: it failed for good)."""
        if energy is None:
            self.failed.add(index)
        else:
            self.energies[index] = energy

    def increment(self, nmer: Nmer, mc_index: int | None = None) -> float:
        """The n-mer's increment under the first treatment, at its level's model chemistry (or ``mc_index``)."""
        if mc_index is None and nmer in self._increments:
            return self._increments[nmer]
        mc = self._level_mc[len(nmer)] if mc_index is None else mc_index
        value = increment(lambda real, basis: self.energies[self._index[(mc, real, basis)]], self.first, nmer,
                          self.everything)
        if mc_index is None:
            self._increments[nmer] = value
        return value

    # ---- levels ---------------------------------------------------------------------------

    def gated(self, level: int) -> bool:
        """Whether deciding ``level`` reads results: then every task of the levels below must be complete."""
        return level in self.energy_rules

    def decide(self, level: int) -> list[Task]:
        """Decide the next level and return its tasks (handed out with that level)."""
        if level == 1:
            return self.tasks_of(self.decisions.kept[1])
        keep = None
        if level in self.energy_rules:
            threshold = self.energy_rules[level]
            if self.failed:  # the increments cannot be formed: decide nothing more (the run reports the failure)
                logger.warning("level %d cannot be screened by energy: %d QC tasks below it failed", level,
                               len(self.failed))
                keep = lambda nmer: False  # noqa: E731
            else:
                keep = lambda nmer: max(abs(self.increment(sub)) for sub in sub_clusters(nmer)) >= threshold  # noqa: E731
        return self.tasks_of(self.decisions.decide(level, keep))

    def decide_all(self) -> dict[int, list[Task]]:
        """Every level decided now (for rules known before any QC: distance, or a prescreen's outcome)."""
        return {level: self.decide(level) for level in range(1, self.max_nbody + 1)}

    def tasks_of(self, nmers: Collection[Nmer]) -> list[Task]:
        """The tasks the given n-mers need (see :mod:`.owners`), each once, in plan (``iterate_molecules``) order."""
        tasks: dict[int, Task] = {}
        for nmer in nmers:
            level = len(nmer)
            anchors = [nmer]
            if level in self._below:  # multilevel: tasks of a lower-order anchor wait for a kept n-mer around it
                anchors += [sub for size in range(1, level) for sub in combinations(nmer, size)]
            for anchor in anchors:
                for task in self._owned.get(Owner(anchor, level), ()):
                    tasks[task.index] = task
        return sorted(tasks.values(), key=lambda t: t.index)

    def most(self, level: int) -> set[Nmer]:
        """The n-mers of ``level`` that distance (and a prescreen) allow: what it keeps if energy skips nothing."""
        within = self.decisions.within_distance[level]
        allowed = self.decisions.allowed.get(level)
        return within if allowed is None else within & allowed

    @property
    def kept(self) -> set[Nmer]:
        return self.decisions.all_kept()

    def needed(self) -> list[Task]:
        """The tasks of every kept n-mer of the levels decided so far."""
        return self.tasks_of(self.kept)

    # ---- report ---------------------------------------------------------------------------

    def report(self) -> dict:
        """Per level: n-mers possible, skipped by distance / prescreen / energy, kept; QC tasks needed vs full."""
        needed = self.needed()
        tasks = {}
        for task in self.plan.tasks:
            row = tasks.setdefault(task.level, {"full": 0, "needed": 0})
            row["full"] += 1
        for task in needed:
            tasks[task.level]["needed"] += 1
        return {
            "rules": self.rules.to_dict(),
            "levels": {str(n): self.decisions.counts(n) for n in sorted(self.decisions.kept)},
            "tasks": {"full": len(self.plan.tasks), "needed": len(needed),
                      "per_level": {str(level): row for level, row in sorted(tasks.items())}},
        }


def prescreen_input(mbi: ManyBodyInput, prescreen: Prescreen, first: str, max_nbody: int) -> ManyBodyInput:
    """The cheap expansion: the same molecule and levels at the prescreen's model chemistry, energies only."""
    atomic = {"program": prescreen.program, "driver": "energy",
              "model": {"method": prescreen.method, "basis": prescreen.basis}, "keywords": dict(prescreen.keywords)}
    keywords = {"bsse_type": [first], "max_nbody": max_nbody, "return_total_data": False}
    return ManyBodyInput(specification={"driver": "energy", "keywords": keywords, "specification": atomic},
                         molecule=mbi.molecule)


def prescreened(cheap: ScreenedExpansion, thresholds: Mapping[int, float]) -> dict[int, set[Nmer]]:
    """Per level, the n-mers whose own cheap |increment| reaches the threshold (closed under subsets).

    ``cheap`` is the prescreen's expansion, complete (every level decided, every task recorded).
    """
    decisions = cheap.decisions
    kept = {1: set(decisions.kept[1])}
    for n in range(2, cheap.max_nbody + 1):
        threshold = thresholds.get(n)
        within = decisions.kept[n]
        kept[n] = grow(kept[n - 1], decisions.nfragments, lambda nmer, within=within, threshold=threshold:
                       nmer in within and (threshold is None or abs(cheap.increment(nmer)) >= threshold))
    return kept


def left_out(cheap: ScreenedExpansion, kept: Mapping[int, set[Nmer]]) -> dict[str, dict[str, float]]:
    """Per level, the cheap estimate of what screening by energy left out: the sum of the skipped n-mers' increments.

    Only n-mers within the distance cutoffs have cheap increments (the prescreen computed them).
    """
    out = {}
    for n in range(2, cheap.max_nbody + 1):
        skipped = cheap.decisions.kept[n] - kept.get(n, set())
        total = sum(cheap.increment(nmer) for nmer in sorted(skipped))
        out[str(n)] = {"n_mers": len(skipped), "eh": total, "kcal_mol": total * HARTREE_TO_KCAL}
    return out
