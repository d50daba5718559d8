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
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput, ManyBodyResult

from .assemble import assemble
from .checkpoint import Journal
from .costs import CostModel, program_estimates
from .errors import EXIT_STOPPED, InputError, RunStopped, TaskFailedError
from .harnesses import import_plugins, preload_modules
from .inputs import attach_screening, parse_input, validate_manybody_input
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
        _log_reuse(journal, "QC results", checkpoint, options.cache_dir)
        screened = ScreenedRun(mbi, plan, rules, reused) if rules is not None else None
        if screened is not None and screened.prescreen is not None:
            cheap = journal.beside(screened.prescreen.plan)
            screened.prescreen.reuse(cheap.reusable())
            _log_reuse(cheap, "prescreen results", checkpoint, options.cache_dir)
        return cls(mbi, input_json, options, plan, journal, reused, screened)

    @property
    def todo(self) -> list[Task]:
        """The tasks to compute (screened: the most, if energy rules skip nothing more)."""
        tasks = self.plan.tasks if self.screened is None or self.screened.expansion is None \
            else self.screened.upper_bound()
        return [task for task in tasks if task.index not in self.reused]

    def job(self, job_id: int = 1) -> JobMessage:
        return JobMessage(job_id, self.input_json, self.plan.model_chemistries)

    @property
    def count_text(self) -> str:
        """How many tasks the run computes, as the log says it (a screened run knows only the most)."""
        return f"{len(self.todo)}" if self.screened is None else f"at most {len(self.todo)} (screened)"

    @property
    def shown(self) -> list[Task]:
        """What progress counts: every task, or the most a screened expansion may compute."""
        return self.plan.tasks if self.screened is None else self.screened.upper_bound()

    def schedule(self, progress: Progress | None) -> dict[str, Any]:
        """The master's ``tasks``, or a screened expansion's ``levels`` (whose decisions ``progress`` hears of)."""
        if self.screened is None:
            return {"tasks": self.todo}
        return {"levels": self.screened.levels(progress.withdraw if progress is not None else None)}

    def recorders(self) -> list[RunObserver]:
        """Observers the expansion itself needs: a screened one takes in energies to decide its levels."""
        return [] if self.screened is None else [EnergyRecorder(self.screened.expansion)]

    def reused_counts(self) -> tuple[int, int]:
        """(from the checkpoint, from the cache) of the results the assembly used.

        A screened run uses only what its kept n-mers need of what it found on disk.
        """
        if self.screened is None:
            return self.journal.from_checkpoint, self.journal.from_cache
        sources = [self.journal.sources.get(task.index) for task in self.screened.expansion.needed()]
        return sources.count("checkpoint"), sources.count("cache")

    def assemble(self, computed: Mapping[int, ResultMessage]) -> ManyBodyResult:
        """QCManyBody's result from what was computed now and what was reused (screened: and surrogates)."""
        if self.screened is None:
            return assemble(self.plan, {**self.reused, **computed})
        needed, surrogates = self.screened.for_assembly(computed)
        return assemble(self.plan, needed, surrogates)


def _log_reuse(journal: Journal, what: str, checkpoint: str | None, cache_dir: str | None) -> None:
    if journal.from_checkpoint:
        logger.warning("resuming from checkpoint %s: %d of %d %s are done already",
                       checkpoint, journal.from_checkpoint, len(journal.plan.tasks), what)
    if journal.from_cache:
        logger.info("%d %s found in the cache %s", journal.from_cache, what, cache_dir)


#: options a pool's workers are started with; an expansion run on an existing pool cannot change them
WORKER_OPTIONS = ("n_workers", "threads_per_task", "memory_per_task", "plugins", "isolate_tasks", "task_timeout",
                  "heartbeat_interval", "scratch_dir", "keep_scratch")


