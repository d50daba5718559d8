"""The friendly format (molecule, model or levels, bsse, ...) into a QCManyBody ``ManyBodyInput``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput

from ..errors import InputError
from .chemistry import model_chemistry
from .molecule import friendly_molecule
from .text import check_keys, error_text, is_number, one_line
from .validate import DRIVERS, SINGLE_MODEL_LABEL

TOP_LEVEL_KEYS = (
    "molecule",
    "model",
    "levels",
    "bsse",
    "max_nbody",
    "driver",
    "return_total_data",
    "supersystem_ie_only",
    "cluster_results",
    "embedding_charges",
    "execution",
    "screening",
)

BSSE_TYPES = ("nocp", "cp", "vmfc")
CLUSTER_RESULTS = ("none", "all")


def friendly_input(data: dict, base_dir: Path, where: str) -> ManyBodyInput:
    """The friendly format's mapping as a ManyBodyInput (range and consistency checks follow in validate)."""
    check_keys(data, TOP_LEVEL_KEYS, "at the top level", where)
    if "molecule" not in data:
        raise InputError(f"{where}no molecule given; add a molecule section with xyz: <file> or geometry: <lines>")
    molecule = friendly_molecule(data["molecule"], base_dir, where)
    driver = data.get("driver", "energy")
    if not isinstance(driver, str) or driver.lower() not in DRIVERS:
        raise InputError(f"{where}unknown driver {driver!r}; use one of: {', '.join(DRIVERS)}")
    driver = driver.lower()
    specification, keywords = _model_chemistries(data, driver, len(molecule.fragments), where)
    keywords.update(_keyword_flags(data, where))
    many_body_spec: dict[str, Any] = {"driver": driver, "keywords": keywords, "specification": specification}
    cluster_results = data.get("cluster_results")
    if cluster_results is not None:
        if not isinstance(cluster_results, str) or cluster_results.lower() not in CLUSTER_RESULTS:
            raise InputError(f"{where}unknown cluster_results {cluster_results!r}; use none (default) or all")
        many_body_spec["protocols"] = {"cluster_results": cluster_results.lower()}
    try:
        return ManyBodyInput(specification=many_body_spec, molecule=molecule)
    except Exception as exc:
        raise InputError(one_line(f"{where}{error_text(exc)}")) from None


def _model_chemistries(data: dict, driver: str, nfragments: int, where: str) -> tuple[dict, dict[str, Any]]:
    """``model`` or ``levels`` -> (QCManyBody specifications by label, keywords max_nbody and levels)."""
    max_nbody = data.get("max_nbody")
    if max_nbody is not None and (isinstance(max_nbody, bool) or not isinstance(max_nbody, int)):
        raise InputError(f"{where}max_nbody must be a whole number, got {max_nbody!r}")
    has_model, has_levels = data.get("model") is not None, data.get("levels") is not None
    if has_model == has_levels:
        raise InputError(
            f"{where}{'both model and levels are' if has_model else 'neither model nor levels is'} given; "
            "give either model (one model chemistry) or levels (one per n-body level)"
        )
    if has_model:
        model = model_chemistry(data["model"], "model", where)
        return ({SINGLE_MODEL_LABEL: _atomic_specification(model, driver)},
                {"max_nbody": max_nbody if max_nbody is not None else nfragments})
    levels, labelled = _friendly_levels(data["levels"], where)
    specification = {label: _atomic_specification(model, driver) for label, model in labelled.items()}
    # a max_nbody the user gave stays, so that validation names a contradiction with the levels
    highest = max(n for n in levels if n != "supersystem")
    return specification, {"levels": levels, "max_nbody": max_nbody if max_nbody is not None else highest}


def _keyword_flags(data: dict, where: str) -> dict[str, Any]:
    keywords: dict[str, Any] = {}
    if "bsse" in data:
        keywords["bsse_type"] = _bsse_types(data["bsse"], where)
    for flag in ("return_total_data", "supersystem_ie_only"):
        value = data.get(flag)
        if value is not None:
            if not isinstance(value, bool):
                raise InputError(f"{where}{flag} must be true or false, got {value!r}")
            keywords[flag] = value
    if data.get("embedding_charges") is not None:
        keywords["embedding_charges"] = _embedding_charges(data["embedding_charges"], where)
    return keywords


def _atomic_specification(chemistry: dict[str, Any], driver: str) -> dict[str, Any]:
    return {
        "program": chemistry["program"],
        "driver": driver,  # QCManyBody overrides it with the many-body driver anyway
        "model": {"method": chemistry["method"], "basis": chemistry["basis"]},
        "keywords": chemistry["keywords"],
    }


def _chemistry_key(chemistry: dict[str, Any]) -> tuple:
    return (
        chemistry["program"],
        chemistry["method"],
        chemistry["basis"],
        json.dumps(chemistry["keywords"], sort_keys=True, default=repr),
    )


