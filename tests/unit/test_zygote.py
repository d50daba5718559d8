"""The zygote: a fork of a worker rank made before MPI starts, which becomes the rank's forkserver.

Each case runs in a fresh interpreter (a process with one thread and nothing forked yet, as a rank
is before ``MPI_Init``); the MPI suites run it for real under mpiexec.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
from qcmanybody.models.v2 import ManyBodyResult

from mbe_mpi.transports.zygote import PROCESS_NAME, TASK_PROCESS_NAME, WORKER_PROCESS_NAME

from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the zygote is used on Linux")

_SCRIPT = r"""
import json, os, sys, threading, time
from mbe_mpi.transports.processes import forkserver_context
from mbe_mpi.transports.zygote import Zygote


def report(conn, watched_fd):
    try:
        target = os.readlink(f"/proc/self/fd/{watched_fd}")
    except OSError:
        target = None
    with open("/proc/self/comm") as comm:
        name = comm.read().strip()
    conn.send({"ppid": os.getppid(), "preloaded": "colorsys" in sys.modules, "name": name, "fd": target})


if __name__ == "__main__":
    mode, threads = sys.argv[1], int(sys.argv[2])
    if mode == "thread":
        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
    if mode in ("thread", "plain"):
        zygote = Zygote.fork()
        print(json.dumps({"zygote": zygote is not None}))
        if zygote is not None:
            zygote.discard()
        sys.exit()
    read_end, write_end = os.pipe()  # stands for the launcher's PMI socket: the zygote must not keep it
    zygote = Zygote.fork()
    if mode == "orphan":
        print(json.dumps({"zygote": zygote.pid}), flush=True)
        os._exit(0)
    context = forkserver_context(threads, ["colorsys"], zygote)
    ours, theirs = context.Pipe()
    child = context.Process(target=report, args=(theirs, write_end))
    child.start()
    answer = ours.recv()
    child.join()
    try:
        reaped = os.waitpid(zygote.pid, os.WNOHANG)[0] == zygote.pid
    except ChildProcessError:
        reaped = True
    print(json.dumps({**answer, "zygote": zygote.pid, "exitcode": child.exitcode, "pipe": os.readlink(f"/proc/self/fd/{write_end}"),
                      "zygote_reaped": reaped}))
"""


def _run(tmp_path, mode: str, threads: int = 1, **variables: str) -> dict:
    script = tmp_path / "zygote_case.py"
    script.write_text(_SCRIPT)
    env = {key: value for key, value in os.environ.items() if key not in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    proc = subprocess.run([sys.executable, str(script), mode, str(threads)], capture_output=True, text=True,
                          timeout=120, env={**env, "OMP_NUM_THREADS": "1", **variables})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_processes_fork_from_the_zygote_with_the_preload_and_none_of_its_descriptors(tmp_path):
    answer = _run(tmp_path, "serve")
    assert answer["ppid"] == answer["zygote"]  # forked by the zygote, not by a spawned forkserver
    assert answer["preloaded"] and answer["exitcode"] == 0
    assert answer["name"] == PROCESS_NAME
    assert answer["fd"] != answer["pipe"]  # the descriptor the parent had when it forked is not inherited


def test_a_zygote_that_cannot_serve_the_thread_count_ends_and_a_spawned_forkserver_serves(tmp_path):
    # MKL would read 2 threads: what was loaded in the rank is not what the run asks for
    answer = _run(tmp_path, "serve", threads=1, MKL_NUM_THREADS="2")
    assert answer["ppid"] != answer["zygote"] and answer["exitcode"] == 0 and answer["preloaded"]
    assert answer["zygote_reaped"]


def test_no_zygote_while_another_thread_runs(tmp_path):
    assert _run(tmp_path, "plain") == {"zygote": True}
    assert _run(tmp_path, "thread") == {"zygote": False}
    # NumPy's OpenBLAS started a thread of its own for OMP_NUM_THREADS=2: that counts too
    assert _run(tmp_path, "plain", OMP_NUM_THREADS="2") == {"zygote": False}


def test_the_zygote_ends_when_its_rank_is_gone(tmp_path):
    pid = _run(tmp_path, "orphan")["zygote"]
    deadline = time.monotonic() + 10
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        assert time.monotonic() < deadline, "the zygote outlived its rank"
        time.sleep(0.05)


_LOCAL_SCRIPT = r"""
import json, logging, sys
import psutil

