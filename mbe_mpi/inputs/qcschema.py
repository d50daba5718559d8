"""The QCSchema format: a QCManyBody ``ManyBodyInput`` as ``model_dump_json()`` writes it (v1 converted)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from qcmanybody.models.v2 import ManyBodyInput

from ..errors import InputError
from ..units import BOHR_TO_ANGSTROM
from .molecule import ELEMENTS, lowest_multiplicity
from .text import error_text, one_line
from .validate import check_electrons, check_fragments, check_geometry

QCSCHEMA_NAME = "qcschema_many_body_input"
QCSCHEMA_V1_NAME = "qcschema_manybodyinput"


def is_qcschema(data: dict, where: str) -> bool:
    """Whether a loaded mapping is a QCSchema ManyBodyInput (by schema_name, or by its shape)."""
    schema_name = data.get("schema_name")
    if schema_name in (QCSCHEMA_NAME, QCSCHEMA_V1_NAME):
        return True
    if schema_name is not None:
        raise InputError(
            f"{where}schema_name {schema_name!r} is not a many-body input; give a {QCSCHEMA_NAME!r} "
            "or the friendly format (molecule, model, ...)"
        )
    spec = data.get("specification")
    return "molecule" in data and isinstance(spec, Mapping) and "keywords" in spec


def qcschema_input(data: dict, where: str) -> ManyBodyInput:
    """The mapping as a v2 ManyBodyInput (a v1 one is converted); ``execution`` was removed already."""
    molecule = data.get("molecule")
    if isinstance(molecule, Mapping):
        data["molecule"] = _with_default_chgmult(dict(molecule))
        _precheck(data["molecule"], where)
    try:
        if data.get("schema_name") == QCSCHEMA_V1_NAME:
            from qcmanybody.models.v1 import ManyBodyInput as ManyBodyInputV1

            return ManyBodyInputV1(**data).convert_v(2)
        return ManyBodyInput(**data)
    except Exception as exc:  # pydantic, QCElemental and numpy all raise their own types for bad data
        extra = callable(getattr(exc, "errors", None)) and exc.errors()[0].get("type") == "extra_forbidden"
        raise InputError(
            one_line(
                f"{where}invalid QCSchema ManyBodyInput: {error_text(exc)}; "
                f"{'remove that field' if extra else 'fix that field'}"
            )
        ) from None


def _atoms(molecule: dict) -> tuple[list[str], list[int], list[list[int]]] | None:
    """Symbols, atomic numbers and fragments of a raw molecule mapping; None if malformed or ghosted."""
    try:
        fragments = [[int(i) for i in fragment] for fragment in molecule["fragments"]]
        symbols = [str(symbol) for symbol in molecule["symbols"]]
        real = molecule.get("real")
        if real is not None and not all(real):
            return None
        numbers = molecule.get("atomic_numbers")
        if numbers is None:
            numbers = [ELEMENTS[symbol.upper()][1] for symbol in symbols]
        return symbols, [int(z) for z in numbers], fragments
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # malformed: QCElemental's validation names the problem


def _precheck(molecule: dict, where: str) -> None:
    """The checks every input gets, on the raw values, so that the user reads them, not QCElemental's.

    A molecule marked ``validated`` (as ``model_dump_json`` writes it) is not checked by QCElemental
    at all: without this, impossible charges or NaN coordinates would reach the QC programs.
    """
    atoms = _atoms(molecule)
    if atoms is None:
        return
    symbols, numbers, fragments = atoms
    check_fragments(fragments, len(symbols), where)
    try:
        geometry = np.asarray(molecule["geometry"], dtype=float).reshape(len(symbols), 3)
    except (KeyError, TypeError, ValueError):
        return
    check_geometry(geometry * BOHR_TO_ANGSTROM, where)
    charges, multiplicities = molecule.get("fragment_charges"), molecule.get("fragment_multiplicities")
    try:
        charges = [float(c) for c in charges]
        multiplicities = [int(m) for m in multiplicities]
    except (TypeError, ValueError):
        return
    if len(charges) == len(multiplicities) == len(fragments) and all(c.is_integer() for c in charges):
        check_electrons(numbers, symbols, fragments, charges, multiplicities, where)


def _with_default_chgmult(molecule: dict) -> dict:
    """Fill neutral, lowest-multiplicity fragments when no charge/multiplicity is given at all.

    With all four fields absent, QCElemental's search (``validate_and_fill_chgmult``) tries every
    combination of fragment multiplicities 1 and 2 and returns exactly this answer, in time
    exponential in the number of fragments. Anything else is left for QCElemental to decide.
    """
    chgmult = ("molecular_charge", "fragment_charges", "molecular_multiplicity", "fragment_multiplicities")
    if molecule.get("validated") or any(molecule.get(key) is not None for key in chgmult):
        return molecule
    atoms = _atoms(molecule)
    if atoms is None or len(atoms[2]) < 2:
        return molecule
    _, numbers, fragments = atoms
    multiplicities = [lowest_multiplicity(sum(numbers[i] for i in fragment)) for fragment in fragments]
    molecule.update(
        molecular_charge=0.0,
        fragment_charges=[0.0] * len(fragments),
        molecular_multiplicity=sum(m - 1 for m in multiplicities) + 1,
        fragment_multiplicities=multiplicities,
    )
    return molecule
