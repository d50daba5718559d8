"""Run the command line as a user would: ``python -m mbe_mpi`` locally or under ``mpiexec``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: the environment that makes the test-only plugin ``worker_exit`` importable (see tests/data/plugins)
WORKER_EXIT_PLUGIN = {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
    [str(REPO / "tests" / "data" / "plugins"), *filter(None, [os.environ.get("PYTHONPATH")])])}


def mpiexec() -> str:
    path = shutil.which("mpiexec")
    if path is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    return path


def run_cli(args: list[str], *, ranks: int | None = None, timeout: float = 240, cwd: Path | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m mbe_mpi ARGS``, under ``mpiexec -n RANKS`` when ranks is given."""
    command = [sys.executable, "-m", "mbe_mpi", *args]
    if ranks is not None:
        command = [mpiexec(), "-n", str(ranks), *command]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, env=full_env)
