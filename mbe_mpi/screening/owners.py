"""Which kept n-mers need each QC task, and n-mer increments from task energies. Pure.

How QCManyBody's treatments build their tasks (``qcmanybody.builder.build_nbody_compute_list``)
decides whose increment a task (real)@(basis) enters:

* nocp computes every subsystem in its own basis: (U)@(U) enters the increment of every n-mer
  that contains U;
* QCManyBody's cp computes every subsystem in the full-cluster basis: (U)@(all) likewise;
* vmfc computes the subsystems of each n-mer B in B's basis: (U)@(B) enters B's alone.

With several model chemistries (``levels``), the one of level n enters the result only through the
increments of the n-mers of its own levels (QCManyBody adds, per level n, its body sum through n
minus its body sum through n-1). So a task of model chemistry m with real fragments U is needed
exactly when a kept n-mer of one of m's levels contains U (for vmfc: is its basis B). Kept sets are
closed under subsets, so it suffices to look at the lowest of m's levels that is at least |U|: the
task's :class:`Owner` is that level and U (vmfc: B), and that level is also when a screened run can
decide whether to compute it. For a single model chemistry the owner is U itself, at U's level.

A task shared by several treatments (nocp's (B)@(B) is also vmfc's; cp's (U)@(all) is also vmfc's
when the full cluster is an n-mer of the expansion) takes the owner that needs it soonest: its real
fragments', since every n-mer that needs it through vmfc contains them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from itertools import combinations
from typing import NamedTuple

from ..plan import Plan
from .levels import Nmer

#: the compute-map list of each treatment (vmfc's "vmfc_compute" and "vmfc_levels" hold the same tasks)
TREATMENT_LISTS = {"nocp": "nocp", "cp": "cp", "vmfc": "vmfc_compute"}


class Owner(NamedTuple):
    """A task is needed once any kept n-mer of ``level`` contains ``anchor`` (``len(anchor) <= level``)."""

    anchor: Nmer
    level: int


def _tasks_of(compute_dict: dict, list_name: str) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    return set().union(*compute_dict[list_name].values()) if compute_dict[list_name] else set()


def task_owners(plan: Plan, treatments: Collection[str] | None = None) -> list[Owner | None]:
    """By task index: the task's :class:`Owner` (None: no treatment asked needs it).

    ``treatments`` restricts to the increments of those treatments (a prescreen needs only the
    first one's); None means every list of QCManyBody's compute map, including the monomers in
    monomer basis that cp total energies use.
    """
    wanted = TREATMENT_LISTS if treatments is None else treatments
    real_owned: dict[str, set] = {}  # mc -> tasks that belong to their real fragments (nocp, cp)
    basis_owned: dict[str, set] = {}  # mc -> tasks that belong to their basis (vmfc)
    levels: dict[str, list[int]] = {}  # mc -> its n-body levels, ascending
    for mc, compute_dict in plan.core.compute_map.items():
        real_owned[mc] = set().union(*(_tasks_of(compute_dict, TREATMENT_LISTS[t]) for t in ("nocp", "cp")
                                       if t in wanted))
        basis_owned[mc] = _tasks_of(compute_dict, TREATMENT_LISTS["vmfc"]) if "vmfc" in wanted else set()
        levels[mc] = sorted(n for n in plan.core.nbodies_per_mc_level[mc] if n != "supersystem")
    owners: list[Owner | None] = []
    for task in plan.tasks:
        mc = plan.model_chemistries[task.mc_index]
        key = (task.real, task.basis)
        anchor = task.real if key in real_owned[mc] else task.basis if key in basis_owned[mc] else None
        if anchor is None:
            owners.append(None)
            continue
        level = next((n for n in levels[mc] if n >= len(anchor)), len(anchor))
        owners.append(Owner(anchor, level))
    return owners


def increment(energy: Callable[[Nmer, Nmer], float], treatment: str, nmer: Nmer, everything: Nmer) -> float:
    """The n-body increment of ``nmer`` under a treatment, from ``energy(real, basis)`` of its tasks.

    Inclusion-exclusion over its subsystems, each in the basis its treatment uses: its own (nocp),
    the full cluster's (cp), the n-mer's (vmfc). Summed with ``math.fsum`` (correctly rounded).
    """
    terms = []
    for size in range(1, len(nmer) + 1):
        sign = -1.0 if (len(nmer) - size) % 2 else 1.0
        for sub in combinations(nmer, size):
            basis = sub if treatment == "nocp" else everything if treatment == "cp" else nmer
            terms.append(sign * energy(sub, basis))
    return math.fsum(terms)
