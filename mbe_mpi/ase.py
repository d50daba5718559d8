"""An ASE calculator whose energies and forces are many-body expansions run by mbe_mpi.

ASE's optimisers and MD integrators evaluate one geometry after another; a :class:`mbe_mpi.Session`
keeps the workers up across the evaluations, so each step pays only its QC work::

    from ase.optimize import BFGS
    from mbe_mpi.ase import ManyBodyCalculator

    template = {"molecule": {"atoms_per_fragment": 3}, "model": {"program": "tblite", "method": "gfn2-xtb"},
                "bsse": "nocp", "max_nbody": 3}
    atoms.calc = ManyBodyCalculator(template, n_workers=2)
    BFGS(atoms).run(fmax=0.05)
    atoms.calc.close()

``template`` is the friendly input format (see ``mbe_mpi.inputs``) without coordinates: fragments
(``atoms_per_fragment`` or index lists), charges and multiplicities, ``model`` or ``levels``,
``bsse``, ``max_nbody``, and optionally ``screening`` (docs/screening.md). The Atoms supply symbols
and positions (Angstrom). Energies are total energies of the first BSSE treatment, in eV; forces in
eV/Angstrom (ASE's units). A screened expansion is decided anew at every geometry: where an n-mer
crosses a cutoff or threshold, the energy jumps by that n-mer's increment (forces stay those of the
expansion at that geometry), which optimisers and MD integrators do not expect -- keep cutoffs well
away from the distances the run will see, or screen by distance only with a margin.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.units import Bohr, Hartree

from .errors import InputError
from .session import Session

#: friendly-format keys a template may not have: the calculator decides them
_DECIDED = ("driver", "return_total_data")


class ManyBodyCalculator(Calculator):
    """ASE calculator: energy and forces from a many-body expansion (QCManyBody's numbers, in parallel).

    ``session``: an open :class:`mbe_mpi.Session` to run on (e.g. the SPMD ``with`` form under
    ``mpiexec``); without one the calculator starts its own local session on first use, with
    ``execution_options`` (those of :func:`mbe_mpi.compute`), and ends it in :meth:`close` (or at exit).
    """

    implemented_properties = ["energy", "forces"]
    name = "mbe_mpi"

    def __init__(self, template: Mapping[str, Any], session: Session | None = None, **execution_options: Any):
        super().__init__()
        self.template = _checked_template(template)
        self._session = session
        self._own_session = session is None
        self._execution_options = execution_options
        self.last_result = None  # the ManyBodyResult of the latest calculation

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)  # keeps a copy of atoms as self.atoms
        driver = "gradient" if "forces" in properties else "energy"
        result = self.session.compute(self.manybody_input(self.atoms, driver))
        self.last_result = result
        # the total energy, so that energy and forces belong together (QCManyBody's default for an
        # energy driver would be the interaction energy)
        energy = float(result.properties.return_energy) * Hartree
        self.results = {"energy": energy, "free_energy": energy}
        if driver == "gradient":
            gradient = np.asarray(result.return_result, dtype=float).reshape(-1, 3)
            self.results["forces"] = -gradient * (Hartree / Bohr)

    def manybody_input(self, atoms, driver: str = "gradient") -> dict[str, Any]:
        """The friendly-format input of this geometry (positions written to round-trip exactly)."""
        lines = [f"{symbol} {x!r} {y!r} {z!r}" for symbol, (x, y, z) in
                 zip(atoms.get_chemical_symbols(), atoms.get_positions().tolist(), strict=True)]
        data = copy.deepcopy(self.template)
        data["molecule"] = {**data["molecule"], "geometry": "\n".join(lines), "units": "angstrom"}
        data.update(driver=driver, return_total_data=True)
        return data

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(**self._execution_options)
        return self._session

    def close(self) -> None:
        """End the calculator's own session (a session given to it is the caller's to close)."""
        if self._own_session and self._session is not None:
            self._session.close()
            self._session = None


def _checked_template(template: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(template, Mapping) or not isinstance(template.get("molecule"), Mapping):
        raise InputError("ManyBodyCalculator needs a template with a molecule section (fragments, charges, "
                         "multiplicities) and a model, e.g. {'molecule': {'atoms_per_fragment': 3}, 'model': {...}}")
    given = [key for key in ("xyz", "geometry", "units") if key in template["molecule"]]
    if given:
        raise InputError(f"ManyBodyCalculator's template must not give molecule.{given[0]}: the Atoms give the "
                         "positions (Angstrom)")
    decided = [key for key in _DECIDED if key in template]
    if decided:
        raise InputError(f"ManyBodyCalculator's template must not give {decided[0]}: the calculator asks for "
                         "total energies, and gradients when forces are wanted")
    return copy.deepcopy(dict(template))
