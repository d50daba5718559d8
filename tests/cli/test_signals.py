"""Signals and a vanished master in the start-up window and mid-run (local workers).

A stop signal that comes while the run is still starting means what it means later (exit 4 and a
message, not a silent exit 143); Ctrl-C says how to resume; and a master killed with ``kill -9``
at any moment leaves no worker or QC process behind. Tasks are the ``synthetic`` program's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from .helpers import REPO, run_cli
from .test_files import TOTAL, _case, _exact, _journaled

pytestmark = pytest.mark.timeout(180)


def _start(tmp_path, case, marker: str = "", own_group: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mbe_mpi", str(case), "-o", str(tmp_path / "out.json"),
                             "--n-workers", "2", "--no-progress"], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=own_group,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "MBE_MPI_TEST_MARK": marker})


def _catches_sigterm(pid: int) -> bool:
    """The early handlers are in (``SigCgt`` in /proc has SIGTERM's bit): the package's imports begin."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.5])
def test_sigterm_while_starting_stops_cleanly_with_a_message(delay, tmp_path):
    proc = _start(tmp_path, _case(tmp_path, seconds=0.2))
    time.sleep(delay)  # importing, reading the input, or starting the workers
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 4, stderr
    assert "received SIGTERM" in stderr and "rerun the same command" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("moment", ["imports", 0.9, 1.5])
def test_ctrl_c_while_starting_exits_130_with_one_line(moment, tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole process group) while the package is still importing,
    reading the input or starting the workers: one line, exit 130, no traceback from any process."""
    proc = _start(tmp_path, _case(tmp_path, seconds=0.2), own_group=True)
    if moment == "imports":  # the moment the early handlers are in, with a second of imports ahead
        deadline = time.monotonic() + 30
        while not _catches_sigterm(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.002)
    else:
        time.sleep(moment)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.count("mbe_mpi: interrupted") == 1, stderr
    if moment == "imports":
        assert "before any QC task started; nothing to resume" in stderr, stderr


def test_ctrl_c_says_how_to_resume_and_the_rerun_does(tmp_path):
    case = _case(tmp_path, seconds=0.1)
    proc = _start(tmp_path, case)
    checkpoint = tmp_path / "out.checkpoint.sqlite"
    deadline = time.monotonic() + 60
    while _journaled(checkpoint) < 5:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "mbe_mpi: interrupted; rerun the same command to resume" in stderr
    assert "Traceback" not in stderr
    saved = _journaled(checkpoint)
    again = run_cli([str(case), "-o", str(tmp_path / "out.json"), "--n-workers", "2"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    stats = _exact(tmp_path / "out.json")
    assert stats["from_checkpoint"] == saved and stats["computed"] == TOTAL - saved


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("MBE_MPI_TEST_MARK") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [proc for proc in found if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("delay", [1.0, 1.8, 2.6, 5.0])
def test_kill_9_of_the_master_leaves_no_process_behind(delay, tmp_path):
    """Killed while starting workers, while they start their QC children, or mid-run with tasks running."""
    marker = uuid.uuid4().hex
    proc = _start(tmp_path, _case(tmp_path, seconds=0.3), marker)
    time.sleep(delay)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while (left := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [(p.pid, p.cmdline()[:3]) for p in left]
