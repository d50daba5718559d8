"""Values for the tasks of skipped n-mers that make every skipped increment zero. Pure.

QCManyBody's ``analyze`` needs a value for every task of the full expansion. A skipped n-mer's
tasks get values chosen so that its increment is zero under every treatment that reads them, for
energy, gradient and Hessian alike; ``analyze`` then assembles exactly the truncated expansion (the
sum over kept n-mers of their increments), and nothing of the many-body arithmetic is done here.
Per task (real)@(basis) of a skipped n-mer, at each model chemistry:

* nocp, (U)@(U): ``-sum over proper subsets V of U of (-1)**(|U|-|V|) value((V)@(V))`` -- the value
  whose nocp increment is zero given its subsystems' values (real ones, or surrogates of skipped
  ones, smallest first);
* cp, (U)@(all): the same over (V)@(all);
* vmfc, (U)@(B) for U a proper subset of B: zero, except (B without its last fragment)@(B), which
  takes the value of (B)@(B) when nocp gave that one a value; then the signed vmfc sum over B's
  subsystems is that value minus itself, zero. Without nocp, (B)@(B) is zero too.

Arrays are built in the task's own basis (its atoms, in fragment order, as QCManyBody orders them).

One task can need two values: the whole cluster (all)@(all), when it is an n-mer of the expansion
(max_nbody equals the number of fragments), is skipped, and both nocp and cp (vmfc then reads cp's
values) assemble it -- each treatment's special case for the full cluster takes that one value as
its total. Then there are two *views*: one with nocp's value, one with cp's, and each treatment's
numbers come from the analysis of its own view (:func:`mbe_mpi.assemble.assemble`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from itertools import combinations
from typing import Any

import numpy as np

from ..plan import Plan, Task
from .levels import Nmer

Values = dict[str, Any]  # property name -> float or array, as ManyBodyCore.analyze takes them


@dataclasses.dataclass
class Surrogates:
    """Surrogate values by task index; ``nocp_only``/``cp_only`` hold the whole cluster's two values, if any."""

    values: dict[int, Values]
    nocp_only: dict[int, Values] = dataclasses.field(default_factory=dict)
    cp_only: dict[int, Values] = dataclasses.field(default_factory=dict)

    def views(self) -> list[tuple[frozenset[str] | None, dict[int, Values]]]:
        """(treatments this view is right for, None: all; surrogate values by task index)."""
        if not self.nocp_only:
            return [(None, self.values)]
        return [(frozenset({"nocp"}), {**self.values, **self.nocp_only}),
                (frozenset({"cp", "vmfc"}), {**self.values, **self.cp_only})]


class _Frames:
    """Where a fragment's atoms sit in a task's arrays: the basis fragments' atoms, in fragment order."""

    def __init__(self, sizes: Mapping[int, int]):
        self.sizes = sizes

    def natom(self, basis: Nmer) -> int:
        return sum(self.sizes[f] for f in basis)

    def positions(self, part: Nmer, whole: Nmer) -> np.ndarray:
        offset, start = {}, 0
        for fragment in whole:
            offset[fragment] = start
            start += self.sizes[fragment]
        return np.concatenate([np.arange(offset[f], offset[f] + self.sizes[f]) for f in part])

    def zero(self, names: tuple[str, ...], basis: Nmer) -> Values:
        natom = self.natom(basis)
        shapes = {"energy": None, "gradient": (natom, 3), "hessian": (3 * natom, 3 * natom)}
        return {name: 0.0 if shapes[name] is None else np.zeros(shapes[name]) for name in names}

    def alternating(self, names: tuple[str, ...], terms: list[tuple[float, Nmer, Values]], basis: Nmer) -> Values:
        """sum of coefficient * value over (coefficient, value's basis, value), in ``basis``'s frame."""
        out = self.zero(names, basis)
        for name in names:
            if name == "energy":
                out[name] = math.fsum(c * v["energy"] for c, _, v in terms)
                continue
            for coefficient, source, value in terms:
                if source == basis:
                    out[name] += coefficient * value[name]
                    continue
                atoms = self.positions(source, basis)
                if name == "gradient":
                    out[name][atoms] += coefficient * value[name]
                else:
                    coords = (3 * atoms[:, None] + np.arange(3)).ravel()
                    out[name][np.ix_(coords, coords)] += coefficient * value[name]
        return out


