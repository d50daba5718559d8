"""Ranks x threads, memory and scratch reach the QC program (checked inside PySCF, not assumed)."""

from __future__ import annotations

import json

import mbe_mpi

from ..conftest import cluster_molecule, manybody_input
from .helpers import run_cli


def _pyscf_input(**kwargs):
    return manybody_input(cluster_molecule(2), bsse=["cp"], cluster_results="all", **kwargs)


def _resources(result):
    return [atomic.extras["pyscf_resources"] for atomic in result.cluster_results.values()]


def test_threads_and_memory_per_task_reach_pyscf():
    result = mbe_mpi.compute(_pyscf_input(), n_workers=1, threads_per_task=2, memory_per_task=1.5)
    used = _resources(result)
    assert len(used) == 3  # cp interaction energy: 2 monomers in the dimer basis and the dimer
    assert all(u["threads"] == 2 for u in used)
    assert all(u["max_memory_mb"] == 1.5 * 1024 for u in used)


def test_defaults_one_thread_and_a_share_of_memory():
    result = mbe_mpi.compute(_pyscf_input(), n_workers=2)
    used = _resources(result)
    assert all(u["threads"] == 1 for u in used)
    assert all(0 < u["max_memory_mb"] < 1024 * 1024 for u in used)


def test_each_task_has_its_own_scratch_folder(tmp_path):
    keep = tmp_path / "keep"
    result = mbe_mpi.compute(_pyscf_input(), n_workers=2, scratch_dir=str(keep), keep_scratch=True)
    used = _resources(result)
    folders = sorted(p for p in keep.iterdir() if p.is_dir())
    assert len(folders) == len(used) == 3
    assert sorted(u["tmpdir"] for u in used) == [str(f) for f in folders]
    tidy = tmp_path / "tidy"
    mbe_mpi.compute(_pyscf_input(), n_workers=2, scratch_dir=str(tidy))
    assert tidy.exists() and list(tidy.iterdir()) == []


def test_mpi_warns_when_omp_num_threads_caps_threads_per_task(tmp_path):
    case = tmp_path / "case.json"
    data = json.loads(_pyscf_input().model_dump_json())
    data["execution"] = {"threads_per_task": 2}
    case.write_text(json.dumps(data))
    proc = run_cli([str(case), "-o", str(tmp_path / "out.json")], ranks=3, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "limits threads_per_task=2" in proc.stderr and "export OMP_NUM_THREADS=2" in proc.stderr
