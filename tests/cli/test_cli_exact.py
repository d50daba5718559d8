"""End to end: the ``-o`` result of the command line equals QCManyBody sequential, on both transports.

``python -m mbe_mpi CASE.json --n-workers 2``, ``mpiexec -n 3`` and ``mpiexec -n 4``; the reference
is QCManyBody's ``ManyBodyComputer.from_manybodyinput`` run here, after ``import mbe_mpi``.
"""

from __future__ import annotations

import functools

import pytest
from qcmanybody.models.v2 import ManyBodyResult

from ..cases import case_inputs
from ..conftest import assert_same_result, sequential_reference
from .helpers import run_cli

CASES = case_inputs()
LAUNCHES = {"local-2": dict(ranks=None, extra=["--n-workers", "2"]), "mpi-3": dict(ranks=3, extra=[]),
            "mpi-4": dict(ranks=4, extra=[])}


@functools.cache
def reference(name: str):
    return sequential_reference(CASES[name])


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_result_equals_sequential(name, launch, tmp_path):
    case_file = tmp_path / f"{name}.json"
    case_file.write_text(CASES[name].model_dump_json())
    out = tmp_path / "out.json"
    how = LAUNCHES[launch]
    proc = run_cli([str(case_file), "-o", str(out), *how["extra"]], ranks=how["ranks"])
    assert proc.returncode == 0, proc.stderr
    assert "return_energy" in proc.stdout  # the summary is printed (once, by rank 0)
    assert proc.stdout.count("return_energy") == 1
    result = ManyBodyResult.model_validate_json(out.read_text())
    workers = 2 if how["ranks"] is None else how["ranks"] - 1
    assert result.extras["mbe_mpi"]["n_workers"] == workers
    assert_same_result(result, reference(name))


def test_default_output_is_beside_the_input(tmp_path):
    case_file = tmp_path / "water.json"
    case_file.write_text(CASES["hessian-nocp"].model_dump_json())
    proc = run_cli([str(case_file), "--n-workers", "1", "-q"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # -q: nothing but errors
    result = ManyBodyResult.model_validate_json((tmp_path / "water.result.json").read_text())
    assert_same_result(result, reference("hessian-nocp"))


def test_single_rank_mpiexec_runs_local_fallback(tmp_path):
    case_file = tmp_path / "water.json"
    case_file.write_text(CASES["hessian-nocp"].model_dump_json())
    out = tmp_path / "out.json"
    proc = run_cli([str(case_file), "-o", str(out), "--n-workers", "2"], ranks=1)
    assert proc.returncode == 0, proc.stderr
    assert "single-node fallback" in proc.stderr
    result = ManyBodyResult.model_validate_json(out.read_text())
    assert result.extras["mbe_mpi"]["transport"] == "local"
    assert_same_result(result, reference("hessian-nocp"))


def test_api_local_keeps_cluster_results_when_asked():
    """``protocols.cluster_results: all`` keeps every fragment's AtomicResult, as the sequential computer does."""
    import mbe_mpi

    from ..conftest import cluster_molecule, manybody_input

    mbi = manybody_input(cluster_molecule(3), bsse=["cp"], max_nbody=2, cluster_results="all",
                         specification={"program": "tblite", "driver": "energy",
                                        "model": {"method": "gfn2-xtb", "basis": None}})
    result = mbe_mpi.compute(mbi, n_workers=2)
    ref = sequential_reference(mbi)
    assert_same_result(result, ref)
    assert list(result.cluster_results) == list(ref.cluster_results)  # same labels, same order
    for label, atomic in ref.cluster_results.items():
        assert result.cluster_results[label].return_result == atomic.return_result
        assert result.cluster_results[label].molecule == atomic.molecule