class _ModelChemistry:
    """The surrogates of one model chemistry's tasks."""

    def __init__(self, tasks: list[Task], results: Mapping[int, Values], treatments: set[str], cp_tasks: set,
                 frames: _Frames, names: tuple[str, ...], everything: Nmer):
        self.index = {(t.real, t.basis): t.index for t in tasks}
        self.results = results
        self.treatments = treatments
        self.cp_tasks = cp_tasks
        self.frames = frames
        self.names = names
        self.everything = everything
        self.out = Surrogates({})

    def value(self, real: Nmer, basis: Nmer) -> Values:
        index = self.index[(real, basis)]
        return self.out.values[index] if index in self.out.values else self.results[index]

    def zero_increment(self, nmer: Nmer, basis_of) -> Values:
        """The value of (nmer)@(basis_of(nmer)) that makes the increment zero, given every proper subsystem's value."""
        terms = []
        for size in range(1, len(nmer)):
            coefficient = 1.0 if (len(nmer) - size) % 2 else -1.0  # minus (-1)**(|nmer| - |sub|)
            for sub in combinations(nmer, size):
                basis = basis_of(sub)
                terms.append((coefficient, basis, self.value(sub, basis)))
        return self.frames.alternating(self.names, terms, basis_of(nmer))

    def fill(self, skipped: list[Task]) -> Surrogates:
        own, full, vmfc_only = [], [], []
        for task in skipped:
            if task.real == task.basis:
                own.append(task)
            elif task.basis == self.everything and (task.real, task.basis) in self.cp_tasks:
                full.append(task)
            else:
                vmfc_only.append(task)
        in_own_basis = lambda sub: sub  # noqa: E731
        in_full_basis = lambda sub: self.everything  # noqa: E731
        for task in sorted(full, key=lambda t: len(t.real)):  # cp: smaller subsystems first
            self.out.values[task.index] = self.zero_increment(task.real, in_full_basis)
        for task in sorted(own, key=lambda t: len(t.real)):
            self._own_basis(task, in_own_basis, in_full_basis)
        for task in vmfc_only:
            self._vmfc(task)
        return self.out

    def _own_basis(self, task: Task, in_own_basis, in_full_basis) -> None:
        nocp, cp = "nocp" in self.treatments, "cp" in self.treatments and task.real == self.everything
        if nocp and cp:  # the whole cluster, assembled by both: one value each (see the module docstring)
            self.out.nocp_only[task.index] = self.zero_increment(task.real, in_own_basis)
            self.out.cp_only[task.index] = self.zero_increment(task.real, in_full_basis)
        elif nocp:
            self.out.values[task.index] = self.zero_increment(task.real, in_own_basis)
        elif cp:
            self.out.values[task.index] = self.zero_increment(task.real, in_full_basis)
        else:  # vmfc alone reads it: part of its n-mer's vmfc sum, which is all zeros
            self.out.values[task.index] = self.frames.zero(self.names, task.basis)

    def _vmfc(self, task: Task) -> None:
        nmer = task.basis
        absorbs = task.real == nmer[:-1] and "nocp" in self.treatments
        self.out.values[task.index] = (dict(self.value(nmer, nmer)) if absorbs
                                       else self.frames.zero(self.names, task.basis))


def surrogate_values(plan: Plan, needed: Collection[int], results: Mapping[int, Values]) -> Surrogates:
    """Values for every task that is not ``needed`` (by index: the tasks the kept n-mers need).

    ``results`` holds the values (``ResultMessage.properties()``) of every needed task. The needed
    tasks of each model chemistry are closed under subsystems, so each skipped task's subsystems have
    values (results, or surrogates of smaller skipped ones) when its own is formed.
    """
    core = plan.core
    treatments = {bt.value for bt in core.bsse_type}
    names = tuple(next(iter(results.values())).keys()) if results else ("energy",)
    frames = _Frames(core.fragment_size_dict)
    everything = tuple(range(1, core.nfragments + 1))
    out = Surrogates({})
    for mc_index, mc in enumerate(plan.model_chemistries):
        tasks = [t for t in plan.tasks if t.mc_index == mc_index]
        skipped = [t for t in tasks if t.index not in needed]
        if not skipped:
            continue
        cp_tasks = set().union(*core.compute_map[mc]["cp"].values()) if core.compute_map[mc]["cp"] else set()
        done = _ModelChemistry(tasks, results, treatments, cp_tasks, frames, names, everything).fill(skipped)
        out.values.update(done.values)
        out.nocp_only.update(done.nocp_only)
        out.cp_only.update(done.cp_only)
    return out
