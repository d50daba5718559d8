"""The master loop (:class:`Master`) on a virtual clock: results taken in bursts, no worker starved.

The workers are simulated inside a fake transport: a task sent to a worker starts when the worker
is free and its RESULT becomes readable when it ends. The master reads time from the same virtual
clock (passed in), so the test is exact and instant.
"""

from __future__ import annotations

import collections
import heapq
import itertools

import pytest

from mbe_mpi.backoff import ArrivalRate
from mbe_mpi.costs import CostModel
from mbe_mpi.errors import TaskFailedError
from mbe_mpi.master import GOODBYE_TIMEOUT, LivenessSettings, Master, RunObserver, shut_down
from mbe_mpi.plan import Task, build_plan
from mbe_mpi.protocol import (
    GoodbyeMessage,
    HeartbeatMessage,
    ReadyMessage,
    ResultBatch,
    ResultMessage,
    ShutdownMessage,
    StealMessage,
    StolenMessage,
    TaskError,
    TaskMessage,
    decode,
    encode,
)
from mbe_mpi.scheduling import SchedulePolicy, Scheduler
from tests.conftest import cluster_molecule, manybody_input


class VirtualClock:
    """Stands in for the ``time`` module: sleeping moves the clock, nothing else does."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class VirtualWorkers:
    """A MasterTransport whose workers run each task for ``duration(task_id)`` virtual seconds."""

    min_idle_wait = max_idle_wait = 0.05  # blocking waits, as on pipes
    failed: set[int] = frozenset()

    def __init__(self, clock: VirtualClock, n_workers: int, duration):
        self.clock = clock
        self.duration = duration
        self.worker_ids = list(range(1, n_workers + 1))
        self.free_at = dict.fromkeys(self.worker_ids, 0.0)
        self.runs: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)  # worker -> (start, end)
        self.results_per_wait: list[int] = []
        self.last_task_sent = 0.0
        self._outbox: list[tuple[float, int, int, bytes]] = []
        self._order = itertools.count()
        self.before_goodbye: dict[int, list[tuple[float, bytes]]] = {}  # worker -> (delay, message)
        self.silent: set[int] = set()  # workers that never answer SHUTDOWN
        self.ready_at = dict.fromkeys(self.worker_ids, 0.0)
        self.fails: dict[int, str] = {}  # task id -> the error kind every attempt at it fails with
        self.attempts: collections.Counter[int] = collections.Counter()  # task id -> attempts run
        for worker in self.worker_ids:
            self._post(0.0, worker, encode(ReadyMessage(worker)))

    def start_late(self, worker: int, at: float) -> None:
        """The worker is still starting (importing, say) until ``at``; then it reports READY."""
        self._outbox = [entry for entry in self._outbox if entry[2] != worker]
        heapq.heapify(self._outbox)
        self.ready_at[worker] = at
        self._post(at, worker, encode(ReadyMessage(worker)))

    def _post(self, at: float, worker: int, data: bytes) -> None:
        heapq.heappush(self._outbox, (at, next(self._order), worker, data))

    def send(self, worker: int, data: bytes) -> None:
        message = decode(data)
        if isinstance(message, TaskMessage):
            self.last_task_sent = self.clock.now
            for spec in message.tasks:
                start = max(self.free_at[worker], self.clock.now)
                end = start + self.duration(spec.task_id)
                self.free_at[worker] = end
                self.runs[worker].append((start, end))
                self.attempts[spec.task_id] += 1
                kind = self.fails.get(spec.task_id)
                if kind is None:
                    result = ResultMessage(spec.task_id, worker, end - start, energy=-1.0)
                else:
                    error = TaskError(kind, f"{kind} for test", "", str(spec.task_id), worker, spec.attempt)
                    result = ResultMessage(spec.task_id, worker, end - start, error=error)
                self._post(end, worker, encode(ResultBatch((result,))))
        elif isinstance(message, StealMessage):  # tasks were planned to run already: give nothing back
            self._post(self.clock.now, worker, encode(StolenMessage(worker, ())))
        elif isinstance(message, ShutdownMessage):  # read once the worker has started
            reads_at = max(self.clock.now, self.ready_at[worker])
            for delay, late in self.before_goodbye.get(worker, ()):  # sent before it read SHUTDOWN
                self._post(reads_at + delay, worker, late)
            if worker not in self.silent:
                self._post(reads_at + 0.002, worker, encode(GoodbyeMessage(worker)))

    def wait(self, timeout: float) -> list[tuple[int, bytes | None]]:
        if timeout > 0 and (not self._outbox or self._outbox[0][0] > self.clock.now):  # block until a message
            self.clock.now = min(self._outbox[0][0], self.clock.now + timeout) if self._outbox else self.clock.now + timeout
        events = []
        while self._outbox and self._outbox[0][0] <= self.clock.now:
            _, _, worker, data = heapq.heappop(self._outbox)
            events.append((worker, data))
        self.results_per_wait.append(len(events))
        return events

    def exit_notices(self) -> int:
        return 0

    def close(self, abandon: bool = False) -> None:
        pass

    @property
    def in_flight(self) -> list[tuple[int, bytes]]:
        """Messages sent by workers that the master has not received (now or later)."""
        return [(worker, data) for _, _, worker, data in self._outbox]


@pytest.fixture
def clock():
    return VirtualClock()


def run_master(workers: VirtualWorkers, plan, **kwargs):
    """A run as mbe_mpi.run does it: the master's loop, then the shutdown handshake."""
    master = Master(workers, plan, clock=workers.clock, **kwargs)
    try:
        return master.run()
    finally:
        shut_down(workers, master.remaining_workers, started=master.started, hurry=master.abandoned > 0,
                  clock=workers.clock)


