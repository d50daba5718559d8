"""The ASE calculator: an optimisation driven by mbe_mpi equals the one driven by QCManyBody's computer."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ase")

from ase.md.verlet import VelocityVerlet  # noqa: E402
from ase.optimize import BFGS  # noqa: E402
from ase.units import fs  # noqa: E402

import mbe_mpi  # noqa: E402
from mbe_mpi.ase import ManyBodyCalculator  # noqa: E402
from mbe_mpi.errors import InputError  # noqa: E402

from ..ase_reference import Recorder, SequentialCalculator, assert_same_steps, water_atoms  # noqa: E402

pytestmark = pytest.mark.timeout(300)

TEMPLATE = {"molecule": {"atoms_per_fragment": 3}, "model": {"program": "tblite", "method": "gfn2-xtb"},
            "bsse": "nocp", "max_nbody": 2}


def _optimise(calc, steps: int = 6):
    atoms = water_atoms(3)
    atoms.calc = calc
    recorder = Recorder(calc)
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=steps)
    return recorder, atoms


def test_bfgs_with_a_session_takes_the_steps_of_qcmanybody_sequential():
    with mbe_mpi.Session(n_workers=2) as session:
        got, atoms = _optimise(ManyBodyCalculator(TEMPLATE, session=session))
    want, reference = _optimise(SequentialCalculator(TEMPLATE))
    assert len(got.steps) >= 3  # a real optimisation, several gradients
    assert_same_steps(got, want)
    np.testing.assert_allclose(atoms.positions, reference.positions, rtol=0, atol=1e-10)


def test_own_session_energy_only_and_md():
    calc = ManyBodyCalculator(TEMPLATE, n_workers=2)
    try:
        atoms = water_atoms(3)
        atoms.calc = calc
        energy = atoms.get_potential_energy()  # energy driver only
        assert calc.last_result.input_data.specification.driver.value == "energy"
        reference = water_atoms(3)
        reference.calc = SequentialCalculator(TEMPLATE)
        assert abs(energy - reference.get_potential_energy()) <= 1e-10
        forces = atoms.get_forces()  # positions unchanged: a gradient run, energy consistent with it
        assert abs(atoms.get_potential_energy() - energy) <= 1e-10 and forces.shape == (9, 3)
        recorder = Recorder(calc)
        VelocityVerlet(atoms, timestep=0.5 * fs, logfile=None).run(3)
        assert len(recorder.steps) == 3 and all(f is not None for _, f in recorder.steps)
    finally:
        calc.close()
    assert calc._session is None


@pytest.mark.parametrize("template, message", [
    ({**TEMPLATE, "molecule": {"atoms_per_fragment": 3, "xyz": "w.xyz"}}, "must not give molecule.xyz"),
    ({**TEMPLATE, "driver": "energy"}, "must not give driver"),
    ({"model": TEMPLATE["model"]}, "needs a template with a molecule section"),
])
def test_template_mistakes_are_refused_at_once(template, message):
    with pytest.raises(InputError, match=message):
        ManyBodyCalculator(template)