def _friendly_levels(value: Any, where: str) -> tuple[dict, dict[str, dict]]:
    """Per-level model chemistries -> (QCManyBody levels, label -> model chemistry)."""
    per_level, supersystem = _levels_by_number(value, where)
    highest = max(per_level)
    # runs of consecutive levels with one model chemistry: (first n, last n, chemistry)
    runs: list[tuple[int, int, dict]] = []
    for n in range(1, highest + 1):
        if runs and _chemistry_key(runs[-1][2]) == _chemistry_key(per_level[n]):
            runs[-1] = (runs[-1][0], n, runs[-1][2])
        else:
            runs.append((n, n, per_level[n]))
    entries: list[tuple[int | str, str, dict]] = [
        (last, f"{first}-body" if first == last else f"{first}-{last}-body", chem) for first, last, chem in runs
    ]
    if supersystem is not None:
        entries.append(("supersystem", "supersystem", supersystem))

    names = _chemistry_labels([chem for _, _, chem in entries])
    levels: dict[int | str, str] = {}
    labelled: dict[str, dict] = {}
    for key, span, chem in entries:
        label = names[_chemistry_key(chem)]
        if label in labelled:
            # QCManyBody refuses one label on non-adjacent levels or twice in levels: the
            # same model chemistry gets a second name, as its error message recommends.
            label = f"{label} ({span})"
        labelled[label] = chem
        levels[key] = label
    return levels, labelled


def _levels_by_number(value: Any, where: str) -> tuple[dict[int, dict], dict | None]:
    """The ``levels`` mapping checked: contiguous n-body levels from 1, and the optional supersystem."""
    if not isinstance(value, Mapping) or not value:
        raise InputError(
            f"{where}levels must be a mapping of n-body level to model chemistry, "
            "such as {1: {program: pyscf, method: mp2, basis: cc-pvdz}, 2: {...}}"
        )
    per_level: dict[int, dict] = {}
    supersystem = None
    for key, chemistry in value.items():
        if isinstance(key, str) and key.strip().lower() == "supersystem":
            supersystem = model_chemistry(chemistry, "levels.supersystem", where)
            continue
        level = _level_number(key)
        if level is None:
            raise InputError(
                f"{where}levels key {key!r} is not an n-body level; use whole numbers from 1 or 'supersystem'"
            )
        if level in per_level:
            raise InputError(f"{where}levels gives level {level} twice; keep only one")
        per_level[level] = model_chemistry(chemistry, f"levels.{level}", where)
    if not per_level:
        raise InputError(f"{where}levels has only a supersystem entry; give the model chemistry of levels 1, 2, ...")
    highest = max(per_level)
    missing = [n for n in range(1, highest + 1) if n not in per_level]
    if missing:
        raise InputError(
            f"{where}levels must be contiguous from 1 to {highest}, but "
            f"{'level' if len(missing) == 1 else 'levels'} {', '.join(map(str, missing))} "
            f"{'is' if len(missing) == 1 else 'are'} missing; "
            "give every n-body level its model chemistry"
        )
    return per_level, supersystem


def _level_number(key: Any) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key >= 1 else None
    if isinstance(key, str) and key.strip().isdigit() and int(key) >= 1:
        return int(key)
    return None


def _chemistry_labels(chemistries: list[dict]) -> dict[tuple, str]:
    """Readable, distinct labels: method/basis, program-method/basis if programs share it, then #n."""
    distinct: dict[tuple, dict] = {}
    for chem in chemistries:
        distinct.setdefault(_chemistry_key(chem), chem)

    def short(chem):
        return f"{chem['method']}/{chem['basis']}" if chem["basis"] else chem["method"]

    shorts = [short(chem) for chem in distinct.values()]
    labels: dict[tuple, str] = {}
    used: dict[str, int] = {}
    for key, chem in distinct.items():
        label = short(chem)
        if shorts.count(label) > 1:
            label = f"{chem['program']}-{label}"
        used[label] = used.get(label, 0) + 1
        if used[label] > 1:  # same program/method/basis, different keywords
            label = f"{label} #{used[label]}"
        labels[key] = label
    return labels


def _bsse_types(value: Any, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise InputError(f"{where}bsse must be one of {', '.join(BSSE_TYPES)} or a list of them, got {value!r}")
    result: list[str] = []
    for item in values:
        if not isinstance(item, str) or item.lower() not in BSSE_TYPES:
            raise InputError(f"{where}unknown bsse type {item!r}; use any of: {', '.join(BSSE_TYPES)}")
        if item.lower() not in result:
            result.append(item.lower())
    return result


def _embedding_charges(value: Any, where: str) -> dict[int, list[float]]:
    if not isinstance(value, Mapping):
        raise InputError(
            f"{where}embedding_charges must map each fragment number (from 1) to its atoms' charges, got {value!r}"
        )
    charges: dict[int, list[float]] = {}
    for key, values in value.items():
        fragment = _level_number(key)
        if fragment is None:
            raise InputError(f"{where}embedding_charges key {key!r} is not a fragment number (1, 2, ...)")
        if not isinstance(values, list) or not all(is_number(q) for q in values):
            raise InputError(
                f"{where}embedding_charges for fragment {fragment} must be a list of numbers, got {values!r}"
            )
        charges[fragment] = [float(q) for q in values]
    return charges