def _trimer_tasks():
    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": {"seconds": 0.001}}
    plan = build_plan(manybody_input(cluster_molecule(7), bsse=["nocp"], max_nbody=3, specification=spec))
    return plan, plan.by_level()[3]  # one level: no barrier in the way


def test_results_are_taken_in_bursts_and_no_worker_waits_for_work(clock):
    plan, tasks = _trimer_tasks()
    assert len(tasks) == 35

    workers = VirtualWorkers(clock, 8, _duration)
    many = _repeat(tasks, 12)  # 420 tasks of 60-100 ms on 8 workers: ~4 s, several 1-s rate windows
    results = run_master(workers, plan, tasks=many, policy=SchedulePolicy(max_hold=0.05),
                         cost_model=CostModel(lambda t: _duration(t.index)))

    assert sorted(results) == sorted(t.index for t in many)  # every task once
    held = [s for s in clock.sleeps if s > 0]
    assert held, "the master never held results back"
    assert max(held) <= 0.55 * min(_duration(t.index) for t in many)  # about half the shortest task
    busy_waits = [n for n in workers.results_per_wait if n]
    print(f"results per wake-up: {sum(busy_waits) / len(busy_waits):.2f}")
    assert sum(busy_waits) / len(busy_waits) >= 1.75  # ~2 results per wake-up (1.0 without the hold)
    for worker, runs in workers.runs.items():  # back to back while there was work to hand out
        for (_, end), (start, _) in itertools.pairwise(runs):
            if end < workers.last_task_sent:
                assert start == end, f"worker {worker} waited {start - end:.3f} s for work"


def _duration(task_id: int) -> float:
    """60 to 100 ms, spread irregularly (no two results at the same instant by construction)."""
    return 0.06 + 0.04 * ((task_id * 0.6180339887) % 1.0)


def _repeat(tasks: list[Task], times: int) -> list[Task]:
    """The same trimer tasks under new indices, to make a run long enough to measure a message rate."""
    return [Task(t.index + k * 1000, t.mc_index, t.real, t.basis, t.cost) for k in range(times) for t in tasks]


def test_holding_off_means_one_wake_up_per_result(clock):
    """The same run without the hold: the comparison that shows the bursts above come from it."""
    plan, tasks = _trimer_tasks()
    workers = VirtualWorkers(clock, 8, _duration)
    run_master(workers, plan, tasks=_repeat(tasks, 12), policy=SchedulePolicy(max_hold=0.0))
    busy_waits = [n for n in workers.results_per_wait if n]
    assert not [s for s in clock.sleeps if s > 0]
    print(f"results per wake-up: {sum(busy_waits) / len(busy_waits):.2f}")
    assert sum(busy_waits) / len(busy_waits) < 1.2