logging.basicConfig(filename=sys.argv[2], level=logging.INFO)  # the user's log file: a descriptor the zygote closes
import mbe_mpi
from mbe_mpi.transports.zygote import PROCESS_NAME
from qcmanybody.models.v2 import ManyBodyInput



def tree(process):
    return [process.name(), sorted(tree(child) for child in process.children())]


mbi = ManyBodyInput.model_validate_json(open(sys.argv[1]).read())
print("before the session")  # stdout is a pipe: this waits in the buffer when the zygote is forked
with mbe_mpi.Session(n_workers=int(sys.argv[3]), retry_backoff=0.1) as session:
    result = session.compute(mbi)
    zygotes = [tree(child) for child in psutil.Process().children() if child.name() == PROCESS_NAME]
print(json.dumps({"tree": zygotes, "result": result.model_dump_json()}))
"""


def _run_local(tmp_path, mbi, n_workers: int) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``mbi`` on a session of ``n_workers`` in a fresh interpreter; its output and the process tree."""
    case, log = tmp_path / "case.json", tmp_path / "user.log"
    case.write_text(mbi.model_dump_json())
    script = tmp_path / "local_case.py"
    script.write_text(_LOCAL_SCRIPT)
    env = {key: value for key, value in os.environ.items()
           if key not in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONUNBUFFERED")}
    proc = subprocess.run([sys.executable, str(script), str(case), str(log), str(n_workers)], capture_output=True,
                          text=True, timeout=120, env={**env, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def _faulty(tmp_path, kind: str):
    """A water trimer whose dimers each fail once with ``kind``."""
    state = tmp_path / "state"
    state.mkdir()
    fault = {"kind": kind, "when_natoms_real": 6, "when_natoms_ghost": 0, "attempts": 1}
    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": {"fault": fault, "state_dir": str(state)}}
    return manybody_input(cluster_molecule(3), bsse=["nocp"], specification=spec)


def test_local_workers_fork_from_a_zygote_of_the_master_and_log_as_their_own(tmp_path):
    mbi = _faulty(tmp_path, "raise")
    proc, answer = _run_local(tmp_path, mbi, n_workers=2)
    assert proc.stdout.count("before the session") == 1  # not once more from each worker
    # master -> its zygote, the forkserver -> two workers -> each: its QC child (forked from it), and its own
    # forkserver (for restarts); no spawned interpreter anywhere
    worker = [WORKER_PROCESS_NAME, [[PROCESS_NAME, []], [TASK_PROCESS_NAME, []]]]
    assert answer["tree"] == [[PROCESS_NAME, [worker, worker]]]
    # the workers' logging is their own, on stderr: not the master's handler on a descriptor the zygote closed
    failed = [line for line in proc.stderr.splitlines() if "INFO: task" in line and "failed" in line]
    assert len(failed) == 3 and all(line.startswith(("mbe_mpi[worker 1]", "mbe_mpi[worker 2]")) for line in failed)
    user_log = (tmp_path / "user.log").read_text()
    assert "failed on worker" in user_log and "on rank" not in user_log and "Logging error" not in proc.stderr
    assert_same_result(ManyBodyResult.model_validate_json(answer["result"]), sequential_reference(mbi))


def test_a_local_qc_child_that_crashed_is_forked_again_from_the_workers_own_forkserver(tmp_path):
    """Not spawned (a fresh interpreter importing QCEngine and the QC program: seconds per crash)."""
    mbi = _faulty(tmp_path, "segfault")
    proc, answer = _run_local(tmp_path, mbi, n_workers=1)
    worker = [WORKER_PROCESS_NAME, [[PROCESS_NAME, [[TASK_PROCESS_NAME, []]]]]]
    assert answer["tree"] == [[PROCESS_NAME, [worker]]]
    crashed = [line for line in proc.stderr.splitlines() if "INFO: task" in line and "SIGSEGV" in line]
    assert len(crashed) == 3, proc.stderr
    assert_same_result(ManyBodyResult.model_validate_json(answer["result"]), sequential_reference(mbi))
