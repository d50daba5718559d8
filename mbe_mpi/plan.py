"""ManyBodyInput -> the ordered list of QC tasks.  Pure: no MPI, no processes, no QC.

The master plans from QCManyBody *labels* only (``ManyBodyCore.compute_map``), never from
Molecules: building a pydantic Molecule costs ~0.6 ms per task (3 ms with counterpoise ghosts),
which would make the master the bottleneck for 40,000-task expansions. Workers build the fragment
molecule from the label themselves (:mod:`mbe_mpi.fragments`).

Two orders matter and are kept apart:

* ``Task.index`` is the position in ``ManyBodyCore.iterate_molecules()`` order, the order in which
  QCManyBody's sequential computer gathers results; assembly feeds results in this order.
* the *dispatch* order is level by level (level = number of real fragments, so the supersystem
  task comes last), largest expected cost first within a level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from qcelemental import periodictable
from qcmanybody import ManyBodyCore
from qcmanybody.builder import build_nbody_compute_list
from qcmanybody.models.v2 import ManyBodyInput
from qcmanybody.utils import labeler
from qcmanybody.v2.computer import ManyBodyComputer

FragBasIndex = tuple[tuple[int, ...], tuple[int, ...]]  # QCManyBody's (real, basis) fragments of a task

# Rough scaling of cost with the number of basis functions, by method family; only the *relative*
# cost of tasks of one level matters for ordering, so a coarse exponent is enough.
_METHOD_SCALING = {
    "hf": 3.0, "scf": 3.0, "mp2": 5.0, "ri-mp2": 4.0, "mp3": 6.0, "ccsd": 6.0, "ccsd(t)": 7.0,
    "gfn1-xtb": 2.0, "gfn2-xtb": 2.0, "gfn1xtb": 2.0, "gfn2xtb": 2.0,
}
_DEFAULT_SCALING = 3.0  # DFT functionals and anything unknown


@dataclasses.dataclass(slots=True, unsafe_hash=True)
class Task:
    """One QC calculation: a model chemistry on real fragments in the basis of basis fragments.

    Immutable by convention (compared and hashed by value), not ``frozen``: a frozen dataclass's
    ``__init__`` sets every field through ``object.__setattr__``, 2 us per task, which is 2.7 s of
    the plan of a 200-fragment 3-body expansion (1.33 M tasks) against 0.6 s for plain slots.

    Fragments are 1-based as in QCManyBody labels. ``mc_index`` points into ``Plan.model_chemistries``
    so that a TASK message carries a small integer, not a string. ``dispatch`` (0: the task's own
    level) is the level a screened run hands the task out with: a vmfc task such as (1)@(1, 2)
    belongs to the dimer whose increment needs it, so it must wait until that dimer is kept
    (:mod:`mbe_mpi.screening`).
    """

    index: int
    mc_index: int
    real: tuple[int, ...]
    basis: tuple[int, ...]
    cost: float
    dispatch: int = 0

    @property
    def level(self) -> int:
        """The n-body level: the number of real fragments (supersystem: all fragments, hence last)."""
        return len(self.real)

    @property
    def dispatch_level(self) -> int:
        """The level the scheduler hands this task out with (its own level unless screening says otherwise)."""
        return self.dispatch or len(self.real)


@dataclasses.dataclass
class Plan:
    """Everything the master needs: the computer (for assembly), the tasks and their dispatch order."""

    computer: ManyBodyComputer
    model_chemistries: tuple[str, ...]
    tasks: list[Task]  # iterate_molecules order (Task.index == position)

    @property
    def core(self) -> ManyBodyCore:
        return self.computer.qcmb_core

    def label(self, task: Task) -> str:
        return task_label(self.model_chemistries, task)

    def by_level(self, tasks: Sequence[Task] | None = None) -> dict[int, list[Task]]:
        """Tasks (default: all) grouped by the level they are handed out with (ascending), largest expected cost first.

        That is the n-body level, except for tasks a screened run hands out with the n-mer that needs
        them (``Task.dispatch_level``).
        """
        return group_by_level(self.tasks if tasks is None else tasks)


def group_by_level(tasks: Iterable[Task]) -> dict[int, list[Task]]:
    """Tasks grouped by dispatch level (ascending), each group ordered by (-cost, index).

    Tasks in index order (``Plan.tasks`` or any subset of it) need only a stable sort by cost,
    descending -- ``reverse=True`` keeps equal costs in their original order -- which is several
    times faster than a tuple key for millions of tasks; other input is put in index order first.
    """
    tasks = list(tasks)
    if any(map(operator.gt, map(TASK_INDEX, tasks), map(TASK_INDEX, itertools.islice(tasks, 1, None)))):
        tasks.sort(key=TASK_INDEX)
    groups: dict[int, list[Task]] = {}
    for task in tasks:
        level = task.dispatch or len(task.real)  # Task.dispatch_level, inlined: it runs once per task
        group = groups.get(level)
        if group is None:
            group = groups[level] = []
        group.append(task)
    return {level: sorted(groups[level], key=TASK_COST, reverse=True) for level in sorted(groups)}


#: key functions over tasks (in C: a sort of a million tasks by a lambda costs a second)
TASK_INDEX = operator.attrgetter("index")
TASK_COST = operator.attrgetter("cost")
TASK_REAL = operator.attrgetter("real")


def task_label(model_chemistries: Sequence[str], task: Any) -> str:
    """QCManyBody's label of a task (a :class:`Task` or a TASK message's TaskSpec)."""
    return labeler(model_chemistries[task.mc_index], task.real, task.basis)


def model_chemistries(core: ManyBodyCore) -> tuple[str, ...]:
    """QCManyBody's model chemistry labels in ``compute_map`` order (the ``mc_index`` order).

    Read from ``nbodies_per_mc_level``, whose keys ``compute_map`` iterates, so that workers never
    build the compute map (millions of entries for a large 3-body expansion) just for the names.
    """
    return tuple(core.nbodies_per_mc_level.keys())


def keeps_cluster_results(mbi: ManyBodyInput) -> bool:
    """Whether every fragment's AtomicResult is kept (``protocols.cluster_results: all``)."""
    return mbi.specification.protocols.cluster_results == "all"