def input_preparer(manybody_input: ManyBodyInput | Mapping[str, Any], overrides: Mapping[str, Any], *,
                   source: str = "compute()", pool_options: ExecutionOptions | None = None,
                   screening: Mapping[str, Any] | None = None) -> Prepare:
    """How rank 0 gets a validated (ManyBodyInput, ExecutionOptions) from a model or a dict.

    A dict may be a QCSchema ManyBodyInput or the friendly format, exactly as in an input file;
    ``overrides`` (keyword arguments) win over its ``execution`` section, and ``screening`` (a
    ``screening`` section given as an argument) joins it. With ``pool_options`` (a session's
    workers are running) the worker options are the pool's, whatever else asks.
    """
    options = ExecutionOptions().merged(**overrides)  # refuses unknown or nonsense options before anything

    def prepare() -> tuple[ManyBodyInput, ExecutionOptions]:
        import_plugins(options.plugins)
        if isinstance(manybody_input, ManyBodyInput):
            mbi = attach_screening(manybody_input, screening, f"{source}: ")
            validate_manybody_input(mbi, source)
            chosen = options
        elif isinstance(manybody_input, Mapping):
            data = dict(manybody_input)
            if screening is not None:
                if "screening" in data:
                    raise InputError(f"{source}: screening is given twice (in the input and as an argument); keep one")
                data["screening"] = screening
            mbi, file_options = parse_input(data, source=source)
            chosen = file_options.merged(**overrides)
        else:
            raise InputError(f"{source} takes a ManyBodyInput or a dict, not a {type(manybody_input).__name__}")
        return mbi, chosen if pool_options is None else _with_pool_options(chosen, pool_options)

    return prepare


def _with_pool_options(options: ExecutionOptions, pool: ExecutionOptions) -> ExecutionOptions:
    different = [name for name in WORKER_OPTIONS if getattr(options, name) != getattr(pool, name)]
    for name in different:
        logger.warning("%s=%r is ignored: the session's workers run with %s=%r (give it to Session())",
                       name, getattr(options, name), name, getattr(pool, name))
    return options.model_copy(update={name: getattr(pool, name) for name in WORKER_OPTIONS})


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


def preload(programs: Iterable[str] | None) -> list[str]:
    """What the forkserver imports for workers and QC children running ``programs`` (None: all of ours)."""
    return ["mbe_mpi.preload", *preload_modules(programs)]


def programs_of(mbi: ManyBodyInput) -> list[str]:
    """The QC programs an input runs: its model chemistries', and a screening prescreen's."""
    programs = {spec.program for spec in mbi.specification.specification.values()}
    rules = screening_of(mbi)
    if rules is not None and rules.prescreen is not None:
        programs.add(rules.prescreen.program)
    return sorted(programs)


class _WorkersReady(RunObserver):
    """Only when workers started (a prescreen's tasks are not in the requested expansion's timeline)."""

    def __init__(self, timing: TimingRecorder):
        self.timing = timing

    def worker_ready(self, worker: int, at: float) -> None:
        self.timing.worker_ready(worker, at)


