"""Sessions: one pool of workers for many expansions; the QCEngine procedure; the QCManyBody-style entry.

Every result is compared with QCManyBody's sequential computer run in the same test, bit for bit.
``synthetic`` is a stand-in program with a known cost (not chemistry), used for faults and timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import qcengine
from qcmanybody.models.v2 import ManyBodyResult

import mbe_mpi
from mbe_mpi.errors import InputError, TaskFailedError

from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference
from .helpers import REPO, WORKER_EXIT_PLUGIN

pytestmark = pytest.mark.timeout(300)

XTB = {"program": "tblite", "driver": "gradient", "model": {"method": "gfn2-xtb", "basis": None}}
HF = {"program": "pyscf", "driver": "energy", "model": {"method": "hf", "basis": "sto-3g"}}


def _synthetic(keywords: dict | None = None, waters: int = 3, driver: str = "energy", bsse=("nocp",)):
    spec = {"program": "synthetic", "driver": driver, "model": {"method": "synthetic", "basis": None},
            "keywords": keywords or {}}
    return manybody_input(cluster_molecule(waters), driver=driver, bsse=list(bsse), specification=spec)


def _pids(session) -> list[int]:
    return sorted(proc.pid for proc in session._pool.transport._procs.values())


def test_one_pool_serves_expansions_of_other_molecules_programs_and_drivers():
    inputs = [
        manybody_input(cluster_molecule(3), driver="gradient", bsse=["nocp"], specification=XTB),
        manybody_input(cluster_molecule(2), bsse=["cp", "nocp"], specification=HF),
        _synthetic(waters=4, driver="hessian", bsse=("vmfc",)),
        manybody_input(cluster_molecule(4), driver="gradient", bsse=["nocp"], max_nbody=2, specification=XTB),
    ]
    with mbe_mpi.Session(n_workers=2) as session:
        results = [session.compute(inputs[0])]
        workers = _pids(session)
        results += [session.compute(mbi) for mbi in inputs[1:]]
        assert _pids(session) == workers  # the same processes served every call
        later = results[-1].extras["mbe_mpi"]["timing"]["startup"]
    for mbi, result in zip(inputs, results, strict=True):
        assert_same_result(result, sequential_reference(mbi))
    assert later < 0.5  # no start-up after the first call


def test_a_failed_task_and_a_bad_input_leave_the_session_usable(tmp_path):
    failing = _synthetic({"fault": {"kind": "raise", "when_natoms_real": 6}})
    good = _synthetic()
    with mbe_mpi.Session(n_workers=2, max_retries=0) as session:
        with pytest.raises(TaskFailedError, match="synthetic fault"):
            session.compute(failing)
        with pytest.raises(InputError, match="max_nbody 7 is out of range"):
            session.compute(_synthetic().model_copy(update={"specification": good.specification.model_copy(
                update={"keywords": good.specification.keywords.model_copy(update={"max_nbody": 7})})}))
        result = session.compute(good)
    assert_same_result(result, sequential_reference(good))


_LOST_WORKER_SCRIPT = """
import sys
import mbe_mpi
from tests.cli.test_session import _synthetic

if __name__ == "__main__":
    with mbe_mpi.Session(n_workers=2, plugins=["worker_exit"]) as session:
        lost = session.compute(_synthetic({"seconds": 0.02}, waters=5))
        after = session.compute(_synthetic(waters=4, driver="gradient"))
    print(lost.model_dump_json())
    print(after.model_dump_json())
"""


def test_a_lost_worker_then_a_good_call(tmp_path):
    """In a fresh interpreter: workers fork from the process's one forkserver, whose environment is
    the one it started with (the fault setting must be there from the start)."""
    script = tmp_path / "lost_worker.py"
    script.write_text(_LOST_WORKER_SCRIPT)
    path = os.pathsep.join([str(REPO), WORKER_EXIT_PLUGIN["PYTHONPATH"]])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, **WORKER_EXIT_PLUGIN, "PYTHONPATH": path,
                               "MBE_MPI_TEST_WORKER_EXIT": "1:3"})  # worker 1 exits after its third result
    assert proc.returncode == 0, proc.stderr
    lost, after = (ManyBodyResult.model_validate_json(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert lost.extras["mbe_mpi"]["lost_workers"] == [1]
    assert after.extras["mbe_mpi"]["lost_workers"] == [] and after.extras["mbe_mpi"]["n_workers"] == 2
    assert_same_result(lost, sequential_reference(_synthetic(waters=5)))
    assert_same_result(after, sequential_reference(_synthetic(waters=4, driver="gradient")))


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
@pytest.mark.parametrize("isolate", [True, False])
def test_an_interrupted_call_then_a_good_call_gets_no_stale_results(isolate):
    """Interrupted mid-task: the running tasks' results must not be taken for the next call's (same task ids).

    In a supervised child the abandoned task is killed; a QC thread cannot be stopped, so its result
    arrives later and must be dropped by its job number.
    """
    slow = _synthetic({"seconds": 0.4}, waters=4)  # 14 tasks of 0.4 s on 2 workers
    good = _synthetic(waters=4, driver="gradient")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with mbe_mpi.Session(n_workers=2, isolate_tasks=isolate) as session:
            session.compute(good)  # workers up: the interrupt below comes while tasks run
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            with pytest.raises(KeyboardInterrupt):
                session.compute(slow)
            result = session.compute(good)  # tasks of the interrupted call were still running
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert_same_result(result, sequential_reference(good))


def test_qcengine_procedure_and_manybodycomputer_equal_qcmanybody():
    mbi = manybody_input(cluster_molecule(3), bsse=["cp", "nocp"], specification={**XTB, "driver": "energy"},
                         driver="energy")
    reference = qcengine.compute(mbi, "qcmanybody")
    assert reference.success
    via_qcengine = qcengine.compute(mbi, "mbe_mpi", task_config={"ncores": 2})
    assert via_qcengine.success, getattr(via_qcengine, "error", None)
    assert via_qcengine.extras["mbe_mpi"]["n_workers"] == 2
    assert_same_result(via_qcengine, reference)
    assert_same_result(mbe_mpi.ManyBodyComputer.from_manybodyinput(mbi, n_workers=2), reference)


def test_session_options_are_checked_at_once_and_worker_options_hold_for_the_session(caplog):
    with pytest.raises(InputError, match="n_workers"):
        mbe_mpi.Session(n_workers=0)
    with mbe_mpi.Session(n_workers=2) as session:
        result = session.compute(_synthetic(), threads_per_task=2, checkpoint=False)
    assert "threads_per_task=2 is ignored" in caplog.text
    assert result.extras["mbe_mpi"]["n_workers"] == 2


def test_compute_without_with_and_close():
    session = mbe_mpi.Session(n_workers=1)
    try:
        result = session.compute(_synthetic())
    finally:
        session.close()
    assert_same_result(result, sequential_reference(_synthetic()))
    with pytest.raises(RuntimeError, match="closed"):
        session.compute(_synthetic())

