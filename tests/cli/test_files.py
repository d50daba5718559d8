"""The files a run writes: nothing computed is lost to the output, the disk, a second run or a damaged file.

End to end through ``python -m mbe_mpi`` on local workers with the ``synthetic`` program (a stand-in
with a known cost, not chemistry). Full disks are injected with the test-only plugin ``disk_full``
(tests/data/plugins) at the result store and the output writer, the seams where SQLite and the file
system report ENOSPC; one case fills a real tmpfs where this machine lets the test mount one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from qcmanybody.models.v2 import ManyBodyResult

from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference
from .helpers import REPO, WORKER_EXIT_PLUGIN, run_cli

pytestmark = pytest.mark.timeout(180)

TOTAL = 41  # nocp 3-body of 6 waters: 6 + 15 + 20 tasks


def _input(seconds: float = 0.02):
    spec = {"program": "synthetic", "driver": "gradient", "model": {"method": "synthetic", "basis": None},
            "keywords": {"seconds": seconds}}
    return manybody_input(cluster_molecule(6), driver="gradient", bsse=["nocp"], max_nbody=3, specification=spec)


def _case(tmp_path: Path, seconds: float = 0.02) -> Path:
    case = tmp_path / "case.json"
    case.write_text(_input(seconds).model_dump_json())
    return case


def _journaled(path: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def _one_line(proc: subprocess.CompletedProcess, code: int, *phrases: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mbe_mpi: error:")]
    assert len(errors) == 1, proc.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def _exact(out: Path) -> dict:
    result = ManyBodyResult.model_validate_json(out.read_text())
    assert_same_result(result, sequential_reference(_input(0.0)))  # the numbers do not depend on the cost
    return result.extras["mbe_mpi"]


@pytest.mark.parametrize("where, phrase", [("a-directory", "is a directory"),
                                           ("missing/out.json", "does not exist")])
def test_output_that_cannot_be_written_is_refused_before_any_qc_work(where, phrase, tmp_path):
    (tmp_path / "a-directory").mkdir()
    started = time.monotonic()
    proc = run_cli([str(_case(tmp_path, seconds=1.0)), "-o", str(tmp_path / where), "--no-checkpoint",
                    "--n-workers", "2"], cwd=tmp_path)
    _one_line(proc, 2, phrase)
    assert time.monotonic() - started < 20  # 41 tasks of 1 s were not run first


def test_output_write_failing_at_the_end_keeps_the_checkpoint_and_the_rerun_writes_it(tmp_path):
    case, out = _case(tmp_path), tmp_path / "out.json"
    args = [str(case), "-o", str(out), "--n-workers", "2"]
    failed = run_cli([*args, "--plugin", "disk_full"], cwd=tmp_path,
                     env={**WORKER_EXIT_PLUGIN, "MBE_MPI_TEST_DISK_FULL": "output:0"})
    _one_line(failed, 5, f"cannot write the result to {out}", "kept in the checkpoint", "rerun the same command")
    assert not out.exists() and _journaled(tmp_path / "out.checkpoint.sqlite") == TOTAL

    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    stats = _exact(out)
    assert stats["computed"] == 0 and stats["from_checkpoint"] == TOTAL
    assert not (tmp_path / "out.checkpoint.sqlite").exists()


def test_checkpoint_write_failing_stops_the_run_and_the_rerun_resumes(tmp_path):
    case, out = _case(tmp_path), tmp_path / "out.json"
    args = [str(case), "-o", str(out), "--n-workers", "2"]
    failed = run_cli([*args, "--plugin", "disk_full"], cwd=tmp_path,
                     env={**WORKER_EXIT_PLUGIN, "MBE_MPI_TEST_DISK_FULL": "checkpoint:8"})
    _one_line(failed, 5, "cannot write the checkpoint", "database or disk is full", "8 of 41 QC results are saved",
              "rerun the same command to resume")
    assert not out.exists() and _journaled(tmp_path / "out.checkpoint.sqlite") == 8

    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    stats = _exact(out)
    assert stats["from_checkpoint"] == 8 and stats["computed"] == TOTAL - 8


def test_cache_write_failing_warns_once_and_the_run_carries_on(tmp_path):
    out = tmp_path / "out.json"
    proc = run_cli([str(_case(tmp_path)), "-o", str(out), "--n-workers", "2", "--cache-dir", str(tmp_path / "cache"),
                    "--plugin", "disk_full"], cwd=tmp_path, env={**WORKER_EXIT_PLUGIN, "MBE_MPI_TEST_DISK_FULL": "cache:5"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("cannot be used any more (database or disk is full); carrying on without it") == 1
    assert _exact(out)["computed"] == TOTAL


def test_a_second_run_on_the_same_checkpoint_is_refused_at_once(tmp_path):
    # 1 s tasks: the first run still has ~19 s of work while both refused runs are tried, however loaded the machine
    case, out = _case(tmp_path, seconds=1.0), tmp_path / "out.json"
    args = [str(case), "-o", str(out), "--n-workers", "2"]
    first = subprocess.Popen([sys.executable, "-m", "mbe_mpi", *args, "--no-progress"], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    checkpoint = tmp_path / "out.checkpoint.sqlite"
    deadline = time.monotonic() + 60
    while _journaled(checkpoint) < 3:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    for extra in ([], ["--fresh"]):  # not even --fresh may take another run's checkpoint away
        second = run_cli([*args, *extra], cwd=tmp_path, timeout=60)
        assert first.poll() is None, "the first run ended before the second was tried: the test proves nothing"
        _one_line(second, 2, "another run is using the checkpoint", f"{checkpoint}.lock")
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert _exact(out)["computed"] == TOTAL
    assert not checkpoint.exists() and not Path(f"{checkpoint}.lock").exists()


def test_two_runs_sharing_one_cache_at_once_are_both_exact(tmp_path):
    cache = tmp_path / "cache"
    case = _case(tmp_path, seconds=0.05)
    procs = [subprocess.Popen([sys.executable, "-m", "mbe_mpi", str(case), "-o", str(tmp_path / f"out{i}.json"),
                               "--n-workers", "1", "--cache-dir", str(cache), "--no-progress"], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for i in (1, 2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=150)
        assert proc.returncode == 0, stderr
    stats = [_exact(tmp_path / f"out{i}.json") for i in (1, 2)]
    assert all(s["computed"] + s["from_cache"] == TOTAL for s in stats)
    with contextlib.closing(sqlite3.connect(cache / "results.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == TOTAL  # consistent: each task once


def _damage_inner_pages(path: Path) -> None:
    """Overwrite two pages in the middle of an SQLite file (what a bad sector or a stray write leaves)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert pages >= 6
    with open(path, "r+b") as file:
        for number in (pages // 2, pages // 2 + 1):
            file.seek(number * page)
            file.write(os.urandom(page))


def test_checkpoint_with_damaged_inner_pages_is_one_line_and_exit_2(tmp_path):
    case, out = _case(tmp_path, seconds=0.0), tmp_path / "out.json"
    killed = run_cli([str(case), "-o", str(out), "--n-workers", "2", "--plugin", "disk_full"], cwd=tmp_path,
                     env={**WORKER_EXIT_PLUGIN, "MBE_MPI_TEST_DISK_FULL": "output:0"})
    assert killed.returncode == 5, killed.stderr  # every result stays in the checkpoint
    _damage_inner_pages(tmp_path / "out.checkpoint.sqlite")
    proc = run_cli([str(case), "-o", str(out), "--n-workers", "2"], cwd=tmp_path)
    _one_line(proc, 2, "out.checkpoint.sqlite cannot be used", "--fresh")
    fresh = run_cli([str(case), "-o", str(out), "--n-workers", "2", "--fresh"], cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MB tmpfs (needs root and permission to mount; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_real_full_disk_under_the_checkpoint_is_a_clear_stop(small_tmpfs, tmp_path):
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * 800_000)
    out = small_tmpfs / "out.json"
    proc = run_cli([str(_case(tmp_path)), "-o", str(out), "--n-workers", "2"], cwd=tmp_path)
    if proc.returncode == 0:
        pytest.skip("the checkpoint fitted after all")
    if proc.returncode == 2:  # full already when the checkpoint was created: refused before any QC work
        _one_line(proc, 2, "cannot be used")
        return
    _one_line(proc, 5, "database or disk is full", "rerun the same command")
    filler.unlink()
    again = run_cli([str(_case(tmp_path)), "-o", str(out), "--n-workers", "2"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    _exact(out)
