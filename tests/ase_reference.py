"""What the ASE tests compare with: an ASE calculator that runs QCManyBody's sequential computer.

It builds each step's input exactly as :class:`mbe_mpi.ase.ManyBodyCalculator` does (so both see the
same bits of every position) and computes it with ``qcmanybody.v2.computer.ManyBodyComputer``, one
fragment task after another, as a QCManyBody user would.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.units import Bohr, Hartree
from qcmanybody.v2.computer import ManyBodyComputer

import mbe_mpi  # noqa: F401  (registers the pyscf/tblite harnesses)
from mbe_mpi.ase import ManyBodyCalculator
from mbe_mpi.inputs import parse_input

from .conftest import water_cluster_atoms


class SequentialCalculator(Calculator):
    implemented_properties = ["energy", "forces"]

    def __init__(self, template: dict):
        super().__init__()
        self._inputs = ManyBodyCalculator(template)  # only its input building; it never starts a session

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        driver = "gradient" if "forces" in properties else "energy"
        mbi, _ = parse_input(self._inputs.manybody_input(self.atoms, driver))
        result = ManyBodyComputer.from_manybodyinput(mbi)
        self.results = {"energy": float(result.properties.return_energy) * Hartree}
        if driver == "gradient":
            self.results["forces"] = -np.asarray(result.return_result).reshape(-1, 3) * (Hartree / Bohr)


class Recorder:
    """Wraps a calculator's ``calculate`` to keep every step's energy and forces."""

    def __init__(self, calc: Calculator):
        self.steps: list[tuple[float, np.ndarray | None]] = []
        inner = calc.calculate

        def calculate(*args, **kwargs):
            inner(*args, **kwargs)
            self.steps.append((calc.results["energy"], calc.results.get("forces")))

        calc.calculate = calculate


def water_atoms(n: int) -> Atoms:
    fragments = water_cluster_atoms(n)
    return Atoms(symbols=[s for frag in fragments for s, _ in frag],
                 positions=[xyz for frag in fragments for _, xyz in frag])


def assert_same_steps(got: Recorder, want: Recorder, tol: float = 1e-10) -> None:
    assert len(got.steps) == len(want.steps), (len(got.steps), len(want.steps))
    for (e1, f1), (e2, f2) in zip(got.steps, want.steps, strict=True):
        assert abs(e1 - e2) <= tol
        assert (f1 is None) == (f2 is None)
        if f1 is not None:
            np.testing.assert_allclose(f1, f2, rtol=0, atol=tol)
