"""Checks of any ManyBodyInput, whichever format it came from: each check once, before any QC work.

Both formats end here (:func:`validate_manybody_input`); the friendly format also runs
:func:`check_fragments` and :func:`check_electrons` on its raw values before it builds the
Molecule, so that its user reads these messages rather than QCElemental's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pydantic
from qcmanybody.models.v2 import ManyBodyInput
from qcmanybody.v2.computer import ManyBodyComputer

from ..errors import InputError
from ..harnesses import check_model_chemistry
from ..units import BOHR_TO_ANGSTROM
from .screening import check_screening
from .text import error_text, formula, one_line, prefix, short_list

DRIVERS = ("energy", "gradient", "hessian")
# The label ManyBodySpecification gives a lone AtomicSpecification, and the one the computer
# looks up when `levels` is absent.
SINGLE_MODEL_LABEL = "(auto)"
#: atoms closer than this (Angstrom) are a mistake (a unit typo, an atom given twice), not chemistry
MIN_DISTANCE_ANGSTROM = 0.1
#: coordinates beyond this (Angstrom) are a mistake too: distances between them lose all precision
MAX_COORDINATE_ANGSTROM = 1.0e5


def check_fragments(fragments: list[list[int]], natom: int, where: str = "") -> None:
    """Each atom in exactly one fragment, and fragments are consecutive runs in atom order.

    QCManyBody needs the latter (``ManyBodyCore`` refuses "non-contiguous fragments"). Fragments
    are numbered from 1 in messages (as in QCManyBody labels), atoms by their 0-based index.
    """
    owner: dict[int, int] = {}
    for number, fragment in enumerate(fragments, start=1):
        if not fragment:
            raise InputError(f"{where}fragment {number} is empty; every fragment needs at least one atom")
        for atom in fragment:
            if not 0 <= atom < natom:
                raise InputError(
                    f"{where}fragment {number} contains atom {atom}, but the molecule has {natom} atoms "
                    f"(indices 0 to {natom - 1}); atom indices count from 0"
                )
            if atom in owner:
                other = owner[atom]
                raise InputError(
                    f"{where}fragment {number} contains atom {atom}, which is "
                    f"{'also in fragment ' + str(other) if other != number else 'listed twice in it'}; "
                    "every atom must belong to exactly one fragment"
                )
            owner[atom] = number
    unassigned = [atom for atom in range(natom) if atom not in owner]
    if unassigned:
        shown = ", ".join(map(str, unassigned[:10])) + (", ..." if len(unassigned) > 10 else "")
        raise InputError(
            f"{where}atom{'s' if len(unassigned) > 1 else ''} {shown} {'are' if len(unassigned) > 1 else 'is'} "
            "in no fragment; every atom must belong to exactly one fragment"
        )
    start = 0
    for number, fragment in enumerate(fragments, start=1):
        if list(fragment) != list(range(start, start + len(fragment))):
            raise InputError(
                f"{where}fragment {number} is atoms {short_list(fragment)}, but QCManyBody needs each fragment "
                f"to be a run of consecutive atoms in file order, fragment 1 first (here atoms "
                f"{start} to {start + len(fragment) - 1}); reorder the atoms so each fragment's atoms are together"
            )
        start += len(fragment)


def check_electrons(numbers: Sequence[int], symbols: Sequence[str], fragments: Sequence[Sequence[int]],
                    charges: Sequence[float], multiplicities: Sequence[int], where: str = "") -> None:
    """Each fragment's charge and multiplicity are possible for its electrons (count and parity)."""
    for number, (fragment, charge, mult) in enumerate(zip(fragments, charges, multiplicities, strict=True), start=1):
        neutral = sum(int(numbers[i]) for i in fragment)
        n = neutral - int(charge)
        what = f"fragment {number} ({formula([symbols[i] for i in fragment])}"
        if n < 0:
            raise InputError(f"{where}{what}) has only {neutral} electrons when neutral, so it cannot have charge "
                             f"{int(charge)}; fix molecule.fragment_charges")
        if mult - 1 > n:
            raise InputError(f"{where}{what}, charge {int(charge)}) has {n} electrons, too few for multiplicity "
                             f"{mult}; fix molecule.fragment_multiplicities or molecule.fragment_charges")
        if (n - (mult - 1)) % 2:
            parity = "odd (1, 3, ...)" if n % 2 == 0 else "even (2, 4, ...)"
            raise InputError(f"{where}{what}, charge {int(charge)}) has {n} electrons, so its multiplicity must be "
                             f"{parity}, not {mult}; fix molecule.fragment_multiplicities or molecule.fragment_charges")


