"""Progress on rank 0: a live bar on a terminal (also through mpiexec), plain lines in batch logs."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

from ..cases import case_inputs
from .helpers import REPO, mpiexec, run_cli


def _case(tmp_path):
    path = tmp_path / "case.json"
    path.write_text(case_inputs()["xtb-gradient-supersystem"].model_dump_json())
    return path


def _run_on_a_terminal(command, cwd) -> tuple[int, str]:
    """Run with stdout/stderr on a pseudo-terminal, as a user at a shell would; return everything shown."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    return proc.wait(timeout=240), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("ranks", [None, 3], ids=["local-2", "mpi-3"])
def test_terminal_shows_live_bars(ranks, tmp_path):
    command = [sys.executable, "-m", "mbe_mpi", str(_case(tmp_path)), "-o", str(tmp_path / "out.json"),
               "--n-workers", "2"]
    if ranks:
        command = [mpiexec(), "-n", str(ranks), *command]
    code, shown = _run_on_a_terminal(command, REPO)
    assert code == 0, shown
    assert "\x1b[" in shown and "F\x1b[2K" in shown  # redrawn in place
    for level in ("1-body", "2-body", "4-body"):
        assert f"{level} [" in shown
    assert "[" + "#" * 30 + "]" in shown  # a full bar
    assert "ETA" in shown
    assert "return_energy" in shown  # the summary follows


def test_batch_log_gets_plain_lines(tmp_path):
    proc = run_cli([str(_case(tmp_path)), "-o", str(tmp_path / "out.json")], ranks=3)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mbe_mpi: ")]
    assert lines and all("done" in line and "ETA" in line for line in lines)
    assert any("all levels 21/21 done" in line for line in lines)  # 2 x (4 + 6) at two levels + the supersystem


def test_quiet_and_no_progress_print_nothing_but_results(tmp_path):
    proc = run_cli([str(_case(tmp_path)), "-o", str(tmp_path / "out.json"), "--n-workers", "2", "--no-progress"])
    assert proc.returncode == 0 and proc.stderr == ""
    quiet = run_cli([str(_case(tmp_path)), "-o", str(tmp_path / "out.json"), "--n-workers", "2", "-q"])
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