def make_computer(mbi: ManyBodyInput) -> ManyBodyComputer:
    """QCManyBody's own computer, without running anything (``build_tasks=False``)."""
    return ManyBodyComputer.from_manybodyinput(mbi, build_tasks=False)


def atomic_specifications(computer: ManyBodyComputer) -> dict[str, dict[str, Any]]:
    """Per model chemistry: program and AtomicInput specification, exactly as QCManyBody builds them.

    Mirrors the loop in ``ManyBodyComputer.from_manybodyinput`` (a local variable there, so it
    cannot be reused): the many-body driver overrides each atomic specification's driver.
    """
    specifications: dict[str, dict[str, Any]] = {}
    for name, spec in computer.input_data.specification.specification.items():
        spec_dict = spec.model_dump()
        program = spec_dict.pop("program")
        spec_dict["driver"] = computer.driver
        spec_dict.pop("schema_name", None)
        specifications[name] = {"program": program, "specification": spec_dict}
    return specifications


_HASHED_BASIS = 8  # basis tuples up to this length are compared by value directly (cheap)


def iter_labels(core: ManyBodyCore, chunks: Iterable[tuple[str, Iterable[FragBasIndex]]] | None = None,
                ) -> Iterator[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(model chemistry, real fragments, basis fragments) in ``iterate_molecules()`` order, no Molecules.

    The same loop and the same de-duplication as ``ManyBodyCore.iterate_molecules``, over
    ``chunks`` (default: QCManyBody's compute map, see :func:`compute_lists`); a unit test checks
    the two agree label for label. Two labels of one model chemistry are equal exactly when their
    (real, basis) tuples are, so those are compared instead of the JSON label strings: no string
    per task is built or kept (a counterpoise label of 200 fragments is ~800 characters), and the
    tuples yielded are QCManyBody's own, shared (every counterpoise task of a model chemistry has
    the same basis tuple).
    """
    current = None
    for mc, compute_list in compute_lists(core) if chunks is None else chunks:
        if mc != current:  # de-duplication is per model chemistry, as in iterate_molecules
            current = mc
            done: set[tuple] = set()
            # A long basis tuple (counterpoise: all fragments) is hashed once per distinct object, not
            # once per task: a tuple does not cache its hash, and hashing 200 fragments twice per task
            # was most of a counterpoise plan. Equal bases get one number (kept objects: no id is reused).
            numbers: dict[int, tuple[int, tuple]] = {}
            by_value: dict[tuple, int] = {}
        for item in compute_list:
            real, basis = item
            if len(basis) > _HASHED_BASIS:
                known = numbers.get(id(basis))
                if known is None:
                    known = numbers[id(basis)] = (by_value.setdefault(basis, len(by_value)), basis)
                item = (real, known[0])
            if item in done:
                continue
            done.add(item)
            yield mc, tuple(real), tuple(basis)


def compute_lists(core: ManyBodyCore) -> Iterator[tuple[str, set[FragBasIndex]]]:
    """(model chemistry, one n-body level's compute list) in the order ``iterate_molecules`` reads them.

    QCManyBody's own compute map (built and kept by the core, which its ``analyze`` reads again).
    """
    for mc, compute_dict in core.compute_map.items():
        for compute_list in compute_dict["all"].values():
            yield mc, compute_list


def levelwise_compute_lists(core: ManyBodyCore) -> Iterator[tuple[str, set[FragBasIndex]]]:
    """The same as :func:`compute_lists`, each level's list built only when it is reached.

    ``ManyBodyCore.compute_map`` is one call of QCManyBody's ``build_nbody_compute_list`` per model
    chemistry, over all its levels at once: 3-10 s for a 200-fragment 3-body counterpoise plan
    before the first task is known. The builder makes each level's set from that level alone (the
    same insertions in the same order, hence the same set and the same iteration order), so one
    call per level gives the monomers in milliseconds and the rest while they run. The supersystem
    and supersystem-only interaction energies add to levels beyond their own; those inputs get the
    whole map. A streamed plan is checked against the whole map, label for label
    (:class:`PlanStream`), before anything is assembled from it.
    """
    supersystem = core.supersystem_ie_only or any("supersystem" in nbodies
                                                  for nbodies in core.nbodies_per_mc_level.values())
    if supersystem:
        yield from compute_lists(core)
        return
    for mc, nbodies in core.nbodies_per_mc_level.items():
        for nb in nbodies:
            built = build_nbody_compute_list(core.bsse_type, core.nfragments, [nb], core.return_total_data,
                                             core.supersystem_ie_only, core.max_nbody)
            yield mc, built["all"][nb]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while millions of small objects are made that all stay alive.

    Each full collection walks every object made so far, and none of them is garbage: with the
    collector on, a 200-fragment 3-body plan took twice as long (QCManyBody's compute map included).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fragment_weights(core: ManyBodyCore) -> dict[int, float]:
    """A basis-size proxy per fragment: heavier atoms carry more basis functions than hydrogens."""
    symbols = core.molecule.symbols
    weights = {}
    for ifr, atoms in enumerate(core.molecule.fragments, start=1):
        weight = 0.0
        for iat in atoms:
            z = periodictable.to_Z(symbols[iat])
            weight += 1.0 if z <= 2 else (5.0 if z <= 10 else 9.0)
        weights[ifr] = weight
    return weights


def method_scaling(method: str) -> float:
    return _METHOD_SCALING.get(method.lower(), _DEFAULT_SCALING)


def estimate_cost(basis: Sequence[int], weights: dict[int, float], scaling: float) -> float:
    """Expected cost ~ (basis functions) ** scaling; ghosts cost basis functions too."""
    return sum(map(weights.__getitem__, basis)) ** scaling  # the same sum, in C: it runs once per task


def build_plan(mbi: ManyBodyInput, computer: ManyBodyComputer | None = None) -> Plan:
    """Plan an MBE: QCManyBody's computer and the task list, with a cost estimate per task."""
    computer = computer or make_computer(mbi)
    with collector_paused():
        tasks = list(make_tasks(computer, iter_labels(computer.qcmb_core)))
    return Plan(computer=computer, model_chemistries=model_chemistries(computer.qcmb_core), tasks=tasks)


def make_tasks(computer: ManyBodyComputer, labels: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]],
               ) -> Iterator[Task]:
    """One Task per label of :func:`iter_labels` (``index``: its position), with its expected cost."""
    core = computer.qcmb_core
    specs = computer.input_data.specification.specification
    names = model_chemistries(core)
    mc_index = {mc: i for i, mc in enumerate(names)}
    scaling = {mc: method_scaling(specs[mc].model.method) for mc in names}
    weights = fragment_weights(core)
    # counterpoise tasks of a model chemistry share QCManyBody's one basis tuple: one cost sum over
    # it, not one per task (keyed by identity; the value keeps the tuple alive, so no id is reused)
    shared: dict[tuple[str, int], tuple[tuple[int, ...], float]] = {}
    # the same weight for every fragment (a homogeneous cluster): the cost depends on the basis size only
    by_size: dict[tuple[str, int], float] | None = {} if len(set(weights.values())) == 1 else None
    for index, (mc, real, basis) in enumerate(labels):
        if by_size is not None:
            cost = by_size.get((mc, len(basis)))
            if cost is None:
                cost = by_size[mc, len(basis)] = estimate_cost(basis, weights, scaling[mc])
        elif basis is real:
            cost = estimate_cost(basis, weights, scaling[mc])
        else:
            known = shared.get((mc, id(basis)))
            if known is None:
                known = shared[mc, id(basis)] = (basis, estimate_cost(basis, weights, scaling[mc]))
            cost = known[1]
        yield Task(index, mc_index[mc], real, basis, cost)
