"""Ranks that hang while the job starts, and a master that vanishes, under MPICH's ``mpiexec -disable-auto-cleanup``.

Each case must end the job within seconds of what it waits for (``startup_timeout``,
``heartbeat_timeout``), never at the wall-clock limit. Faults come from test-only code in
``tests/data`` (a plugin that hangs a worker's start-up, a ``sitecustomize`` that stops a rank just
before ``MPI_Init``); the tasks are the ``synthetic`` program's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ..conftest import DATA
from .helpers import REPO, WORKER_EXIT_PLUGIN, mpiexec
from .test_mpi_faults import _finish, _input, _rank_process, _wait_for_results

pytestmark = pytest.mark.timeout(240)


def _case(tmp_path: Path, execution: dict, seconds: float = 0.05) -> Path:
    data = json.loads(_input(seconds).model_dump_json())
    data["execution"] = execution
    case = tmp_path / "case.json"
    case.write_text(json.dumps(data))
    return case


def _start(tmp_path: Path, case: Path, flags: list[str], env: dict, ranks: int = 4) -> subprocess.Popen:
    command = [mpiexec(), "-disable-auto-cleanup", "-n", str(ranks), sys.executable, "-m", "mbe_mpi", str(case),
               "-o", str(tmp_path / "out.json"), "--no-progress", *flags]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_rank_hung_before_ready_is_lost_at_startup_timeout_and_the_run_ends_with_its_work(tmp_path):
    case = _case(tmp_path, {"heartbeat_interval": 0.5, "heartbeat_timeout": 30, "plugins": ["slow_start"]})
    started = time.monotonic()
    proc = _start(tmp_path, case, ["--startup-timeout", "6"], {**WORKER_EXIT_PLUGIN, "MBE_MPI_TEST_SLOW_START": "2"})
    result, stderr = _finish(proc, tmp_path / "out.json")  # exit 0, exactly QCManyBody's numbers
    elapsed = time.monotonic() - started
    assert "worker 2 is lost (it did not start within startup_timeout (6 s))" in stderr
    assert result.extras["mbe_mpi"]["lost_workers"] == [2]
    # 231 tasks of 0.05 s on 2 workers take ~6 s: the end waits neither the old 300 s nor heartbeat_timeout
    assert elapsed < 45, stderr


def test_rank_hung_before_mpi_starts_ends_the_job_after_startup_timeout(tmp_path):
    case = _case(tmp_path, {})
    env = {"PYTHONPATH": os.pathsep.join([str(DATA / "startup"), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "MBE_MPI_TEST_STOP_BEFORE_MPI": "2"}
    started = time.monotonic()
    proc = _start(tmp_path, case, ["--startup-timeout", "5"], env, ranks=3)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert stderr.count("mbe_mpi: MPI did not start on all ranks within 5 s (a rank is hung or its node is "
                        "down); rerun to resume") == 1, stderr
    assert "Traceback" not in stderr
    assert 5 <= elapsed < 30
    assert not (tmp_path / "out.json").exists()


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_workers_end_within_heartbeat_timeout_when_rank_0_is_gone(how, tmp_path):
    """Killed (hydra may or may not end the job for it) or hung (hydra never notices): the workers end themselves."""
    case = _case(tmp_path, {"heartbeat_interval": 0.5, "heartbeat_timeout": 5})
    proc = _start(tmp_path, case, [], {})
    checkpoint = tmp_path / "out.checkpoint.sqlite"
    _wait_for_results(proc, checkpoint, 10)
    launcher = psutil.Process(proc.pid)
    workers = [_rank_process(launcher, rank) for rank in (1, 2, 3)]
    master = _rank_process(launcher, 0)
    master.send_signal(how)
    deadline = time.monotonic() + 5 + 10  # heartbeat_timeout and a little
    while not all(_gone(worker) for worker in workers):
        assert time.monotonic() < deadline, [worker.status() for worker in workers]
        time.sleep(0.2)
    with contextlib.suppress(psutil.NoSuchProcess):
        master.kill()  # a hung master is the launcher's to end
    _, stderr = proc.communicate(timeout=60)
    if how == signal.SIGSTOP:
        assert "rank 0 (the master) has sent nothing for 5 s" in stderr, stderr
