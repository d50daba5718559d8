"""Expected task costs: a prior from atoms, basis functions and method scaling, refined by measurement.

Pure (no I/O). The prior (``Task.cost``) is in arbitrary units; measured times turn it into
seconds. Per model chemistry and *shape* (real and basis fragment counts, which for
equal-sized fragments is the n-body level and its counterpoise variant) the model keeps the mean
measured time; a shape not measured yet is predicted from the measured seconds-per-prior-unit
of its model chemistry. Tasks whose program states its cost (the ``synthetic`` program) get that
cost as an absolute prior.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import qcengine

from .plan import Plan, Task

ShapeKey = tuple[int, int, int]  # (mc_index, number of real fragments, number of basis fragments)


def shape_of(task: Task) -> ShapeKey:
    return (task.mc_index, len(task.real), len(task.basis))


class CostModel:
    """Seconds expected for a task; learns online from measured task times."""

    def __init__(self, absolute: Callable[[Task], float | None] | None = None):
        self._absolute = absolute
        # one entry per shape and per model chemistry, updated in place: observe runs once per result
        self._shapes: dict[ShapeKey, list] = {}  # shape -> [sum of seconds, count, shortest]
        self._mean: dict[ShapeKey, float] = {}  # shape -> sum / count, kept up to date: read several times per task
        self._mc: dict[int, list[float]] = {}  # model chemistry -> [seconds, prior units] measured
        self.observations = 0

    def observe(self, task: Task, seconds: float) -> None:
        key = (task.mc_index, len(task.real), len(task.basis))  # shape_of, inline
        stats = self._shapes.get(key)
        if stats is None:
            stats = self._shapes[key] = [0.0, 0, seconds]
        stats[0] += seconds
        stats[1] += 1
        if seconds < stats[2]:
            stats[2] = seconds
        self._mean[key] = stats[0] / stats[1]
        rate = self._mc.get(task.mc_index)
        if rate is None:
            rate = self._mc[task.mc_index] = [0.0, 0.0]
        rate[0] += seconds
        rate[1] += task.cost
        self.observations += 1

    def seconds(self, task: Task) -> float | None:
        """Expected seconds, or None while nothing is known about tasks like this one."""
        mean = self.measured(task)
        if mean is not None:
            return mean
        rate = self._mc.get(task.mc_index)
        if rate is not None and rate[1]:
            return task.cost * rate[0] / rate[1]
        if self._absolute is not None:
            absolute = self._absolute(task)
            if absolute is not None:
                return absolute
        if self.observations:  # another model chemistry's rate: rough, but in seconds like the rest
            return task.cost * sum(r[0] for r in self._mc.values()) / max(sum(r[1] for r in self._mc.values()), 1e-300)
        return None

    def measured(self, task: Task) -> float | None:
        """The mean measured time of tasks like this one, or None before the first such result."""
        return self._mean.get((task.mc_index, len(task.real), len(task.basis)))

    def shortest(self, task: Task) -> float | None:
        """The shortest time measured for tasks like this one (else the expectation): a safe lower bound."""
        stats = self._shapes.get(shape_of(task))
        return stats[2] if stats is not None else self.seconds(task)

    def sort_key(self, task: Task) -> tuple[int, float, int]:
        """Dispatch order: level, then largest expected cost first (seconds once known, else the prior)."""
        seconds = self.seconds(task)
        return (task.level, -(seconds if seconds is not None else task.cost), task.index)


def program_estimates(plan: Plan) -> Callable[[Task], float | None]:
    """Absolute seconds for tasks whose QCEngine program states its cost (``expected_seconds``).

    Only the ``synthetic`` program does; for real programs the model learns from measurements.
    """
    specs = plan.computer.input_data.specification.specification
    sizes = plan.core.fragment_size_dict
    estimators: dict[int, Callable[[int], float]] = {}
    for mc_index, mc in enumerate(plan.model_chemistries):
        spec = specs[mc]
        try:
            harness = qcengine.get_program(spec.program, check=False)
        except Exception:
            continue
        expected = getattr(harness, "expected_seconds", None)
        if expected is not None:
            keywords = dict(spec.keywords)
            estimators[mc_index] = lambda natom, expected=expected, keywords=keywords: expected(keywords, natom)
    natoms = _atom_counter(sizes)
    known: dict[tuple[int, int], float] = {}  # (mc_index, atoms) -> seconds: a program's estimate is a function of them

    def estimate(task: Task) -> float | None:
        estimator = estimators.get(task.mc_index)
        if estimator is None:
            return None
        key = (task.mc_index, natoms(task))
        seconds = known.get(key)
        if seconds is None:
            seconds = known[key] = estimator(key[1])
        return seconds

    return estimate


def _atom_counter(sizes: Mapping[int, int]) -> Callable[[Task], int]:
    """Atoms in a task's basis, without summing over 200 fragments for each of a million counterpoise tasks.

    Equal fragments (a homogeneous cluster): the count of fragments times the size. Otherwise, as
    :func:`~mbe_mpi.plan.make_tasks` does for the cost prior, a basis that is not the task's own
    real tuple (QCManyBody shares one basis tuple among a model chemistry's counterpoise tasks) is
    summed once, keyed by identity -- the cache holds the tuple, so its id is not reused.
    """
    if len(set(sizes.values())) == 1:
        size = next(iter(sizes.values()))
        return lambda task: size * len(task.basis)
    shared: dict[int, tuple[tuple[int, ...], int]] = {}

    def count(task: Task) -> int:
        basis = task.basis
        if basis is task.real:
            return sum(map(sizes.__getitem__, basis))
        entry = shared.get(id(basis))
        if entry is None:
            entry = shared[id(basis)] = (basis, sum(map(sizes.__getitem__, basis)))
        return entry[1]

    return count
