"""Checkpoint/restart and the result cache, end to end through the command line.

Uses the ``synthetic`` program (a stand-in with a known sleep cost, not chemistry) so that a run
lasts long enough to be killed mid-way.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest
from qcmanybody.models.v2 import ManyBodyResult

from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference
from .helpers import mpiexec, run_cli


def _synthetic_input(n_waters=6, seconds=0.15, max_nbody=3, bsse=("nocp",)):
    spec = {"program": "synthetic", "driver": "gradient",
            "model": {"method": "synthetic", "basis": None}, "keywords": {"seconds": seconds}}
    return manybody_input(cluster_molecule(n_waters), driver="gradient", bsse=list(bsse), max_nbody=max_nbody,
                          specification=spec)


def _journaled(checkpoint) -> int:
    try:
        with sqlite3.connect(f"file:{checkpoint}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0  # not created yet


def _start(args, ranks, cwd):
    command = [sys.executable, "-m", "mbe_mpi", *args]
    if ranks:
        command = [mpiexec(), "-n", str(ranks), *command]
    return subprocess.Popen(command, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_results(proc, checkpoint, count, timeout=120):
    deadline = time.monotonic() + timeout
    while _journaled(checkpoint) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)


def _kill_everything(proc):
    """kill -9 of mpiexec and every rank (the whole process tree), as a node failure would."""
    family = [proc.pid] + [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.mark.parametrize("ranks", [3, None], ids=["mpi-3", "local-2"])
def test_kill_9_then_same_command_resumes_exactly(ranks, tmp_path):
    mbi = _synthetic_input()
    case = tmp_path / "case.json"
    case.write_text(mbi.model_dump_json())
    out = tmp_path / "out.json"
    checkpoint = tmp_path / "out.checkpoint.sqlite"
    args = [str(case), "-o", str(out), "--n-workers", "2"]
    total = 41  # 6 + 15 + 20 tasks
    proc = _start(args, ranks, tmp_path)
    _wait_for_results(proc, checkpoint, random.Random().randint(3, 25))
    _kill_everything(proc)
    journaled = _journaled(checkpoint)
    assert 3 <= journaled < total and not out.exists()

    again = run_cli(args, ranks=ranks, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming from checkpoint" in again.stderr
    result = ManyBodyResult.model_validate_json(out.read_text())
    stats = result.extras["mbe_mpi"]
    assert stats["computed"] <= total - journaled
    assert stats["computed"] + stats["from_checkpoint"] == total
    assert_same_result(result, sequential_reference(mbi))
    assert not checkpoint.exists()  # a completed run leaves only its output


@pytest.mark.parametrize("ranks, stop_signal", [(3, signal.SIGTERM), (None, signal.SIGTERM), (None, signal.SIGUSR1)],
                         ids=["mpi-3-TERM", "local-2-TERM", "local-2-USR1"])
def test_stop_signal_stops_cleanly_and_says_how_to_resume(ranks, stop_signal, tmp_path):
    mbi = _synthetic_input(seconds=0.15)
    case = tmp_path / "case.json"
    case.write_text(mbi.model_dump_json())
    args = [str(case), "-o", "out.json", "--n-workers", "2"]
    checkpoint = tmp_path / "out.checkpoint.sqlite"
    proc = _start(args, ranks, tmp_path)
    _wait_for_results(proc, checkpoint, 5)
    proc.send_signal(stop_signal)  # mpiexec forwards it to every rank; workers leave it to the master
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 4, stderr
    assert f"received {stop_signal.name}" in stderr and "rerun the same command to resume" in stderr
    assert "Traceback" not in stderr
    saved = _journaled(checkpoint)
    assert 5 <= saved < 41

    again = run_cli(args, ranks=ranks, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    result = ManyBodyResult.model_validate_json((tmp_path / "out.json").read_text())
    assert result.extras["mbe_mpi"]["computed"] == 41 - saved
    assert_same_result(result, sequential_reference(mbi))


def test_sigterm_with_a_long_task_ends_mpi_job_without_waiting(tmp_path):
    """stop_grace 0: running tasks are abandoned (MPI_Abort ends the busy ranks), results kept."""
    mbi = _synthetic_input(n_waters=3, seconds=0.05, max_nbody=2)
    data = json.loads(mbi.model_dump_json())
    data["specification"]["specification"]["(auto)"]["keywords"] = {"seconds": 0.05, "exponent": 2.0}
    data["execution"] = {"stop_grace": 0}
    case = tmp_path / "case.json"
    case.write_text(json.dumps(data))
    proc = _start([str(case), "-o", "out.json"], 3, tmp_path)
    checkpoint = tmp_path / "out.checkpoint.sqlite"
    _wait_for_results(proc, checkpoint, 3)  # monomers done (0.45 s); dimers take 1.8 s each
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - started < 1.5
    assert proc.returncode == 4, stderr
    assert "rerun the same command to resume" in stderr
    assert _journaled(checkpoint) >= 3


def test_foreign_checkpoint_is_refused_and_fresh_starts_over(tmp_path):
    case = tmp_path / "case.json"
    case.write_text(_synthetic_input(n_waters=3, seconds=0.0, max_nbody=2).model_dump_json())
    from mbe_mpi.checkpoint import ResultStore

    store = ResultStore(tmp_path / "case.result.checkpoint.sqlite")
    store.claim("some other input")
    store.close()
    refused = run_cli([str(case)], cwd=tmp_path)
    assert refused.returncode == 2
    assert "belongs to a different input" in refused.stderr and "--fresh" in refused.stderr
    fresh = run_cli([str(case), "--fresh"], cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert (tmp_path / "case.result.json").exists()


@pytest.mark.parametrize("bsse", ["nocp", "cp"])
@pytest.mark.parametrize("ranks", [None, 3], ids=["local-2", "mpi-3"])
def test_cache_from_max_nbody_2_to_3_computes_only_new_tasks(ranks, bsse, tmp_path):
    from mbe_mpi.hashing import task_hashes
    from mbe_mpi.plan import build_plan

    cache = tmp_path / "cache"
    inputs = {n: _synthetic_input(n_waters=5, seconds=0.0, max_nbody=n, bsse=(bsse,)) for n in (2, 3)}
    for max_nbody, mbi in inputs.items():
        case = tmp_path / f"mb{max_nbody}.json"
        case.write_text(mbi.model_dump_json())
        proc = run_cli([str(case), "--cache-dir", str(cache), "--n-workers", "2"], ranks=ranks, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        result = ManyBodyResult.model_validate_json((tmp_path / f"mb{max_nbody}.result.json").read_text())
        assert_same_result(result, sequential_reference(mbi))
    stats = result.extras["mbe_mpi"]
    earlier = set(task_hashes(build_plan(inputs[2])))
    needed = task_hashes(build_plan(inputs[3]))
    assert stats["from_cache"] == sum(key in earlier for key in needed)
    assert stats["computed"] == len(needed) - stats["from_cache"]
    if bsse == "nocp":  # every monomer and dimer is reused: only the 3-body tasks run
        assert stats["computed"] == stats["tasks_per_level"]["3"] == 10
    assert "cache hits" in proc.stdout
