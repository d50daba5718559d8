"""Worker ranks that hang, lose their QC process or exit, under MPICH's ``mpiexec -disable-auto-cleanup -n 4``.

A few hundred tasks of the ``synthetic`` program (a stand-in that sleeps a known time, not chemistry)
run on 3 worker ranks; mid-run, rank 2 is hit from outside. The run must complete on the others,
exit 0 and equal QCManyBody's sequential result exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from qcmanybody.models.v2 import ManyBodyResult

from mbe_mpi.transports.zygote import PROCESS_NAME, TASK_PROCESS_NAME

from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference
from .helpers import REPO, WORKER_EXIT_PLUGIN, mpiexec
from .test_faults import _journaled

pytestmark = pytest.mark.timeout(300)

WATERS = 11  # nocp 3-body: 11 + 55 + 165 = 231 tasks


def _input(seconds: float):
    spec = {"program": "synthetic", "driver": "gradient", "model": {"method": "synthetic", "basis": None},
            "keywords": {"seconds": seconds}}
    return manybody_input(cluster_molecule(WATERS), driver="gradient", bsse=["nocp"], max_nbody=3,
                          specification=spec)


def _rank_process(launcher: psutil.Process, rank: int) -> psutil.Process:
    """The process of MPI rank ``rank`` among the launcher's descendants (hydra sets PMI_RANK)."""
    for proc in launcher.children(recursive=True):
        try:
            if (proc.environ().get("PMI_RANK") == str(rank) and "mbe_mpi" in " ".join(proc.cmdline())
                    and proc.name() not in (PROCESS_NAME, TASK_PROCESS_NAME)):  # not its forkserver or QC child
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"rank {rank} not found under mpiexec")


def _launch(tmp_path: Path, execution: dict, env: dict | None = None) -> tuple[subprocess.Popen, Path, Path]:
    data = json.loads(_input(0.05).model_dump_json())
    data["execution"] = {"heartbeat_interval": 0.5, "heartbeat_timeout": 6, **execution}
    case = tmp_path / "case.json"
    case.write_text(json.dumps(data))
    out = tmp_path / "out.json"
    command = [mpiexec(), "-disable-auto-cleanup", "-n", "4", sys.executable, "-m", "mbe_mpi", str(case),
               "-o", str(out), "--no-progress"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return proc, out, tmp_path / "out.checkpoint.sqlite"


def _wait_for_results(proc: subprocess.Popen, checkpoint: Path, count: int) -> None:
    deadline = time.monotonic() + 150
    while _journaled(checkpoint) < count:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, out: Path) -> tuple[ManyBodyResult, str]:
    _, stderr = proc.communicate(timeout=200)
    assert proc.returncode == 0, stderr
    result = ManyBodyResult.model_validate_json(out.read_text())
    assert_same_result(result, sequential_reference(_input(0.0)))  # the energy does not depend on the cost
    return result, stderr


def test_stopped_rank_is_declared_lost_and_its_tasks_rerun(tmp_path):
    proc, out, checkpoint = _launch(tmp_path, {})
    _wait_for_results(proc, checkpoint, 20)
    victim = _rank_process(psutil.Process(proc.pid), 2)
    victim.send_signal(signal.SIGSTOP)  # hung: alive for the OS and for MPI, silent for the master
    result, stderr = _finish(proc, out)
    assert "worker 2 is lost (no message for" in stderr
    assert result.extras["mbe_mpi"]["lost_workers"] == [2]
    assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE  # MPI_Abort ended it too


def test_killed_qc_child_of_a_rank_is_a_failed_task_retried(tmp_path):
    proc, out, checkpoint = _launch(tmp_path, {"isolate_tasks": True, "retry_backoff": 0.1})
    _wait_for_results(proc, checkpoint, 20)
    rank2 = _rank_process(psutil.Process(proc.pid), 2)
    # the supervised QC process is forked by the rank's forkserver, a fork of the rank made before MPI
    # started (the resource tracker is another child)
    children = [qc for server in rank2.children() if server.name() == PROCESS_NAME for qc in server.children()]
    assert len(children) == 1, rank2.children()
    children[0].kill()
    result, stderr = _finish(proc, out)
    assert "killed by SIGKILL" in stderr and "retrying" in stderr
    assert result.extras["mbe_mpi"]["lost_workers"] == []  # the rank itself carried on


def test_rank_that_exits_mid_run_is_survived(tmp_path):
    proc, out, _ = _launch(tmp_path, {"plugins": ["worker_exit"]},
                           env={**WORKER_EXIT_PLUGIN, "MBE_MPI_TEST_WORKER_EXIT": "2:15"})
    result, stderr = _finish(proc, out)
    assert "worker 2 exits now (fault injection)" in stderr
    # hydra's SIGUSR1 notice found it before heartbeat_timeout (6 s) would have
    assert "mpiexec reports that a rank has ended" in stderr and "after mpiexec reported a rank's end" in stderr
    assert result.extras["mbe_mpi"]["lost_workers"] == [2]