class WorkerPool:
    """Workers started once that serve expansion after expansion, each announced by a JOB message.

    What the pool remembers between expansions: which workers reported READY, which were declared
    lost (never used again), and whether the last expansion left tasks running (it was stopped or
    interrupted: the workers drop them when the next JOB comes, and a shutdown does not wait). A
    screened run with a prescreen is two expansions on the pool: the cheap one, then the requested one.
    """

    def __init__(self, transport: MasterTransport, name: str):
        self.transport = transport
        self.name = name
        self.ready: set[int] = set()
        self.lost: set[int] = set()
        self.jobs = 0
        self.abandoned = 0
        self.closed = False

    @classmethod
    def local(cls, options: ExecutionOptions, programs: Iterable[str] | None = None) -> WorkerPool:
        """``n_workers`` local worker processes, forked from a forkserver preloaded for ``programs``."""
        from .transports.local import LocalMasterTransport

        n_workers = options.n_workers or usable_cores()
        memory = options.memory_per_task or default_memory_per_task(n_workers)
        # a worker forked from the forkserver has one thread when it forks its QC child: safe
        init = WorkerInit.from_options(options, memory, child_start="fork")
        transport = LocalMasterTransport(n_workers, functools.partial(worker_main, init), options.threads_per_task,
                                         preload=preload(programs))
        return cls(transport, "local")

    @property
    def workers(self) -> list[int]:
        return [worker for worker in self.transport.worker_ids if worker not in self.lost]

    def run(self, setup: MasterSetup, *, progress: bool = False, started: float | None = None) -> Outcome:
        """One expansion on the pool's workers; its checkpoint is closed (removed when complete) before return."""
        if self.closed or not self.workers:
            raise TaskFailedError("no worker of this session is left (all were lost); start a new session")
        started = time.perf_counter() if started is None else started
        journaled = JournalObserver(setup.journal, len(setup.reused))
        timing = TimingRecorder(setup.plan, started)
        completed = False
        try:
            with _stop_signals(self.name) as stop:
                master_cpu = time.process_time()
                if setup.screened is not None and setup.screened.prescreen is not None:
                    self._prescreen(setup, stop, progress, timing)
                shown = self._progress(setup.shown, set(setup.reused)) if progress else None
                results = self._expansion(setup.plan, setup.options, setup.job, stop,
                                          [journaled, timing, shown, *setup.recorders()], **setup.schedule(shown))
                master_cpu = time.process_time() - master_cpu
            if shown is not None:
                shown.close()
            result = setup.assemble(results)
            completed = True
        except RunStopped as exc:
            where = f" in {setup.journal.checkpoint.path}" if setup.journal.checkpoint else " (no checkpoint was kept)"
            raise RunStopped(f"{exc}; {journaled.saved} of {len(setup.plan.tasks)} QC results are saved{where}; "
                             "rerun the same command to resume", abandoned=exc.abandoned) from None
        finally:
            setup.journal.close(completed=completed)
        return _outcome(result, setup, timing, self, started, master_cpu, len(results))

    def _progress(self, tasks: list[Task], done: set[int]) -> Progress:
        return Progress(tasks, done, len(self.workers), launched_by_mpi=self.name == "mpi")

    def _prescreen(self, setup: MasterSetup, stop: StopSignals, progress: bool, timing: TimingRecorder) -> None:
        """The cheap expansion first, on the same workers; its outcome decides what the requested one may compute."""
        prescreen = setup.screened.prescreen
        started = time.perf_counter()
        todo = prescreen.todo
        logger.info("prescreen: %d %s tasks (%d reused)", len(todo), setup.screened.rules.prescreen.name,
                    len(prescreen.reused))
        shown = self._progress(todo, set()) if progress else None
        observers = [JournalObserver(setup.journal.beside(prescreen.plan), 0), _WorkersReady(timing), shown]
        results = self._expansion(prescreen.plan, setup.options, prescreen.job, stop, observers, tasks=todo)
        if shown is not None:
            shown.close()
        setup.screened.begin(prescreen.done(results, time.perf_counter() - started))

    def _expansion(self, plan: Plan, options: ExecutionOptions, job: Callable[[int], JobMessage], stop: StopSignals,
                   observers: list[RunObserver | None], **schedule: Any) -> dict[int, ResultMessage]:
        """One JOB on the pool's workers: ``schedule`` is its tasks, or its levels (a screened expansion)."""
        self.jobs += 1
        master = Master(self.transport, plan, policy=SchedulePolicy.from_options(options),
                        cost_model=CostModel(program_estimates(plan)), observer=Observers(observers),
                        job=job(self.jobs), ready=sorted(self.ready), lost=sorted(self.lost),
                        stop_requested=stop, stop_grace=options.stop_grace,
                        liveness=LivenessSettings(options.heartbeat_timeout, 2 * options.heartbeat_interval + 1),
                        **schedule)
        try:
            return master.run()
        finally:
            self.ready |= master.started
            self.lost |= master.liveness.lost
            self.abandoned = master.abandoned

    def close(self) -> None:
        """Tell the workers to end and take in their last messages (never waiting forever)."""
        if not self.closed:
            self.closed = True
            shut_down(self.transport, self.workers, started=self.ready, hurry=self.abandoned > 0)


def _outcome(result: ManyBodyResult, setup: MasterSetup, timing: TimingRecorder, pool: WorkerPool,
             started: float, master_cpu: float, computed: int) -> Outcome:
    wall_time = time.perf_counter() - started
    n_workers = len(pool.transport.worker_ids)
    screened = setup.screened
    tasks = setup.plan.tasks if screened is None else screened.expansion.needed()
    per_level: dict[int, int] = {}
    for task in tasks:
        per_level[task.level] = per_level.get(task.level, 0) + 1
    from_checkpoint, from_cache = setup.reused_counts()
    stats = RunStats(
        transport=pool.name,
        n_workers=n_workers,
        wall_time=wall_time,
        tasks_per_level=dict(sorted(per_level.items())),
        task_time=timing.task_time,
        computed=computed,
        from_checkpoint=from_checkpoint,
        from_cache=from_cache,
        timing=timing_report(timing.timeline, n_workers, wall_time, master_cpu,
                             startup=max(timing.ready_at.values(), default=started) - started),
        lost_workers=timing.lost,
        screening=None if screened is None else screened.report(computed),
    )
    result = result.model_copy(update={"extras": {**result.extras, "mbe_mpi": stats.to_dict()}})
    return Outcome(result, timing.timeline, timing.lost, pool.name, set(pool.transport.failed))