def _costed(seconds: list[float]) -> tuple[list[Task], CostModel]:
    """Monomers whose cost sets their basis size, so equal costs share a shape (as in a real plan)."""
    sizes = {cost: k for k, cost in enumerate(sorted(set(seconds)), start=1)}
    tasks = [Task(i, 0, (1,), tuple(range(1, sizes[s] + 1)), cost=s) for i, s in enumerate(seconds)]
    return tasks, CostModel(lambda t: t.cost)


def test_hold_time_is_half_the_latest_message_while_tasks_are_pending():
    tasks, model = _costed([0.4, 0.3, 0.2, 0.1, 0.1, 0.1])
    sched = Scheduler({1: tasks}, [1, 2], prefetch=2, cost_model=model)
    assert sched.hold_time(cap=1.0) == 0.0  # nothing handed out yet
    sched.actions()  # 0.4, 0.3, 0.2, 0.1 go out; two 0.1 s tasks wait
    assert sched.hold_time(cap=1.0) == pytest.approx(0.05)
    assert sched.hold_time(cap=0.01) == 0.01
    first = sched.batches[1][0][0]
    sched.task_done(1, first.index, seconds=first.cost)
    sched.actions()  # one more goes out, one is still pending
    assert sched.pending and sched.hold_time(cap=1.0) == pytest.approx(0.05)
    second = sched.batches[2][0][0]
    sched.task_done(2, second.index, seconds=second.cost)
    sched.actions()
    assert not sched.pending and sched.hold_time(cap=1.0) == 0.0  # the tail: results are read at once


@pytest.mark.parametrize("case", ["prefetch 1", "unknown costs", "retry waiting", "stopped"])
def test_no_hold_when_a_reported_result_may_leave_a_worker_without_work(case):
    tasks, model = _costed([0.4, 0.3, 0.2, 0.1, 0.1, 0.1])
    sched = Scheduler({1: tasks}, [1, 2], prefetch=1 if case == "prefetch 1" else 2,
                      cost_model=CostModel() if case == "unknown costs" else model, max_retries=1)
    sched.actions()
    if case == "retry waiting":
        sched.task_failed(1, sched.batches[1][0][0].index, now=0.0)
    if case == "stopped":
        sched.stop()
    assert sched.hold_time(cap=1.0) == 0.0


def test_arrival_rate_decides_whether_holding_saves_wake_ups():
    rate = ArrivalRate(window=1.0, worthwhile=2.0, now=0.0)
    assert not rate.worth_holding(0.05)  # nothing measured yet
    for k in range(80):  # 80 messages in the first second
        rate.add(1, k / 80)
    rate.add(0, 1.0)
    assert rate.rate == pytest.approx(80.0)
    assert rate.worth_holding(0.05)  # 4 messages expected per hold
    assert not rate.worth_holding(0.02)  # 1.6: holding would add a wake-up more often than save one
    assert not rate.worth_holding(0.0)


def test_hold_follows_the_shortest_measured_task_of_a_shape():
    """Learned means can overestimate a shape's short tasks: the hold uses the shortest measured instead."""
    tasks = [Task(i, 0, (1,), (1,), cost=1.0) for i in range(8)]
    model = CostModel(lambda t: 0.2)  # the prior: 200 ms each
    sched = Scheduler({1: tasks}, [1], prefetch=2, cost_model=model)
    sched.actions()
    assert sched.hold_time(cap=1.0) == pytest.approx(0.1)
    sched.task_done(1, sched.batches[1][0][0].index, seconds=0.3)
    sched.task_done(1, sched.batches[1][0][0].index, seconds=0.02)  # mean 0.16 s, shortest 0.02 s
    sched.actions()
    assert sched.hold_time(cap=1.0) == pytest.approx(0.01)


