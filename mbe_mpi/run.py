"""Run an MBE on either transport: validate, plan, start workers, run the master, assemble.

SPMD under MPI: every rank calls :func:`run`; rank 0 alone reads and validates the input and
announces either the options or the error, so a user mistake ends *every* rank with the same
message and exit code before any QC work -- no hang, no abort storm. Without MPI, the same master
and worker code runs over local worker processes. Workers get the input itself as a JOB message
from the master.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput, ManyBodyResult

from .assemble import assemble
from .checkpoint import Journal
from .costs import CostModel, program_estimates
from .errors import EXIT_STOPPED, InputError, RunStopped
from .master import Completion, LivenessSettings, Master, Observers, RunObserver, shut_down
from .options import ExecutionOptions, default_memory_per_task, usable_cores
from .plan import Plan, Task, build_plan
from .protocol import JobMessage, ResultMessage
from .report import Progress, TaskTiming, timing_report
from .scheduling import SchedulePolicy
from .screened import EnergyRecorder, ScreenedRun
from .screening import screening_of, with_screening
from .transports import MasterTransport, launched_by_hydra, launched_by_mpi
from .worker import WorkerInit, worker_main

logger = logging.getLogger(__name__)

Prepare = Callable[[], tuple[ManyBodyInput, ExecutionOptions]]


@dataclasses.dataclass
class RunStats:
    """What the summary reports besides the numbers."""

    transport: str
    n_workers: int
    wall_time: float
    tasks_per_level: dict[int, int]
    task_time: float
    computed: int
    from_checkpoint: int
    from_cache: int
    timing: dict[str, Any]
    lost_workers: list[int] = dataclasses.field(default_factory=list)
    screening: dict[str, Any] | None = None  # a screened run's report (mbe_mpi.screened.ScreenedRun.report)

    def to_dict(self) -> dict[str, Any]:
        stats = dataclasses.asdict(self)
        if stats["screening"] is None:
            del stats["screening"]
        return stats


@dataclasses.dataclass
class Outcome:
    """What rank 0 gets from a run: the result, and when each task ran (for reports and charts)."""

    result: ManyBodyResult
    timeline: list[TaskTiming]
    lost_workers: list[int] = dataclasses.field(default_factory=list)
    transport: str = "local"
    failed_by_mpi: set[int] = dataclasses.field(default_factory=set)  # lost workers the MPI library declared failed


def release(outcome: Outcome) -> None:
    """After everything is written: end an MPI job whose lost rank would hang MPI_Finalize."""
    if outcome.transport == "mpi":
        from .transports.mpi import end_if_ranks_lost

        end_if_ranks_lost(outcome.lost_workers, outcome.failed_by_mpi)


@dataclasses.dataclass
class MasterSetup:
    """Rank 0's view of a run once the input is validated: plan, journal and reusable results.

    ``screened`` is set when the input has screening rules (:mod:`mbe_mpi.screened`); its
    checkpoint then belongs to the input without them, so a run with changed thresholds resumes
    from it too (results are reused by content hash, never by position).
    """

    mbi: ManyBodyInput
    input_json: str
    options: ExecutionOptions
    plan: Plan
    journal: Journal
    reused: dict[int, ResultMessage]
    screened: ScreenedRun | None = None

    @classmethod
    def prepare(cls, prepare: Prepare) -> MasterSetup:
        mbi, options = prepare()
        plan = build_plan(mbi)
        input_json = mbi.model_dump_json()
        rules = screening_of(mbi)
        identity = with_screening(mbi, None).model_dump_json() if rules is not None else input_json
        checkpoint = options.checkpoint if isinstance(options.checkpoint, str) else None
        journal = Journal(plan, identity, checkpoint=checkpoint, cache_dir=options.cache_dir, fresh=options.fresh)
        reused = journal.reusable()
        screened = ScreenedRun(mbi, plan, rules, reused) if rules is not None else None
        if screened is not None and screened.prescreen is not None:
            screened.prescreen.reuse(journal.beside(screened.prescreen.plan).reusable())
        if journal.from_checkpoint:
            logger.warning("resuming from checkpoint %s: %d of %d QC results are done already",
                           checkpoint, journal.from_checkpoint, len(plan.tasks))
        if journal.from_cache:
            logger.info("%d QC results found in the cache %s", journal.from_cache, options.cache_dir)
        return cls(mbi, input_json, options, plan, journal, reused, screened)

    @property
    def todo(self) -> list[Task]:
        """The tasks to compute (screened: the most, if energy rules skip nothing more)."""
        tasks = self.plan.tasks if self.screened is None or self.screened.expansion is None \
            else self.screened.upper_bound()
        return [task for task in tasks if task.index not in self.reused]

    def job(self, job_id: int = 1) -> JobMessage:
        return JobMessage(job_id, self.input_json, self.plan.model_chemistries)


class JournalObserver(RunObserver):
    """Every result goes to the checkpoint (and cache) the moment it arrives."""

    def __init__(self, journal: Journal, saved: int):
        self.journal = journal
        self.saved = saved

    def completed(self, done: Completion) -> None:
        self.journal.record(done.task, done.message)  # first: a result on disk survives whatever happens next
        self.saved += done.message.ok


class TimingRecorder(RunObserver):
    """When each task ran, when each worker was ready, which workers were lost."""

    def __init__(self, plan: Plan, started: float):
        self.plan = plan
        self.started = started
        self.timeline: list[TaskTiming] = []
        self.ready_at: dict[int, float] = {}
        self.lost: list[int] = []
        self.task_time = 0.0

    def worker_ready(self, worker: int, at: float) -> None:
        self.ready_at[worker] = at

    def completed(self, done: Completion) -> None:
        self.task_time += done.message.wall_time
        self.timeline.append(TaskTiming.from_completion(done, self.started))
        if logger.isEnabledFor(logging.DEBUG):  # a label costs ~25 us to build: not per task for nothing
            logger.debug("task %s done on worker %d in %.3f s", self.plan.label(done.task), done.worker,
                         done.message.wall_time)

    def worker_lost(self, worker: int, why: str) -> None:
        self.lost.append(worker)


class StopSignals:
    """SIGTERM/SIGUSR1 (a batch system's warning before the time limit) ask the master to stop cleanly.

    Under MPICH's ``mpiexec -disable-auto-cleanup`` hydra sends SIGUSR1 when a rank ends, so there
    only SIGTERM (which hydra forwards to every rank) means stop; the MPI transport counts the
    SIGUSR1 notices instead.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> None:
        self.signals = signals
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.reason = f"received {signal.Signals(signum).name}"

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self) -> str | None:
        return self.reason