def _check_molecule(molecule, where: str) -> None:
    """Charges, multiplicities and geometry of the whole molecule (fragments were checked already)."""
    charges = [float(c) for c in molecule.fragment_charges]
    if any(not float(c).is_integer() for c in charges):
        raise InputError(f"{where}fragment charges must be whole numbers, got {short_list(charges)}")
    multiplicities = [int(m) for m in molecule.fragment_multiplicities]
    check_electrons(molecule.atomic_numbers, molecule.symbols, molecule.fragments, charges, multiplicities, where)
    total_charge = float(molecule.molecular_charge)
    if abs(total_charge - sum(charges)) > 1e-8:
        raise InputError(f"{where}molecular_charge {total_charge:g} is not the sum of the fragment charges "
                         f"({sum(charges):g}); fix molecular_charge or fragment_charges")
    electrons = int(sum(int(z) for z in molecule.atomic_numbers) - round(total_charge))
    multiplicity = int(molecule.molecular_multiplicity)
    if multiplicity - 1 > electrons or (electrons - (multiplicity - 1)) % 2:
        raise InputError(f"{where}the whole molecule has {electrons} electrons, which cannot have multiplicity "
                         f"{multiplicity}; fix molecular_multiplicity")
    check_geometry(np.asarray(molecule.geometry, dtype=float).reshape(-1, 3) * BOHR_TO_ANGSTROM, where)


def check_geometry(angstrom: np.ndarray, where: str = "") -> None:
    """Finite coordinates of sane size, and no two atoms closer than :data:`MIN_DISTANCE_ANGSTROM`."""
    bad = np.argwhere(~np.isfinite(angstrom) | (np.abs(angstrom) > MAX_COORDINATE_ANGSTROM))
    if len(bad):
        atom = int(bad[0][0])
        raise InputError(f"{where}atom {atom} has coordinate {angstrom[atom].tolist()} (Angstrom), which is not a "
                         f"finite position within {MAX_COORDINATE_ANGSTROM:g} Angstrom; fix the geometry")
    close = _closest_pair(angstrom, MIN_DISTANCE_ANGSTROM)
    if close is not None:
        i, j, distance = close
        raise InputError(f"{where}atoms {i} and {j} are {distance:.3g} Angstrom apart (less than "
                         f"{MIN_DISTANCE_ANGSTROM} Angstrom): an atom given twice, or bohr given as Angstrom? "
                         "fix the geometry or molecule.units")


def _closest_pair(xyz: np.ndarray, cutoff: float) -> tuple[int, int, float] | None:
    """A pair of atoms closer than ``cutoff``, by a cell list (linear in the number of atoms)."""
    cells: dict[tuple[int, int, int], list[int]] = {}
    for i, key in enumerate(map(tuple, np.floor(xyz / cutoff).astype(np.int64).tolist())):
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    for j in cells.get((key[0] + dx, key[1] + dy, key[2] + dz), ()):
                        distance = math.dist(xyz[i], xyz[j])
                        if distance < cutoff:
                            return j, i, distance
        cells.setdefault(key, []).append(i)
    return None


def validate_manybody_input(mbi: ManyBodyInput, source: str = "<input>", *, levels_name: str = "keywords.levels"
                            ) -> None:
    """Refuse a ManyBodyInput that QCManyBody or a QC program would fail on, before any QC work.

    Checks the driver, the fragments, charges, multiplicities and geometry, levels and max_nbody,
    embedding charges (psi4 only), builds QCManyBody's ``ManyBodyComputer`` (without tasks) so its
    own validators run, checks every model chemistry with its program, and checks the screening
    rules stored in the input (:mod:`mbe_mpi.inputs.screening`). ``levels_name`` is what the
    user's file calls the levels (``levels`` in the friendly format).
    """
    where = prefix(source)
    spec = mbi.specification
    driver = spec.driver.value if hasattr(spec.driver, "value") else str(spec.driver)
    if driver not in DRIVERS:
        raise InputError(f"{where}driver {driver!r} cannot be expanded in fragments; use one of: {', '.join(DRIVERS)}")
    molecule = mbi.molecule
    fragments = [[int(i) for i in fragment] for fragment in molecule.fragments]
    if len(fragments) < 2:
        raise InputError(
            f"{where}the molecule has only one fragment, so there is nothing to expand; define at least two fragments"
        )
    check_fragments(fragments, len(molecule.symbols), where)
    _check_molecule(molecule, where)
    used = _check_levels(mbi, len(fragments), where, levels_name)
    _check_embedding(mbi, fragments, used, where)
    try:
        ManyBodyComputer.from_manybodyinput(mbi, build_tasks=False)
    except (pydantic.ValidationError, ValueError, AssertionError, RuntimeError, KeyError, TypeError) as exc:
        raise InputError(one_line(f"{where}QCManyBody refuses this input: {error_text(exc)}")) from None
    _check_model_chemistries(mbi, driver, where)
    check_screening(mbi, where)