def test_a_worker_not_started_by_the_startup_deadline_is_lost_and_its_share_done_by_the_others(clock):
    plan, tasks = _trimer_tasks()
    tasks = _repeat(tasks, 5)  # ~7 s of work for the two workers that start
    workers = VirtualWorkers(clock, 3, _duration)
    workers.start_late(3, at=clock.now + 1000.0)
    settings = LivenessSettings(heartbeat_timeout=60.0, startup_deadline=clock.now + 2.0, startup_timeout=2.0)
    lost = []

    class Lost(RunObserver):
        def worker_lost(self, worker, why):
            lost.append((worker, why, clock.now))

    master = Master(workers, plan, tasks=tasks, policy=SchedulePolicy(), clock=clock, liveness=settings,
                    observer=Lost())
    assert len(master.run()) == len(tasks)
    assert [(worker, why) for worker, why, _ in lost] == [(3, "it did not start within startup_timeout (2 s)")]
    assert 2.0 < lost[0][2] < 4.0  # from the deadline on, not after heartbeat_timeout on top


def test_master_takes_in_everything_a_worker_sent_before_its_goodbye(clock):
    """Under MPI a message never received makes MPI_Finalize fail, and mpiexec then kills the job."""
    plan, tasks = _trimer_tasks()
    workers = VirtualWorkers(clock, 3, _duration)
    workers.before_goodbye = {1: [(0.001, encode(HeartbeatMessage(1)))],
                              2: [(0.0005, encode(StolenMessage(2, ()))), (0.001, encode(HeartbeatMessage(2)))]}
    results = run_master(workers, plan, tasks=tasks[:6], policy=SchedulePolicy())
    assert len(results) == 6
    assert not workers.in_flight  # every GOODBYE (each worker's last message) was taken in, and all before it


def test_a_worker_still_starting_is_waited_for_and_a_silent_one_is_not_forever(clock):
    plan, tasks = _trimer_tasks()
    workers = VirtualWorkers(clock, 2, _duration)
    workers.start_late(2, at=clock.now + 5.0)  # READY just after the work is done
    results = run_master(workers, plan, tasks=tasks[:3], policy=SchedulePolicy())
    assert len(results) == 3 and clock.now >= 5.0  # its READY was received, then its GOODBYE
    assert not workers.in_flight

    workers = VirtualWorkers(clock, 2, _duration)
    workers.start_late(2, at=clock.now + 400.0)  # hung while starting: the run ends within seconds of its work
    started = clock.now
    master = Master(workers, plan, tasks=tasks[:3], policy=SchedulePolicy(), clock=clock)
    assert len(master.run()) == 3
    silent = shut_down(workers, master.remaining_workers, started=master.started, clock=clock)
    assert silent == {2} and clock.now - started < GOODBYE_TIMEOUT + 2  # treated as lost, not waited for

    workers = VirtualWorkers(clock, 2, _duration)
    workers.silent = {1}
    started = clock.now
    run_master(workers, plan, tasks=tasks[:3], policy=SchedulePolicy())
    assert GOODBYE_TIMEOUT <= clock.now - started < GOODBYE_TIMEOUT + 1


def test_a_program_input_error_is_final_at_once_and_other_failures_are_retried(clock):
    """QCEngine's input_error is the program refusing the input: every worker would refuse it again."""
    plan, tasks = _trimer_tasks()
    workers = VirtualWorkers(clock, 2, _duration)
    refused, crashed = tasks[0].index, tasks[1].index
    workers.fails = {refused: "input_error", crashed: "unknown_error"}
    master = Master(workers, plan, tasks=tasks[:4], policy=SchedulePolicy(max_retries=2, retry_backoff=0.01),
                    clock=clock)
    with pytest.raises(TaskFailedError) as failed:
        master.run()
    assert sorted(master.results) == sorted(task.index for task in tasks[2:4])  # the others completed
    assert "[input_error]" in str(failed.value) and "after 3 attempts: [unknown_error]" in str(failed.value)
    assert workers.attempts[refused] == 1 and workers.attempts[crashed] == 3
    assert sorted((task.index, message.error.kind) for task, message in master.failures) == sorted(
        [(refused, "input_error"), (crashed, "unknown_error")])