def _stop_signals(name: str) -> StopSignals:
    hydra = name == "mpi" and launched_by_hydra()
    return StopSignals((signal.SIGTERM,) if hydra else (signal.SIGTERM, signal.SIGUSR1))


def _master(transport: MasterTransport, plan: Plan, options: ExecutionOptions, stop: StopSignals,
            observers: list[RunObserver | None], job: JobMessage, **schedule: Any) -> Master:
    """A master over ``transport`` for one expansion; ``schedule``: its tasks or levels, and the pool's workers."""
    return Master(transport, plan, policy=SchedulePolicy.from_options(options),
                  cost_model=CostModel(program_estimates(plan)), observer=Observers(observers), job=job,
                  stop_requested=stop, stop_grace=options.stop_grace,
                  liveness=LivenessSettings(options.heartbeat_timeout, 2 * options.heartbeat_interval + 1), **schedule)


def _run_master(transport: MasterTransport, setup: MasterSetup, name: str, started: float,
                show_progress: bool) -> Outcome:
    plan, journal, options, screened = setup.plan, setup.journal, setup.options, setup.screened
    journaled = JournalObserver(journal, len(setup.reused))
    timing = TimingRecorder(plan, started)
    master = None
    completed = False
    try:
        with _stop_signals(name) as stop:
            master_cpu = time.process_time()
            pool: dict[str, Any] = {}
            if screened is not None and screened.prescreen is not None:
                master = _run_prescreen(transport, setup, stop, name, show_progress, timing)
                pool = {"ready": sorted(master.started - master.liveness.lost), "lost": set(master.liveness.lost)}
            shown = plan.tasks if screened is None else screened.upper_bound()
            progress = (Progress(shown, set(setup.reused), len(transport.worker_ids), launched_by_mpi=name == "mpi")
                        if show_progress else None)
            observers = [journaled, timing, progress]
            if screened is None:
                schedule = {"tasks": setup.todo}
            else:
                observers.append(EnergyRecorder(screened.expansion))
                schedule = {"levels": screened.levels(progress.withdraw if progress is not None else None)}
            master = _master(transport, plan, options, stop, observers, setup.job(2 if pool else 1),
                             **schedule, **pool)
            results = master.run()
            master_cpu = time.process_time() - master_cpu
        if progress is not None:
            progress.close()
        result = _assemble(setup, results)
        completed = True
    except RunStopped as exc:
        where = f" in {journal.checkpoint.path}" if journal.checkpoint else " (no checkpoint was kept)"
        raise RunStopped(f"{exc}; {journaled.saved} of {len(plan.tasks)} QC results are saved{where}; "
                         "rerun the same command to resume", abandoned=exc.abandoned) from None
    finally:
        _release_workers(transport, master)
        journal.close(completed=completed)
    return _outcome(result, setup, timing, transport, name, started, master_cpu, len(results))


