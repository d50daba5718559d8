"""Under MPI: the SPMD session form -- every rank enters ``with Session()``, worker ranks get None."""

from __future__ import annotations

import pytest

from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference

XTB = {"program": "tblite", "driver": "gradient", "model": {"method": "gfn2-xtb", "basis": None}}


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(300)
def test_spmd_session_serves_several_expansions_and_an_ase_optimisation():
    pytest.importorskip("ase")
    from ase.optimize import BFGS
    from mpi4py import MPI

    import mbe_mpi
    from mbe_mpi.ase import ManyBodyCalculator

    from ..ase_reference import Recorder, SequentialCalculator, assert_same_steps, water_atoms

    template = {"molecule": {"atoms_per_fragment": 3}, "model": {"program": "tblite", "method": "gfn2-xtb"},
                "bsse": "nocp", "max_nbody": 2}
    inputs = [manybody_input(cluster_molecule(n), driver="gradient", bsse=["nocp"], specification=XTB) for n in (3, 2)]
    results = []
    with mbe_mpi.Session() as session:
        if session is not None:
            results = [session.compute(mbi) for mbi in inputs]
            atoms = water_atoms(3)
            atoms.calc = ManyBodyCalculator(template, session=session)
            got = Recorder(atoms.calc)
            BFGS(atoms, logfile=None).run(fmax=0.05, steps=4)
    if MPI.COMM_WORLD.Get_rank() != 0:
        assert session is None and not results  # the with body ran with None
        return
    for mbi, result in zip(inputs, results, strict=True):
        assert result.extras["mbe_mpi"]["transport"] == "mpi"
        assert_same_result(result, sequential_reference(mbi))
    reference = water_atoms(3)
    reference.calc = SequentialCalculator(template)
    want = Recorder(reference.calc)
    BFGS(reference, logfile=None).run(fmax=0.05, steps=4)
    assert_same_steps(got, want)
