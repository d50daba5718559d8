"""The worker side without a transport: ``serve``, the thread executor and the supervised QC child.

A fake endpoint plays the master: it hands the worker scripted messages and records what comes back.
The QC program is ``synthetic`` (a stand-in with a known cost and an analytic energy, not chemistry),
so the numbers can be compared with an in-process ``run_task``.
"""

from __future__ import annotations

import collections
import time

import pytest

from mbe_mpi.options import ExecutionOptions
from mbe_mpi.plan import build_plan
from mbe_mpi.protocol import (
    GoodbyeMessage,
    HeartbeatMessage,
    JobMessage,
    ReadyMessage,
    ResultBatch,
    ShutdownMessage,
    StealMessage,
    StolenMessage,
    TaskMessage,
    TaskSpec,
    decode,
    encode,
)
from mbe_mpi.worker import WorkerInit
from mbe_mpi.worker.execute import WorkerContext, run_task
from mbe_mpi.worker.executors import thread_executor
from mbe_mpi.worker.serve import serve
from mbe_mpi.worker.supervise import QCChild

from ..conftest import cluster_molecule, manybody_input


def _input(keywords: dict | None = None):
    spec = {"program": "synthetic", "driver": "gradient", "model": {"method": "synthetic", "basis": None},
            "keywords": keywords or {}}
    return manybody_input(cluster_molecule(3), driver="gradient", bsse=["cp"], specification=spec)


def _job(mbi, job_id: int = 1) -> JobMessage:
    return JobMessage(job_id, mbi.model_dump_json(), build_plan(mbi).model_chemistries)


def _specs(mbi) -> list[TaskSpec]:
    return [TaskSpec(t.index, t.mc_index, t.real, t.basis) for t in build_plan(mbi).tasks]


class FakeMaster:
    """A WorkerEndpoint: delivers ``script`` messages one per poll once ``when(sent)`` holds for each."""

    rank = 1

    def __init__(self, script: list[tuple[object, object]]):
        self.script = collections.deque(script)  # (message, condition on what the worker sent so far)
        self.sent: list[object] = []

    def poll(self) -> bytes | None:
        if self.script and self.script[0][1](self.sent):
            return encode(self.script.popleft()[0])
        return None

    def send(self, data: bytes) -> None:
        self.sent.append(decode(data))

    def inherited_fds(self) -> tuple[int, ...]:
        return ()

    def results(self):
        return [r for m in self.sent if isinstance(m, ResultBatch) for r in m.results]


def always(sent):
    return True


def _results_in(count):
    return lambda sent: sum(len(m.results) for m in sent if isinstance(m, ResultBatch)) >= count


def _init(**options) -> WorkerInit:
    return WorkerInit.from_options(ExecutionOptions(**options), memory_gib=1.0)


def test_serve_answers_every_task_then_says_goodbye_last():
    mbi = _input()
    specs = _specs(mbi)
    master = FakeMaster([(_job(mbi), always), (TaskMessage(tuple(specs)), always),
                         (ShutdownMessage(), _results_in(len(specs)))])
    serve(master, thread_executor(1, _init(isolate_tasks=False)), heartbeat_interval=60)
    assert isinstance(master.sent[0], ReadyMessage)
    assert isinstance(master.sent[-1], GoodbyeMessage)
    ctx = WorkerContext.build(mbi, rank=1, threads=1, memory_gib=1.0)
    for result in master.results():
        expected = run_task(ctx, specs[result.task_id])
        assert result.ok and result.energy == expected.energy
        assert result.gradient.tobytes() == expected.gradient.tobytes()
    assert sorted(r.task_id for r in master.results()) == [s.task_id for s in specs]