def _assemble(setup: MasterSetup, results: dict[int, ResultMessage]) -> ManyBodyResult:
    if setup.screened is None:
        return assemble(setup.plan, {**setup.reused, **results})
    needed, surrogates = setup.screened.for_assembly(results)
    return assemble(setup.plan, needed, surrogates)


class _WorkersReady(RunObserver):
    """Only when workers started (a prescreen's tasks are not in the requested expansion's timeline)."""

    def __init__(self, timing: TimingRecorder):
        self.timing = timing

    def worker_ready(self, worker: int, at: float) -> None:
        self.timing.worker_ready(worker, at)


def _run_prescreen(transport: MasterTransport, setup: MasterSetup, stop: StopSignals, name: str,
                   show_progress: bool, timing: TimingRecorder) -> Master:
    """The cheap expansion first, on the same workers; its outcome decides what the requested one may compute."""
    prescreen = setup.screened.prescreen
    started = time.perf_counter()
    todo = prescreen.todo
    logger.info("prescreen: %d %s tasks (%d reused)", len(todo), setup.screened.rules.prescreen.name,
                len(prescreen.reused))
    progress = (Progress(todo, set(), len(transport.worker_ids), launched_by_mpi=name == "mpi")
                if show_progress else None)
    observers = [JournalObserver(setup.journal.beside(prescreen.plan), 0), _WorkersReady(timing), progress]
    master = _master(transport, prescreen.plan, setup.options, stop, observers, prescreen.job(1), tasks=todo)
    results = master.run()
    if progress is not None:
        progress.close()
    setup.screened.begin(prescreen.done(results, time.perf_counter() - started))
    return master


def _release_workers(transport: MasterTransport, master: Master | None) -> None:
    """Whatever happened, the workers are told to end: they must never wait forever."""
    if master is None:
        shut_down(transport, transport.worker_ids, started=set(), hurry=True)
    else:
        shut_down(transport, master.remaining_workers, started=master.started, hurry=master.abandoned > 0)


def _outcome(result: ManyBodyResult, setup: MasterSetup, timing: TimingRecorder, transport: MasterTransport,
             name: str, started: float, master_cpu: float, computed: int) -> Outcome:
    wall_time = time.perf_counter() - started
    n_workers = len(transport.worker_ids)
    screened = setup.screened
    tasks = setup.plan.tasks if screened is None else screened.expansion.needed()
    per_level: dict[int, int] = {}
    for task in tasks:
        per_level[task.level] = per_level.get(task.level, 0) + 1
    stats = RunStats(
        transport=name,
        n_workers=n_workers,
        wall_time=wall_time,
        tasks_per_level=dict(sorted(per_level.items())),
        task_time=timing.task_time,
        computed=computed,
        from_checkpoint=setup.journal.from_checkpoint,
        from_cache=setup.journal.from_cache,
        timing=timing_report(timing.timeline, n_workers, wall_time, master_cpu,
                             startup=max(timing.ready_at.values(), default=started) - started),
        lost_workers=timing.lost,
        screening=None if screened is None else screened.report(computed),
    )
    result = result.model_copy(update={"extras": {**result.extras, "mbe_mpi": stats.to_dict()}})
    return Outcome(result, timing.timeline, timing.lost, name, set(transport.failed))


