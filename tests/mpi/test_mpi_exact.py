"""Under MPI (``mpiexec -n 3 python -m mpi4py -m pytest --with-mpi tests/mpi``): exact results.

Every rank calls ``mbe_mpi.compute`` (SPMD); rank 0 compares with QCManyBody's sequential computer
run in the same test.
"""

from __future__ import annotations

import pytest

from ..cases import case_inputs
from ..conftest import assert_same_result, sequential_reference

CASES = case_inputs()


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_sequential_qcmanybody(name):
    from mpi4py import MPI

    import mbe_mpi

    mbi = CASES[name]
    result = mbe_mpi.compute(mbi)
    if MPI.COMM_WORLD.Get_rank() != 0:
        assert result is None
        return
    assert result.extras["mbe_mpi"]["transport"] == "mpi"
    assert result.extras["mbe_mpi"]["n_workers"] == MPI.COMM_WORLD.Get_size() - 1
    assert_same_result(result, sequential_reference(mbi))


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(120)
def test_bad_input_raises_on_every_rank():
    from mbe_mpi import compute
    from mbe_mpi.errors import InputError

    mbi = CASES["gradient-cp"]
    with pytest.raises(InputError, match="max_nbody"):
        compute(mbi.model_copy(update={"specification": mbi.specification.model_copy(update={
            "keywords": mbi.specification.keywords.model_copy(update={"max_nbody": 7})})}))
