"""The node facts in a kept AtomicResult's provenance: py-cpuinfo asked once per node and boot, not per process.

Each check runs in a fresh interpreter, so that QCEngine has not found the facts already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mbe_mpi.worker import provenance

pytestmark = pytest.mark.skipif(provenance.cache_file() is None, reason="needs the kernel's boot id (Linux)")

# A worker's first kept AtomicResult, in a fresh process: what its provenance says the CPU is.
FIRST_RESULT = """
import json
from tests.conftest import cluster_molecule, manybody_input
from mbe_mpi.protocol import TaskSpec
from mbe_mpi.worker.execute import WorkerContext, run_task
mbi = manybody_input(cluster_molecule(2), bsse=["nocp"], cluster_results="all",
                     specification={"program": "tblite", "driver": "energy",
                                    "model": {"method": "gfn2-xtb", "basis": None}})
result = run_task(WorkerContext.build(mbi, rank=1, threads=1, memory_gib=1.0), TaskSpec(0, 0, (1,), (1,)))
print(json.loads(result.atomic_result_json)["provenance"]["cpu"])
"""


def first_result_cpu(cache: Path) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", FIRST_RESULT], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def kept_file(cache: Path) -> Path:
    name = provenance.cache_file().name  # the host and boot of this machine; the folder is the test's
    return cache / "mbe_mpi" / name


def test_a_kept_answer_for_this_node_and_boot_is_what_the_provenance_says(tmp_path):
    path = kept_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"brand_raw": "Kept CPU 9000", "arch": "X86_64"}))
    assert first_result_cpu(tmp_path) == "Kept CPU 9000"  # py-cpuinfo was not asked


def test_the_first_process_keeps_what_py_cpuinfo_says_and_drops_only_its_own_older_boots(tmp_path):
    import cpuinfo

    path = kept_file(tmp_path)
    prefix = provenance.node_prefix()
    older = path.with_name(f"{prefix}-{uuid.uuid4()}.json")
    other_node = path.with_name(f"{prefix}-ib-{uuid.uuid4()}.json")  # a node whose name extends this one's
    path.parent.mkdir(parents=True)
    for stale in (older, other_node):
        stale.write_text(json.dumps({"brand_raw": "stale"}))
    brand = cpuinfo.get_cpu_info()["brand_raw"]
    assert first_result_cpu(tmp_path) == brand
    assert json.loads(path.read_text())["brand_raw"] == brand
    assert not older.exists() and other_node.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, other_node.name])


def test_without_a_writable_cache_qcengine_finds_the_facts_itself(tmp_path):
    import cpuinfo

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")  # $XDG_CACHE_HOME/mbe_mpi cannot be made
    assert first_result_cpu(blocked) == cpuinfo.get_cpu_info()["brand_raw"]
