"""Under MPI: screened expansions equal the truncated expansion, computed on worker ranks.

Rank 0 sums the truncated expansion from a full QCManyBody run made in the same test
(:mod:`tests.truncated`); the run itself computes only what its kept n-mers need.
"""

from __future__ import annotations

import numpy as np
import pytest

from .. import truncated
from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference


def _synthetic(n_waters, bsse, driver="energy", max_nbody=3):
    spec = {"program": "synthetic", "driver": driver, "model": {"method": "synthetic", "basis": None}}
    return manybody_input(cluster_molecule(n_waters), driver=driver, bsse=list(bsse), max_nbody=max_nbody,
                          specification=spec)


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(300)
def test_twelve_fragments_nocp_cp_vmfc_equal_the_truncated_expansion():
    """The acceptance case: distance at 2 and 3 bodies, an energy rule at 3, every treatment at once."""
    from mpi4py import MPI

    import mbe_mpi

    mbi = _synthetic(12, ["nocp", "cp", "vmfc"])
    screening = {"distance": {2: 4.5, 3: 4.0}, "energy": {3: 5.0e-3}}
    result = mbe_mpi.compute(mbi, screening=screening, checkpoint=False)
    if MPI.COMM_WORLD.Get_rank() != 0:
        assert result is None
        return
    reference = sequential_reference(mbi)
    kept = truncated.kept_nmers(mbi, reference, screening["distance"], screening["energy"])
    compared = truncated.assert_truncated(result, mbi, reference, kept, 1e-11)
    assert compared == 6  # nocp, cp and vmfc, through 2 and 3 bodies
    needed = truncated.needed_labels(mbi, reference, kept)
    stats = result.extras["mbe_mpi"]
    assert stats["transport"] == "mpi" and stats["n_workers"] == MPI.COMM_WORLD.Get_size() - 1
    assert stats["computed"] <= len(needed)
    assert set(result.cluster_properties) == needed
    assert stats["screening"]["tasks"]["full"] == len(reference.cluster_properties) > 4 * len(needed)


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(300)
def test_spmd_session_runs_a_prescreened_gradient_then_a_full_expansion():
    """A prescreen is one more job on the session's worker ranks; the next call runs unscreened."""
    pytest.importorskip("tblite")
    from mpi4py import MPI

    import mbe_mpi

    mbi = _synthetic(6, ["nocp", "vmfc"], "gradient")
    threshold = {2: 2.0e-3, 3: 2.0e-4}
    screening = {"distance": {2: 5.0}, "energy": {3: 0.12},
                 "prescreen": {"model": {"program": "tblite", "method": "gfn2-xtb"}, "threshold": threshold}}
    results = []
    with mbe_mpi.Session(checkpoint=False) as session:
        if session is not None:
            results = [session.compute(mbi, screening=screening), session.compute(mbi)]
    if MPI.COMM_WORLD.Get_rank() != 0:
        assert session is None and not results
        return
    screened, full = results
    reference = sequential_reference(mbi)
    cheap = sequential_reference(truncated.cheap_input(mbi, "tblite", "gfn2-xtb"))
    kept = truncated.kept_nmers(mbi, reference, screening["distance"], screening["energy"], threshold, cheap)
    assert truncated.assert_truncated(screened, mbi, reference, kept, 1e-11, ("energy", "gradient")) >= 4
    gradient = truncated.truncated_total(mbi, reference, kept, "nocp", 3, "gradient")
    np.testing.assert_allclose(np.ravel(screened.return_result), np.ravel(gradient), rtol=0, atol=1e-11)
    assert set(screened.cluster_properties) == truncated.needed_labels(mbi, reference, kept)
    assert screened.extras["mbe_mpi"]["screening"]["prescreen"]["tasks"]["computed"] > 0
    assert_same_result(full, reference)
