"""Crashing, hanging and memory-hungry QC tasks, and a worker killed from outside (local transport).

Faults are injected through the ``synthetic`` program (a stand-in with a known cost, not chemistry):
``fault: {kind, when_natoms_real, when_natoms_ghost, attempts}`` picks the tasks that misbehave.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest
from qcmanybody.models.v2 import ManyBodyResult

import mbe_mpi
from mbe_mpi.errors import TaskFailedError
from mbe_mpi.transports.zygote import WORKER_PROCESS_NAME

from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference
from .helpers import REPO, WORKER_EXIT_PLUGIN

DIMERS = {"when_natoms_real": 6, "when_natoms_ghost": 0}  # the 3 nocp dimers of a water trimer


def _input(keywords=None, waters=3, driver="gradient"):
    spec = {"program": "synthetic", "driver": driver, "model": {"method": "synthetic", "basis": None},
            "keywords": keywords or {}}
    return manybody_input(cluster_molecule(waters), driver=driver, bsse=["nocp"], specification=spec)


def _journaled(path) -> int:
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0  # being created


@pytest.mark.parametrize("kind, options, expected", [
    ("segfault", {}, ("crash", "SIGSEGV")),
    ("exit", {}, ("crash", "exited with code 3")),
    ("raise", {}, (None, "synthetic fault")),
    ("hang", {"task_timeout": 2.0}, ("timeout", "task_timeout")),
    ("oom", {"memory_per_task": 0.3}, (None, "memory")),
])
def test_permanent_fault_fails_the_task_not_the_worker(kind, options, expected, tmp_path):
    """The 3 dimers fail every attempt; the 4 other tasks complete on the same 2 workers; exit listing all 3."""
    mbi = _input({"fault": {"kind": kind, **DIMERS}})
    checkpoint = tmp_path / "ckpt.sqlite"
    with pytest.raises(TaskFailedError) as failed:
        mbe_mpi.compute(mbi, n_workers=2, max_retries=1, retry_backoff=0.1, checkpoint=str(checkpoint),
                        isolate_tasks=True, **options)
    failures = failed.value.failures
    assert len(failures) == 3 and all(task.level == 2 for task, _ in failures)
    kind_expected, text = expected
    for _, message in failures:
        assert message.error.attempt == 2  # the first attempt and one retry
        assert text.lower() in message.error.message.lower()
        if kind_expected:
            assert message.error.kind == kind_expected
    assert "after 2 attempts" in str(failed.value) and "synthetic" in str(failed.value)
    assert _journaled(checkpoint) == 4  # 3 monomers + the trimer: nothing else was lost


def test_transient_fault_succeeds_on_retry_with_exact_results(tmp_path):
    keywords = {"fault": {"kind": "segfault", **DIMERS, "attempts": 1}, "state_dir": str(tmp_path / "state")}
    (tmp_path / "state").mkdir()
    result = mbe_mpi.compute(_input(keywords), n_workers=2, retry_backoff=0.1, isolate_tasks=True)
    assert len(list((tmp_path / "state").iterdir())) == 3  # each dimer crashed once
    assert_same_result(result, sequential_reference(_input()))


def test_local_worker_killed_from_outside_is_replaced_by_the_others(tmp_path):
    mbi = _input({"seconds": 0.2}, waters=5)  # 5 + 10 + 10 tasks of 0.2 s
    case = tmp_path / "case.json"
    case.write_text(mbi.model_dump_json())
    out = tmp_path / "out.json"
    proc = subprocess.Popen([sys.executable, "-m", "mbe_mpi", str(case), "-o", str(out), "--n-workers", "2"],
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "out.checkpoint.sqlite"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() or _journaled(checkpoint) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    workers = [child for child in psutil.Process(proc.pid).children(recursive=True)
               if child.name() == WORKER_PROCESS_NAME]
    assert len(workers) == 2
    os.kill(workers[0].pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "is lost" in stderr
    result = ManyBodyResult.model_validate_json(out.read_text())
    assert len(result.extras["mbe_mpi"]["lost_workers"]) == 1
    assert_same_result(result, sequential_reference(mbi))


def test_without_isolation_a_raising_task_is_retried_in_the_worker_thread(tmp_path):
    """isolate_tasks false: QC runs in a thread of the worker; an exception is still a failed, retried task."""
    keywords = {"fault": {"kind": "raise", **DIMERS, "attempts": 1}, "state_dir": str(tmp_path / "state")}
    (tmp_path / "state").mkdir()
    result = mbe_mpi.compute(_input(keywords), n_workers=2, retry_backoff=0.1, isolate_tasks=False)
    assert len(list((tmp_path / "state").iterdir())) == 3
    assert_same_result(result, sequential_reference(_input()))


def test_when_every_worker_is_gone_the_master_stops_and_keeps_the_results(tmp_path):
    mbi = _input({"seconds": 0.05}, waters=4)  # 4 + 6 + 4 tasks
    case = tmp_path / "case.json"
    case.write_text(mbi.model_dump_json())
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "mbe_mpi", str(case), "-o", str(out), "--n-workers", "1",
                           "--plugin", "worker_exit"], cwd=REPO, capture_output=True, text=True, timeout=180,
                          env={**os.environ, **WORKER_EXIT_PLUGIN, "MBE_MPI_TEST_WORKER_EXIT": "1:3"})
    assert proc.returncode == 1, proc.stderr
    assert "every worker is gone (1); 3 results were kept; rerun to resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _journaled(tmp_path / "out.checkpoint.sqlite") == 3 and not out.exists()
