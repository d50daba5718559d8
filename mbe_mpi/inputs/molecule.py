"""The friendly format's molecule: xyz files or inline atoms, fragments, charges and multiplicities."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from qcelemental import periodictable
from qcelemental.models.v2 import Molecule

from ..errors import InputError
from ..units import ANGSTROM_TO_BOHR
from .load import read_text
from .text import check_keys, error_text, formula, is_float, is_index, is_number, one_line, show, type_name
from .validate import check_electrons, check_fragments, check_geometry

MOLECULE_KEYS = (
    "xyz",
    "geometry",
    "units",
    "fragments",
    "atoms_per_fragment",
    "fragment_charges",
    "fragment_multiplicities",
)
UNITS = ("angstrom", "bohr")


# symbol (upper case) -> (canonical symbol, Z); "X" (dummy, Z=0) is no element
ELEMENTS = {sym.upper(): (sym, z) for z, sym in enumerate(periodictable.E) if z > 0}


def friendly_molecule(value: Any, base_dir: Path, where: str) -> Molecule:
    """The ``molecule`` section as a QCElemental Molecule with explicit charges and multiplicities."""
    if not isinstance(value, Mapping):
        raise InputError(
            f"{where}molecule must be a mapping with xyz: <file> or geometry: <lines>, not a {type_name(value)}"
        )
    check_keys(value, MOLECULE_KEYS, "in molecule", where)
    units = value.get("units", "angstrom")
    if not isinstance(units, str) or units.lower() not in UNITS:
        raise InputError(f"{where}unknown molecule.units {units!r}; use angstrom or bohr")
    symbols, coordinates, breaks = _atoms(value, base_dir, where)
    natom = len(symbols)
    fragments = _friendly_fragments(value, natom, breaks, where)
    check_fragments(fragments, natom, where)
    charges, multiplicities = _charges_and_multiplicities(value, symbols, fragments, where)
    geometry = np.array(coordinates, dtype=float).reshape(natom, 3)
    in_bohr = units.lower() == "bohr"
    check_geometry(geometry / ANGSTROM_TO_BOHR if in_bohr else geometry, where)
    try:
        return Molecule(
            symbols=symbols,
            geometry=geometry if in_bohr else geometry * ANGSTROM_TO_BOHR,
            fragments=fragments,
            fragment_charges=charges,
            fragment_multiplicities=multiplicities,
            # explicit totals consistent with the fragments: QCElemental then checks, never searches
            molecular_charge=float(sum(charges)),
            molecular_multiplicity=sum(m - 1 for m in multiplicities) + 1,
            fix_com=True,
            fix_orientation=True,
        )
    except Exception as exc:
        raise InputError(one_line(f"{where}the molecule is invalid: {error_text(exc)}")) from None


def _atoms(value: Mapping, base_dir: Path, where: str) -> tuple[list[str], list[list[float]], list[int]]:
    """Symbols, coordinates and '--' positions from ``xyz`` (a file) or ``geometry`` (inline lines)."""
    has_xyz, has_geometry = value.get("xyz") is not None, value.get("geometry") is not None
    if has_xyz and has_geometry:
        raise InputError(f"{where}molecule has both xyz and geometry; give only one of them")
    if has_xyz:
        return _read_xyz_file(value["xyz"], base_dir, where)
    if not has_geometry:
        raise InputError(f"{where}molecule has no atoms; give xyz: <file> or geometry: <lines>")
    if not isinstance(value["geometry"], str):
        raise InputError(
            f"{where}molecule.geometry must be text with one 'Symbol x y z' line per atom, "
            f"not a {type_name(value['geometry'])}"
        )
    atoms = _read_atom_lines(value["geometry"].splitlines(), 1, f"{where}molecule.geometry line")
    if not atoms[0]:
        raise InputError(f"{where}molecule.geometry has no atoms; give one 'Symbol x y z' line per atom")
    return atoms


def _read_xyz_file(name: Any, base_dir: Path, where: str) -> tuple[list[str], list[list[float]], list[int]]:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}molecule.xyz must be a file name, got {name!r}")
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.exists():
        raise InputError(
            f"{where}molecule.xyz file {os.fspath(path)!r} not found; the path is relative to the input file's folder"
        )
    lines = read_text(path, f"{where}molecule.xyz file {os.fspath(path)!r}").splitlines()
    label = f"{where}{name}"
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"{label} is empty; an xyz file starts with the number of atoms, then a comment line")
    first = lines[0].split()
    if len(first) != 1 or not first[0].isdigit():
        raise InputError(
            f"{label} line 1 should be the number of atoms, got {lines[0].strip()!r}; "
            "an xyz file starts with the atom count, then a comment line, then 'Symbol x y z' lines"
        )
    count = int(first[0])
    symbols, coordinates, breaks = _read_atom_lines(lines[2:], 3, f"{label} line")
    if count != len(symbols):
        raise InputError(
            f"{label} line 1 says {count} atoms but the file has {len(symbols)} atom lines; "
            "fix the count (separator lines '--' are not atoms)"
        )
    return symbols, coordinates, breaks


def _read_atom_lines(lines: list[str], first_line: int, label: str) -> tuple[list[str], list[list[float]], list[int]]:
    """'Symbol x y z' lines, '--' separators -> symbols, coordinates, atom counts at each separator."""
    symbols: list[str] = []
    coordinates: list[list[float]] = []
    breaks: list[int] = []
    for number, line in enumerate(lines, start=first_line):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if text == "--":
            breaks.append(len(symbols))
            continue
        fields = text.split()
        if len(fields) != 4:
            raise InputError(f"{label} {number}: expected 'Symbol x y z', got {line.strip()!r}")
        symbols.append(_element(fields[0], f"{label} {number}"))
        bad = [x for x in fields[1:] if not is_float(x)]
        if bad:
            raise InputError(f"{label} {number}: coordinate {bad[0]!r} is not a number; atom lines are 'Symbol x y z'")
        coordinates.append([float(x) for x in fields[1:]])
    return symbols, coordinates, breaks


def _element(token: str, label: str) -> str:
    if token.isdigit() and 0 < int(token) < len(periodictable.E):
        return periodictable.E[int(token)]
    found = ELEMENTS.get(token.upper())
    if found is None:
        raise InputError(
            f"{label}: unknown element symbol {token!r}; use a symbol from the periodic table such as H, C, O or He"
        )
    return found[0]


def _friendly_fragments(value: Mapping, natom: int, breaks: list[int], where: str) -> list[list[int]]:
    given = [key for key in ("fragments", "atoms_per_fragment") if value.get(key) is not None]
    if breaks:
        given.append("'--' separator lines")
    if len(given) > 1:
        raise InputError(f"{where}molecule gives both {given[0]} and {given[1]}; define the fragments one way only")
    if not given:
        raise InputError(
            f"{where}molecule has no fragments; give molecule.fragments, molecule.atoms_per_fragment, "
            "or separate fragments with '--' lines"
        )
    if breaks:
        bounds = [0, *breaks, natom]
        fragments = [list(range(start, stop)) for start, stop in zip(bounds, bounds[1:], strict=False)]
        if any(not fragment for fragment in fragments):
            raise InputError(
                f"{where}the '--' lines leave an empty fragment (a '--' first, last or twice in a row); "
                "remove the extra '--'"
            )
        return fragments
    if value.get("atoms_per_fragment") is not None:
        size = value["atoms_per_fragment"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InputError(f"{where}molecule.atoms_per_fragment must be a whole number of at least 1, got {size!r}")
        if natom % size:
            raise InputError(
                f"{where}molecule.atoms_per_fragment {size} does not divide the {natom} atoms into whole fragments; "
                "fix atoms_per_fragment or use molecule.fragments"
            )
        return [list(range(start, start + size)) for start in range(0, natom, size)]
    fragments = value["fragments"]
    if not isinstance(fragments, list) or not all(
        isinstance(fragment, list) and all(is_index(i) for i in fragment) for fragment in fragments
    ):
        raise InputError(
            f"{where}molecule.fragments must be a list of lists of 0-based atom indices, such as [[0, 1, 2], [3, 4, 5]]"
        )
    return fragments


def lowest_multiplicity(electrons: int) -> int:
    """The default multiplicity of a fragment: singlet for an even electron count, doublet for odd."""
    return 1 if electrons % 2 == 0 else 2


def _charges_and_multiplicities(
    value: Mapping, symbols: list[str], fragments: list[list[int]], where: str
) -> tuple[list[float], list[int]]:
    nfragments = len(fragments)
    charges = value.get("fragment_charges")
    if charges is None:
        charges = [0] * nfragments
    elif not isinstance(charges, list) or len(charges) != nfragments:
        raise InputError(
            f"{where}molecule.fragment_charges must list one charge per fragment ({nfragments}), got {show(charges)}"
        )
    for number, charge in enumerate(charges, start=1):
        if not is_number(charge) or not float(charge).is_integer():
            raise InputError(f"{where}fragment {number} charge must be a whole number, got {charge!r}")
    charges = [int(charge) for charge in charges]
    numbers = [ELEMENTS[symbol.upper()][1] for symbol in symbols]
    multiplicities = value.get("fragment_multiplicities")
    if multiplicities is None:
        multiplicities = [lowest_multiplicity(sum(numbers[i] for i in fragment) - charge)
                          for fragment, charge in zip(fragments, charges, strict=True)]
    elif isinstance(multiplicities, list) and len(multiplicities) == nfragments:
        # 1.0 from a JSON writer is a fine multiplicity 1
        multiplicities = [int(m) if is_number(m) and float(m).is_integer() else m for m in multiplicities]
    else:
        raise InputError(
            f"{where}molecule.fragment_multiplicities must list one multiplicity per fragment ({nfragments}), "
            f"got {show(multiplicities)}"
        )
    for number, (fragment, mult) in enumerate(zip(fragments, multiplicities, strict=True), start=1):
        if isinstance(mult, bool) or not isinstance(mult, int) or mult < 1:
            raise InputError(f"{where}fragment {number} ({formula([symbols[i] for i in fragment])}) multiplicity "
                             f"must be a whole number of at least 1, got {mult!r}")
    check_electrons(numbers, symbols, fragments, charges, multiplicities, where)
    return [float(charge) for charge in charges], list(multiplicities)