def _check_levels(mbi: ManyBodyInput, nfragments: int, where: str, levels_name: str) -> list[str]:
    """max_nbody and levels agree with each other and the fragments; the model chemistries used."""
    spec = mbi.specification
    keywords = spec.keywords
    if keywords.max_nbody is not None and not 1 <= keywords.max_nbody <= nfragments:
        raise InputError(
            f"{where}max_nbody {keywords.max_nbody} is out of range for {nfragments} fragments; "
            f"use a value from 1 to {nfragments}"
        )
    labels = list(spec.specification)
    if keywords.levels is None:
        if SINGLE_MODEL_LABEL not in spec.specification:
            raise InputError(
                f"{where}without {levels_name} QCManyBody uses the specification labelled "
                f"{SINGLE_MODEL_LABEL!r}, but the labels are {', '.join(map(repr, labels))}; "
                f"add {levels_name} naming them, or give a single specification"
            )
        return [SINGLE_MODEL_LABEL]
    numeric = [n for n in keywords.levels if n != "supersystem"]
    if not numeric:
        raise InputError(f"{where}{levels_name} has no n-body level, only 'supersystem'; add levels 1, 2, ...")
    for level, label in keywords.levels.items():
        if label not in spec.specification:
            raise InputError(
                f"{where}{levels_name}[{level!r}] names model chemistry {label!r}, which is not in "
                f"specification; use one of: {', '.join(map(repr, labels))}"
            )
    highest = max(numeric)
    if highest > nfragments:
        raise InputError(
            f"{where}{levels_name} go up to {highest}-body but the molecule has only {nfragments} fragments; "
            f"remove the levels above {nfragments}"
        )
    if keywords.max_nbody is not None and keywords.max_nbody != highest:
        # QCManyBody would silently replace levels by {max_nbody: "(auto)"}
        raise InputError(
            f"{where}max_nbody {keywords.max_nbody} contradicts {levels_name}, which go up to {highest}-body; "
            f"drop max_nbody or make it {highest}"
        )
    return list(dict.fromkeys(keywords.levels.values()))


def _check_embedding(mbi: ManyBodyInput, fragments: list[list[int]], used: list[str], where: str) -> None:
    spec = mbi.specification
    embedding = spec.keywords.embedding_charges
    if not embedding:
        return
    for label in used:
        program = spec.specification[label].program
        if program.lower() != "psi4":
            raise InputError(
                f"{where}embedding_charges work only with program psi4 (QCManyBody passes them to Psi4 alone), "
                f"but model chemistry {label!r} uses {program!r}; remove embedding_charges or use psi4"
            )
    if set(embedding) != set(range(1, len(fragments) + 1)):
        raise InputError(
            f"{where}embedding_charges must have an entry for every fragment 1 to {len(fragments)}, "
            f"got fragments {sorted(embedding)}"
        )
    for number, charges in sorted(embedding.items()):
        if len(charges) != len(fragments[number - 1]):
            raise InputError(
                f"{where}embedding_charges for fragment {number} has {len(charges)} charges but the fragment "
                f"has {len(fragments[number - 1])} atoms; give one charge per atom"
            )


def _check_model_chemistries(mbi: ManyBodyInput, driver: str, where: str) -> None:
    # every model chemistry meets every element: each level's n-mers (and the supersystem) cover all fragments
    elements = sorted(set(mbi.molecule.symbols), key=list(mbi.molecule.symbols).index)
    for label, atomic in mbi.specification.specification.items():
        basis = atomic.model.basis
        if basis is not None and not isinstance(basis, str):
            basis = getattr(basis, "name", str(basis))
        try:
            check_model_chemistry(atomic.program, atomic.model.method, basis, driver, dict(atomic.keywords),
                                  elements)
        except InputError as exc:
            raise InputError(one_line(f"{where}model chemistry {label!r}: {exc}")) from None
