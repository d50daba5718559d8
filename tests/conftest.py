"""Shared test helpers: realistic water clusters cut from the (H2O)32 geometry, reference runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA = Path(__file__).parent / "data"
WATER32 = DATA / "water32.xyz"
ANGSTROM_TO_BOHR = 1.0 / 0.52917721067


def read_water32() -> list[tuple[str, np.ndarray]]:
    lines = WATER32.read_text().splitlines()[2:]
    atoms = []
    for line in lines:
        if line.strip():
            sym, x, y, z = line.split()
            atoms.append((sym, np.array([float(x), float(y), float(z)])))
    return atoms


def water_cluster_atoms(n: int, center: int = 3) -> list[list[tuple[str, np.ndarray]]]:
    """Water number ``center`` (0-based) and its n-1 nearest neighbours (by O-O distance), as fragments."""
    atoms = read_water32()
    waters = [atoms[3 * i : 3 * i + 3] for i in range(len(atoms) // 3)]
    origin = waters[center][0][1]
    order = sorted(range(len(waters)), key=lambda i: (np.linalg.norm(waters[i][0][1] - origin), i))
    return [waters[i] for i in order[:n]]


def water_cluster_xyz(n: int, *, separators: bool = False) -> str:
    """An xyz file text (Angstrom) of the n-water cluster; optionally with '--' between fragments."""
    fragments = water_cluster_atoms(n)
    body = []
    for i, frag in enumerate(fragments):
        if separators and i:
            body.append("--")
        body.extend(f"{sym} {x:.6f} {y:.6f} {z:.6f}" for sym, (x, y, z) in frag)
    return f"{3 * n}\n(H2O){n} from water32.xyz\n" + "\n".join(body) + "\n"


def cluster_molecule(n: int, *, hydroxide: bool = False, **extra):
    """A v2 Molecule of n waters (bohr), fragments set, charges/multiplicities explicit.

    With ``hydroxide=True`` the first water loses a hydrogen and becomes OH- (a charged fragment).
    """
    from qcelemental.models.v2 import Molecule

    fragments_atoms = water_cluster_atoms(n)
    if hydroxide:
        fragments_atoms = [fragments_atoms[0][:2], *fragments_atoms[1:]]
    symbols, geometry, fragments = [], [], []
    for frag in fragments_atoms:
        start = len(symbols)
        for sym, xyz in frag:
            symbols.append(sym)
            geometry.append(xyz * ANGSTROM_TO_BOHR)
        fragments.append(list(range(start, len(symbols))))
    charges = [-1.0 if (hydroxide and i == 0) else 0.0 for i in range(n)]
    return Molecule(
        symbols=symbols,
        geometry=np.array(geometry),
        fragments=fragments,
        fragment_charges=charges,
        fragment_multiplicities=[1] * n,
        molecular_charge=sum(charges),
        molecular_multiplicity=1,
        **extra,
    )


def manybody_input(molecule, *, driver="energy", bsse=("nocp",), max_nbody=None, levels=None,
                   specification=None, return_total_data=None, supersystem_ie_only=None, cluster_results=None):
    """A QCSchema v2 ManyBodyInput with sensible test defaults (PySCF HF/STO-3G)."""
    from qcmanybody.models.v2 import ManyBodyInput

    spec = specification or {"program": "pyscf", "model": {"method": "hf", "basis": "sto-3g"}, "driver": driver}
    keywords = {"bsse_type": list(bsse)}
    if max_nbody is not None:
        keywords["max_nbody"] = max_nbody
    if levels is not None:
        keywords["levels"] = levels
    if return_total_data is not None:
        keywords["return_total_data"] = return_total_data
    if supersystem_ie_only is not None:
        keywords["supersystem_ie_only"] = supersystem_ie_only
    mb_spec = {"driver": driver, "keywords": keywords, "specification": spec}
    if cluster_results:
        mb_spec["protocols"] = {"cluster_results": cluster_results}
    return ManyBodyInput(specification=mb_spec, molecule=molecule)


def sequential_reference(mbi):
    """QCManyBody's own sequential result, computed in the test (after ``import mbe_mpi``)."""
    from qcmanybody.v2.computer import ManyBodyComputer

    import mbe_mpi  # noqa: F401  (registers the pyscf/tblite harnesses)

    return ManyBodyComputer.from_manybodyinput(mbi)


def assert_same_result(result, reference, tol: float = 0.0) -> None:
    """return_result and every numeric property agree to ``tol`` (absolute; default: bit for bit).

    Arrays are compared flattened: QCSchema JSON stores them flat, so a result read back from the
    ``-o`` file has the same numbers in a different shape.
    """
    np.testing.assert_allclose(np.ravel(result.return_result), np.ravel(reference.return_result), rtol=0, atol=tol)
    got = result.properties.model_dump()
    want = reference.properties.model_dump()
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, (int, float, np.ndarray, list)) and not isinstance(value, bool):
            np.testing.assert_allclose(np.ravel(np.asarray(got[key], dtype=float)), np.ravel(np.asarray(value, dtype=float)),
                                       rtol=0, atol=tol, err_msg=key)
        else:
            assert got[key] == value, key


@pytest.fixture
def water3():
    return cluster_molecule(3)
