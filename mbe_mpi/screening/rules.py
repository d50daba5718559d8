"""Screening rules, as data: per n-body level, which n-mers an expansion computes.

The rules travel inside the ManyBodyInput itself, in ``specification.extras["mbe_mpi"]["screening"]``
(a plain JSON-able dict), so that every path that carries the input -- ``load_input``,
``mbe_mpi.compute``, the JOB message, the result's ``input_data`` -- carries the screening that
shapes the numbers, and QCManyBody, which ignores extras, still reads the same input. The user
writes them as a ``screening`` section (friendly format) or a top-level ``screening`` key beside a
QCSchema ManyBodyInput; :mod:`mbe_mpi.inputs.screening` checks them and stores them here.

Definitions (Broderick & Herbert, J. Chem. Phys. 159, 174801 (2023), as in the Fragme∩t code):

* ``distance[n]`` (Angstrom): an n-mer is kept only if, for every pair of its fragments, the
  closest contact -- the smallest distance between an atom of one and an atom of the other, plain
  atom-atom distances, no radii -- is at most the cutoff.
* ``energy[n]`` (Eh, n >= 3): kept only if the largest |dE| among its (n-1)-body sub-clusters is at
  least the threshold, dE being the (n-1)-body increment under the first (returned) BSSE treatment
  at the model chemistry of level n-1; decided once level n-1 is complete.
* ``prescreen``: the whole expansion (after distance cutoffs) is first computed with a cheap model
  chemistry; then an n-mer is kept only if its own cheap |dE| is at least ``threshold[n]`` (n >= 2).

An n-mer is a candidate only if all its (n-1)-body sub-clusters were kept (kept sets are closed
under subsets), and monomers are always kept. Rules apply per n-body level whatever model
chemistry that level uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput

#: where in ``ManyBodyInput.specification.extras`` mbe_mpi keeps what it adds to the input
EXTRAS_KEY = "mbe_mpi"


@dataclasses.dataclass(frozen=True)
class Prescreen:
    """A cheap model chemistry whose n-mer increments decide which n-mers the requested one computes."""

    program: str
    method: str
    basis: str | None = None
    keywords: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    threshold: Mapping[int, float] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """How the summary names it: program method/basis."""
        return f"{self.program} {self.method}" + (f"/{self.basis}" if self.basis else "")

    def model(self) -> dict[str, Any]:
        return {"program": self.program, "method": self.method, "basis": self.basis, "keywords": dict(self.keywords)}


@dataclasses.dataclass(frozen=True)
class ScreeningRules:
    """Distance cutoffs (Angstrom), energy thresholds (Eh) and an optional prescreen, by n-body level."""

    distance: Mapping[int, float] = dataclasses.field(default_factory=dict)
    energy: Mapping[int, float] = dataclasses.field(default_factory=dict)
    prescreen: Prescreen | None = None

    @property
    def active(self) -> bool:
        """Whether any rule is given (no rules: the full expansion, exactly QCManyBody's)."""
        return bool(self.distance or self.energy or self.prescreen)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (level keys as strings, as JSON has them)."""
        data: dict[str, Any] = {
            "distance": {str(n): float(v) for n, v in sorted(self.distance.items())},
            "energy": {str(n): float(v) for n, v in sorted(self.energy.items())},
        }
        if self.prescreen is not None:
            data["prescreen"] = {
                "model": self.prescreen.model(),
                "threshold": {str(n): float(v) for n, v in sorted(self.prescreen.threshold.items())},
            }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScreeningRules:
        """Rules from :meth:`to_dict`'s form (already checked; user input goes through mbe_mpi.inputs)."""
        prescreen = None
        if data.get("prescreen"):
            model = data["prescreen"]["model"]
            prescreen = Prescreen(model["program"], model["method"], model.get("basis"), dict(model.get("keywords") or {}),
                                  _levels(data["prescreen"].get("threshold")))
        return cls(_levels(data.get("distance")), _levels(data.get("energy")), prescreen)


def _levels(values: Mapping[Any, float] | None) -> dict[int, float]:
    return {int(n): float(v) for n, v in (values or {}).items()}


def screening_of(mbi: ManyBodyInput) -> ScreeningRules | None:
    """The rules stored in the input, or None when there are none (or none that screen anything)."""
    stored = (mbi.specification.extras or {}).get(EXTRAS_KEY, {}).get("screening")
    if not stored:
        return None
    rules = ScreeningRules.from_dict(stored)
    return rules if rules.active else None


def with_screening(mbi: ManyBodyInput, screening: Mapping[str, Any] | None) -> ManyBodyInput:
    """The input with ``screening`` (rules in :meth:`ScreeningRules.to_dict` form, or None: none) stored in it.

    Rules that screen nothing are not stored: the input then stays the one QCManyBody reads.
    """
    extras = dict(mbi.specification.extras or {})
    ours = dict(extras.get(EXTRAS_KEY) or {})
    if screening and ScreeningRules.from_dict(screening).active:
        ours["screening"] = dict(screening)
    else:
        ours.pop("screening", None)
    if ours:
        extras[EXTRAS_KEY] = ours
    else:
        extras.pop(EXTRAS_KEY, None)
    specification = mbi.specification.model_copy(update={"extras": extras})
    return mbi.model_copy(update={"specification": specification})