def run(prepare: Prepare, *, progress: bool = False,
        on_outcome: Callable[[Outcome], None] | None = None) -> Outcome | None:
    """Run one MBE on whichever transport this process was launched for. Rank 0 returns the outcome.

    ``progress``: rank 0 shows progress with ETA on stderr (a live bar on a terminal).
    ``on_outcome`` is called with the outcome before the workers are shut down: the output is
    written as soon as the last result is in, whatever the shutdown then takes.
    """
    if launched_by_mpi():
        return _run_mpi(prepare, progress, on_outcome)
    return _run_local(prepare, progress, on_outcome)


def _run_local(prepare: Prepare, progress: bool = False,
               on_outcome: Callable[[Outcome], None] | None = None) -> Outcome:
    started = time.perf_counter()
    setup = MasterSetup.prepare(prepare)
    logger.info("running %s QC tasks on local worker processes", setup.count_text)
    pool = WorkerPool.local(setup.options, programs_of(setup.mbi))
    try:
        outcome = pool.run(setup, progress=progress, started=started)
        if on_outcome is not None:
            on_outcome(outcome)
        return outcome
    finally:
        pool.close()


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
        announcement: tuple = ("ok", setup.options.to_dict(), programs_of(setup.mbi))
    except InputError as exc:
        announcement = ("input", str(exc))
    except Exception:
        announcement = ("internal", traceback.format_exc())
    announce(comm, announcement)
    return setup, announcement


def single_rank(comm: Any) -> bool:
    """``mpiexec -n 1``: no worker rank, so the local fallback runs instead (said once, on rank 0)."""
    if comm.Get_size() > 1:
        return False
    logger.warning(
        "mbe_mpi: only one MPI rank, so there is no worker rank; running the single-node fallback "
        "with local worker processes instead (use mpiexec -n 2 or more for MPI workers)"
    )
    return True


def mpi_worker_init(comm: Any, options: ExecutionOptions, programs: Iterable[str] | None = None) -> WorkerInit:
    """A worker rank's settings; collective (every rank calls it): the node's memory is shared by its workers.

    A worker rank also starts its forkserver here, preloaded for ``programs`` (None: all of ours):
    its supervised QC child, and any restart of it, is then a fork of that (milliseconds), while
    the rank itself never forks.
    """
    from .transports.mpi import ignore_hydra_notices, workers_on_node
    from .transports.processes import forkserver_context

    memory = options.memory_per_task or default_memory_per_task(workers_on_node(comm))
    ignore_hydra_notices()
    if comm.Get_rank() != 0 and options.isolate_tasks:
        forkserver_context(options.threads_per_task, preload(programs))
    return WorkerInit.from_options(options, memory, child_start="forkserver")


def _run_mpi(prepare: Prepare, progress: bool = False,
             on_outcome: Callable[[Outcome], None] | None = None) -> Outcome | None:
    from mpi4py import MPI

    from .transports.mpi import MPIMasterTransport, MPIWorkerEndpoint, abort

    comm = MPI.COMM_WORLD
    if single_rank(comm):
        return _run_local(prepare, progress, on_outcome)
    started = time.perf_counter()
    setup, announcement = _announce(comm, prepare)
    if announcement[0] == "input":
        raise InputError(announcement[1])
    if announcement[0] == "internal":
        raise RuntimeError(f"rank 0 failed while preparing the run:\n{announcement[1]}")
    options = ExecutionOptions.from_mapping(announcement[1])
    init = mpi_worker_init(comm, options, announcement[2])
    if comm.Get_rank() != 0:
        worker_main(init, MPIWorkerEndpoint(comm))
        return None
    _warn_thread_cap(options.threads_per_task)
    logger.info("running %s QC tasks on %d MPI worker ranks", setup.count_text, comm.Get_size() - 1)
    pool = WorkerPool(MPIMasterTransport(comm), "mpi")
    try:
        outcome = pool.run(setup, progress=progress, started=started)
        if on_outcome is not None:
            on_outcome(outcome)
        return outcome
    except RunStopped as exc:
        if exc.abandoned:
            # Busy workers cannot be told to stop, and MPI_Finalize would wait for them: end the job.
            print(f"mbe_mpi: {exc}", file=sys.stderr, flush=True)
            abort(EXIT_STOPPED)
        raise
    finally:
        pool.close()