def run(prepare: Prepare, *, progress: bool = False) -> Outcome | None:
    """Run an MBE on whichever transport this process was launched for. Rank 0 returns the outcome.

    ``progress``: rank 0 shows progress with ETA on stderr (a live bar on a terminal).
    """
    if launched_by_mpi():
        return _run_mpi(prepare, progress)
    return _run_local(prepare, progress)


def _run_local(prepare: Prepare, progress: bool = False) -> Outcome:
    started = time.perf_counter()
    setup = MasterSetup.prepare(prepare)
    options = setup.options
    n_workers = options.n_workers or usable_cores()
    memory = options.memory_per_task or default_memory_per_task(n_workers)
    logger.info("running %d QC tasks on %d local worker processes", len(setup.todo), n_workers)
    from .transports.local import LocalMasterTransport

    # the worker is a fresh (spawned) interpreter with one thread when it forks its QC child: safe
    init = WorkerInit.from_options(options, memory, child_start="fork")
    transport = LocalMasterTransport(n_workers, functools.partial(worker_main, init), options.threads_per_task)
    return _run_master(transport, setup, "local", started, progress)


def _warn_thread_cap(threads_per_task: int) -> None:
    """MPI ranks start with the launcher's environment, and OpenMP runtimes read OMP_NUM_THREADS once."""
    launched = os.environ.get("OMP_NUM_THREADS", "")
    if launched.isdigit() and int(launched) < threads_per_task:
        logger.warning(
            "OMP_NUM_THREADS=%s in the environment of the MPI ranks limits threads_per_task=%d to %s thread(s); "
            "export OMP_NUM_THREADS=%d before mpiexec", launched, threads_per_task, launched, threads_per_task,
        )


def _announce(comm: Any, prepare: Prepare) -> tuple[MasterSetup | None, tuple]:
    """Rank 0 prepares the run and tells every rank how it starts (the options, or the error)."""
    from .transports.mpi import announce, await_announcement

    if comm.Get_rank() != 0:
        return None, await_announcement(comm)
    setup = None
    try:
        setup = MasterSetup.prepare(prepare)
        announcement: tuple = ("ok", setup.options.to_dict())
    except InputError as exc:
        announcement = ("input", str(exc))
    except Exception:
        announcement = ("internal", traceback.format_exc())
    announce(comm, announcement)
    return setup, announcement


def _run_mpi(prepare: Prepare, progress: bool = False) -> Outcome | None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        logger.warning(
            "mbe_mpi: only one MPI rank, so there is no worker rank; running the single-node fallback "
            "with local worker processes instead (use mpiexec -n 2 or more for MPI workers)"
        )
        return _run_local(prepare, progress)

    from .transports.mpi import MPIMasterTransport, MPIWorkerEndpoint, abort, ignore_hydra_notices, workers_on_node

    started = time.perf_counter()
    setup, announcement = _announce(comm, prepare)
    if announcement[0] == "input":
        raise InputError(announcement[1])
    if announcement[0] == "internal":
        raise RuntimeError(f"rank 0 failed while preparing the run:\n{announcement[1]}")
    options = ExecutionOptions.from_mapping(announcement[1])
    memory = options.memory_per_task or default_memory_per_task(workers_on_node(comm))
    ignore_hydra_notices()
    if comm.Get_rank() != 0:
        worker_main(WorkerInit.from_options(options, memory), MPIWorkerEndpoint(comm))
        return None
    _warn_thread_cap(options.threads_per_task)
    logger.info("running %d QC tasks on %d MPI worker ranks", len(setup.todo), comm.Get_size() - 1)
    try:
        return _run_master(MPIMasterTransport(comm), setup, "mpi", started, progress)
    except RunStopped as exc:
        if not exc.abandoned:
            raise
        # Busy workers cannot be told to stop, and MPI_Finalize would wait for them: end the job.
        print(f"mbe_mpi: {exc}", file=sys.stderr, flush=True)
        abort(EXIT_STOPPED)
        raise
