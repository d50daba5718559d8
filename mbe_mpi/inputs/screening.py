"""The ``screening`` section: distance cutoffs, energy thresholds and a prescreen, checked before any QC.

Written the same in both formats: a ``screening`` section of the friendly format, or a top-level
``screening`` key beside a QCSchema ManyBodyInput (like ``execution``)::

    screening:
      distance: {2: 8.0, 3: 6.0, 4: 5.0}   # Angstrom, per n-body level
      energy: {3: 1.0e-5, 4: 1.0e-6}       # Eh, per n-body level (n >= 3)
      prescreen:                           # optional: a cheap model chemistry decides first
        model: {program: tblite, method: gfn2-xtb}
        threshold: {2: 1.0e-5, 3: 1.0e-5, 4: 1.0e-6}   # Eh, per n-body level (n >= 2)

:func:`screening_section` checks the form and gives the rules as plain data, which the loader
stores in the ManyBodyInput (:func:`mbe_mpi.screening.with_screening`); :func:`check_screening`
then checks them against the input (levels within max_nbody, no supersystem, the prescreen's
program), as part of :func:`~mbe_mpi.inputs.validate.validate_manybody_input` -- whichever way the
rules came in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput

from ..errors import InputError
from ..harnesses import check_model_chemistry
from ..screening import EXTRAS_KEY, ScreeningRules
from .chemistry import model_chemistry
from .text import check_keys, is_number, one_line, type_name

SCREENING_KEYS = ("distance", "energy", "prescreen")
PRESCREEN_KEYS = ("model", "threshold")
_UNITS = {"distance": "Angstrom", "energy": "Eh", "prescreen.threshold": "Eh"}


def screening_section(value: Any, where: str) -> dict[str, Any]:
    """The section's rules as :meth:`ScreeningRules.to_dict` data, or one line saying what is wrong."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}screening must be a mapping such as {{distance: {{2: 8.0}}}}, "
                         f"not a {type_name(value)}")
    check_keys(value, SCREENING_KEYS, "in screening", where)
    rules: dict[str, Any] = {name: _per_level(value.get(name), name, where) for name in ("distance", "energy")}
    prescreen = value.get("prescreen")
    if prescreen is not None:
        if not isinstance(prescreen, Mapping):
            raise InputError(f"{where}screening.prescreen must be a mapping with model and threshold, "
                             f"not a {type_name(prescreen)}")
        check_keys(prescreen, PRESCREEN_KEYS, "in screening.prescreen", where)
        if prescreen.get("model") is None or not prescreen.get("threshold"):
            missing = "model" if prescreen.get("model") is None else "threshold"
            raise InputError(f"{where}screening.prescreen has no {missing}; give model: {{program: ..., method: ...}} "
                             "and threshold: {2: ..., 3: ...} (Eh per n-body level)")
        model = model_chemistry(prescreen["model"], "screening.prescreen.model", where)
        rules["prescreen"] = {"model": model,
                              "threshold": _per_level(prescreen["threshold"], "prescreen.threshold", where)}
    return rules


def _per_level(value: Any, name: str, where: str) -> dict[str, float]:
    """``{level: number}`` with whole-number levels and finite numbers of at least 0."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}screening.{name} must be a mapping of n-body level to {_UNITS[name]}, "
                         f"such as {{2: 1.0}}, not a {type_name(value)}")
    levels: dict[str, float] = {}
    for key, number in value.items():
        level = key if isinstance(key, int) and not isinstance(key, bool) else (
            int(key) if isinstance(key, str) and key.strip().isdigit() else None)
        if level is None:
            raise InputError(f"{where}screening.{name} key {key!r} is not an n-body level; use whole numbers from 2")
        if not is_number(number) or not math.isfinite(number) or number < 0:
            raise InputError(f"{where}screening.{name}[{level}] must be a finite number of {_UNITS[name]} "
                             f"(0 or more), got {number!r}")
        levels[str(level)] = float(number)
    return levels


def check_screening(mbi: ManyBodyInput, where: str) -> ScreeningRules | None:
    """The input's screening rules checked against it (None when it has none)."""
    stored = (mbi.specification.extras or {}).get(EXTRAS_KEY, {}).get("screening")
    if not stored:
        return None
    rules = ScreeningRules.from_dict(screening_section(stored, where))
    if not rules.active:
        return None
    keywords = mbi.specification.keywords
    nfragments = len(mbi.molecule.fragments)
    max_nbody = keywords.max_nbody or max((n for n in (keywords.levels or {}) if n != "supersystem"),
                                          default=nfragments)
    if "supersystem" in (keywords.levels or {}) or keywords.supersystem_ie_only:
        what = "a supersystem level" if "supersystem" in (keywords.levels or {}) else "supersystem_ie_only"
        raise InputError(f"{where}screening cannot be combined with {what}: the supersystem correction is the "
                         "difference from the full expansion at its model chemistry; remove one of them")
    levels = {"distance": rules.distance, "energy": rules.energy}
    if rules.prescreen is not None:
        levels["prescreen.threshold"] = rules.prescreen.threshold
    for name, per_level in levels.items():
        for level in sorted(per_level):
            _check_level(name, level, max_nbody, rules.prescreen is not None, where)
    if rules.prescreen is not None:
        prescreen = rules.prescreen
        try:
            check_model_chemistry(prescreen.program, prescreen.method, prescreen.basis, "energy",
                                  dict(prescreen.keywords))
        except InputError as exc:
            raise InputError(one_line(f"{where}screening.prescreen.model: {exc}")) from None
    return rules


def _check_level(name: str, level: int, max_nbody: int, prescreen: bool, where: str) -> None:
    if level < 2:
        raise InputError(f"{where}screening.{name} has a rule for level {level}, but monomers are always kept; "
                         "give rules for levels 2 and up")
    if level > max_nbody:
        raise InputError(f"{where}screening.{name} has a rule for level {level}, above max_nbody {max_nbody}; "
                         f"remove it or raise max_nbody")
    if name == "energy" and level == 2:
        instead = ("give the dimers' threshold in screening.prescreen.threshold instead" if prescreen
                   else "screen dimers with screening.distance, or with a cheap model chemistry in "
                   "screening.prescreen (threshold: {2: ...})")
        raise InputError(f"{where}screening.energy has a rule for level 2, but dimers have no (n-1)-body "
                         f"sub-clusters to be screened by (a monomer's increment is its total energy); {instead}")