def test_steal_gives_back_queued_tasks_that_then_never_run_here():
    mbi = _input({"seconds": 0.05})
    specs = _specs(mbi)
    master = FakeMaster([(_job(mbi), always), (TaskMessage(tuple(specs)), always), (StealMessage(3), always)])
    master.script.append((ShutdownMessage(), lambda sent: any(isinstance(m, StolenMessage) for m in sent)
                          and _results_in(len(specs) - len(next(m for m in sent if isinstance(m, StolenMessage))
                                                           .task_ids))(sent)))
    serve(master, thread_executor(1, _init(isolate_tasks=False)), heartbeat_interval=60)
    (stolen,) = [m for m in master.sent if isinstance(m, StolenMessage)]
    assert len(stolen.task_ids) == 3 and set(stolen.task_ids) == {s.task_id for s in specs[-3:]}  # from the back
    ran = {r.task_id for r in master.results()}
    assert ran.isdisjoint(stolen.task_ids) and ran | set(stolen.task_ids) == {s.task_id for s in specs}


def test_an_idle_worker_sends_heartbeats():
    mbi = _input()
    started = time.monotonic()
    master = FakeMaster([(_job(mbi), always), (ShutdownMessage(), lambda sent: time.monotonic() - started > 0.5)])
    serve(master, thread_executor(1, _init(isolate_tasks=False)), heartbeat_interval=0.1)
    assert sum(isinstance(m, HeartbeatMessage) for m in master.sent) >= 2


def test_thread_executor_that_cannot_start_answers_every_task_with_the_cause():
    mbi = _input()
    specs = _specs(mbi)[:2]
    master = FakeMaster([(_job(mbi), always), (TaskMessage(tuple(specs)), always),
                         (ShutdownMessage(), _results_in(2))])
    serve(master, thread_executor(1, _init(isolate_tasks=False, plugins=("no_such_plugin_xyz",))),
          heartbeat_interval=60)
    results = master.results()
    assert len(results) == 2 and all(not r.ok and r.error.kind == "startup" for r in results)
    assert "no_such_plugin_xyz" in results[0].error.message


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_supervised_child_runs_tasks_exactly_and_survives_a_crash(start, tmp_path):
    crash = {"fault": {"kind": "segfault", "when_natoms_real": 6, "when_natoms_ghost": 3, "attempts": 1},
             "state_dir": str(tmp_path)}
    mbi = _input(crash)
    specs = _specs(mbi)
    qc = QCChild(1, _init(isolate_tasks=True, task_timeout=60) if start == "spawn"
                 else WorkerInit.from_options(ExecutionOptions(), 1.0, child_start="fork"))
    qc.set_job(_job(mbi))
    qc.wait_started()
    qc.add(tuple(specs))
    deadline = time.monotonic() + 120
    while len(qc.results) < len(specs) and time.monotonic() < deadline:
        qc.activity.wait(0.1)
        qc.activity.clear()
    qc.stop()
    results = {r.task_id: r for _, r in qc.results}
    assert len(results) == len(specs)
    crashed = [r for r in results.values() if not r.ok]
    assert len(crashed) == 3  # the three dimers in the trimer's basis (counterpoise)
    assert all(r.error.kind == "crash" and "SIGSEGV" in r.error.message and r.error.label for r in crashed)
    assert qc.restarts == 3  # each time a new child took the remaining tasks
    ctx = WorkerContext.build(_input(), rank=1, threads=1, memory_gib=1.0)
    for task_id, result in results.items():
        if result.ok:
            assert result.energy == run_task(ctx, specs[task_id]).energy


def test_supervised_child_kills_a_task_past_its_timeout():
    mbi = _input({"seconds": 30})
    spec = _specs(mbi)[0]
    qc = QCChild(1, _init(isolate_tasks=True, task_timeout=0.5))
    qc.set_job(_job(mbi))
    qc.wait_started()
    started = time.monotonic()
    qc.add((spec,))
    while not qc.results and time.monotonic() - started < 60:
        qc.activity.wait(0.1)
    qc.stop()
    ((_, result),) = qc.results
    assert result.error.kind == "timeout" and time.monotonic() - started < 20
