"""Run an MBE on either transport: validate, plan, start workers, run the master, assemble.

SPMD under MPI: every rank calls :func:`run`; rank 0 alone reads and validates the input and
announces either the options or the error, so a user mistake ends *every* rank with the same
message and exit code before any QC work -- no hang, no abort storm. Without MPI, the same master
and worker code runs over local worker processes. Workers get the input itself as a JOB message
from the master.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput, ManyBodyResult

from .assemble import assemble
from .checkpoint import Journal
from .costs import CostModel, program_estimates
from .errors import EXIT_INTERNAL_ERROR, EXIT_STOPPED, InputError, RunStopped, TaskFailedError, WriteFailed, describe
from .harnesses import import_plugins, preload_modules
from .inputs import attach_screening, parse_input, validate_manybody_input
from .master import Completion, LivenessSettings, Master, Observers, RunObserver, shut_down
from .options import ExecutionOptions, default_memory_per_task, usable_cores
from .plan import Plan, Task, build_plan, make_computer
from .plan_stream import PlanStream
from .protocol import JobMessage, ResultMessage
from .report import Progress, TaskTiming, timing_report
from .scheduling import SchedulePolicy
from .screened import EnergyRecorder, ScreenedRun
from .screening import screening_of, with_screening
from .signals import StopSignals, stop_signals
from .transports import MasterTransport, launched_by_hydra, launched_by_mpi
from .transports.zygote import Zygote
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
    stream: PlanStream | None = None  # the plan is still being built (a fresh, unscreened run)

    @classmethod
    def prepare(cls, prepare: Prepare) -> MasterSetup:
        """Validate, start planning, open the journal, find what can be reused.

        A fresh unscreened run streams its plan (:mod:`mbe_mpi.plan_stream`): its first tasks run
        within seconds whatever the size. A resume waits for the whole plan (reuse needs every
        task's hash), and so does a screened run (its rules read every level).
        """
        mbi, options = prepare()
        input_json = mbi.model_dump_json()
        rules = screening_of(mbi)
        computer = make_computer(mbi)
        stream = PlanStream(computer) if rules is None else None
        plan = build_plan(mbi, computer) if stream is None else stream.plan
        try:
            identity = with_screening(mbi, None).model_dump_json() if rules is not None else input_json
            checkpoint = options.checkpoint if isinstance(options.checkpoint, str) else None
            journal = Journal(plan, identity, checkpoint=checkpoint, cache_dir=options.cache_dir, fresh=options.fresh)
            if stream is not None and journal.may_reuse():  # a resume: reuse hashes every task
                stream.wait()
                stream = None
            reused = journal.reusable()
        except BaseException:
            if stream is not None:
                stream.cancel()
            raise
        _log_reuse(journal, "QC results", checkpoint, options.cache_dir)
        screened = ScreenedRun(mbi, plan, rules, reused) if rules is not None else None
        if screened is not None and screened.prescreen is not None:
            cheap = journal.beside(screened.prescreen.plan)
            screened.prescreen.reuse(cheap.reusable())
            _log_reuse(cheap, "prescreen results", checkpoint, options.cache_dir)
        return cls(mbi, input_json, options, plan, journal, reused, screened, stream)

    def abandon(self) -> None:
        """The run ends early: close the journal (keeping the checkpoint) and stop planning."""
        if self.stream is not None:
            self.stream.cancel()
        self.journal.close(completed=False)

    @property
    def todo(self) -> list[Task]:
        """The tasks to compute (screened: the most, if energy rules skip nothing more; streamed: those planned)."""
        tasks = self.plan.tasks if self.screened is None or self.screened.expansion is None \
            else self.screened.upper_bound()
        return [task for task in tasks if task.index not in self.reused]

    def job(self, job_id: int = 1) -> JobMessage:
        return JobMessage(job_id, self.input_json, self.plan.model_chemistries)

    @property
    def count_text(self) -> str:
        """How many tasks the run computes, as the log says it (a screened run knows only the most)."""
        if self.stream is not None:
            return "the QC tasks (planned level by level as the first level runs)"
        return f"{len(self.todo)} QC tasks" if self.screened is None else f"at most {len(self.todo)} QC tasks (screened)"

    @property
    def shown(self) -> list[Task]:
        """What progress counts: every task, or the most a screened expansion may compute (streamed: none yet)."""
        if self.stream is not None:
            return []
        return self.plan.tasks if self.screened is None else self.screened.upper_bound()

    def schedule(self, progress: Progress | None) -> dict[str, Any]:
        """The master's ``tasks``, or a screened expansion's ``levels`` (whose decisions ``progress`` hears of)."""
        if self.stream is not None:
            return {"stream": self.stream}
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
        if self.stream is not None:
            self.stream.wait()  # planned and checked against QCManyBody's compute map
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


def _halting(stop: Callable[[], str | None], setup: MasterSetup) -> Callable[[], str | None]:
    """The master's stop request: a stop signal, or a checkpoint that can no longer be written."""
    return lambda: stop() or setup.journal.failure


def _stopped(exc: RunStopped, setup: MasterSetup, journaled: JournalObserver) -> RunStopped:
    """What the user reads when a run stopped early: why, what is saved where, how to resume."""
    journal = setup.journal
    if journal.failure is not None:
        journaled.saved += journal.save_unsaved()  # the disk may have room again for a few
        lost = f"; {len(journal.unsaved)} computed results could not be saved" if journal.unsaved else ""
        return WriteFailed(f"{journal.failure}; stopped: {journaled.saved} of {len(setup.plan.tasks)} QC results "
                           f"are saved in {journal.checkpoint.path}{lost}; free space (or move the checkpoint "
                           "with --checkpoint) and rerun the same command to resume", abandoned=exc.abandoned)
    where = f" in {journal.checkpoint.path}" if journal.checkpoint else " (no checkpoint was kept)"
    return RunStopped(f"{exc}; {journaled.saved} of {len(setup.plan.tasks)} QC results are saved{where}; "
                      "rerun the same command to resume", abandoned=exc.abandoned)


def _deliver(outcome: Outcome, setup: MasterSetup, on_outcome: Callable[[Outcome], None] | None) -> None:
    """Hand the outcome over (write the output), then remove the checkpoint -- never the other way round."""
    journal = setup.journal
    try:
        if on_outcome is not None:
            on_outcome(outcome)
    except WriteFailed as exc:
        journal.close(completed=False)
        if journal.checkpoint is None:
            raise WriteFailed(f"{exc}; no checkpoint was kept, so the results are lost") from None
        raise WriteFailed(f"{exc}; every QC result is kept in the checkpoint {journal.checkpoint.path}: make room "
                          "(or choose another -o) and rerun the same command, which writes the result without "
                          "computing again") from None
    except BaseException:
        journal.close(completed=False)
        raise
    journal.close(completed=True)


class JournalObserver(RunObserver):
    """Every result goes to the checkpoint (and cache) the moment it arrives."""

    def __init__(self, journal: Journal, saved: int):
        self.journal = journal
        self.saved = saved

    def completed(self, done: Completion) -> None:
        # first: a result on disk survives whatever happens next
        self.saved += self.journal.record(done.task, done.message)


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


def _stop_signals(name: str) -> StopSignals:
    return stop_signals(hydra=name == "mpi" and launched_by_hydra())


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

    def __init__(self, transport: MasterTransport, name: str, beacon: Any = None):
        self.transport = transport
        self.name = name
        self.beacon = beacon  # under MPI: rank 0's sign of life to the workers (a MasterBeacon), stopped at close
        self.ready: set[int] = set()
        self.lost: set[int] = set()
        self.jobs = 0
        self.abandoned = 0
        self.closed = False
        self.startup_deadline: float | None = None  # perf_counter time by which every worker must have joined

    @classmethod
    def local(cls, options: ExecutionOptions, programs: Iterable[str] | None = None,
              zygote: Zygote | None = None) -> WorkerPool:
        """``n_workers`` local worker processes, forked from a forkserver preloaded for ``programs``.

        The forkserver is ``zygote`` (a fork of this process, see :func:`fork_local_zygote`) where it
        can serve, else a spawned interpreter.
        """
        from .transports.local import LocalMasterTransport

        n_workers = options.n_workers or usable_cores()
        memory = options.memory_per_task or default_memory_per_task(n_workers)
        # a worker forked from the forkserver has one thread when it forks its first QC child: safe;
        # a restart (from the worker's supervisor thread) forks from the worker's own forkserver
        init = WorkerInit.from_options(options, memory, child_start="fork")
        transport = LocalMasterTransport(n_workers, functools.partial(worker_main, init), options.threads_per_task,
                                         preload=preload(programs), zygote=zygote,
                                         worker_forkservers=options.isolate_tasks)
        return cls(transport, "local")

    @property
    def workers(self) -> list[int]:
        return [worker for worker in self.transport.worker_ids if worker not in self.lost]

    def run(self, setup: MasterSetup, *, progress: bool = False, started: float | None = None,
            stop: Callable[[], str | None] | None = None, on_outcome: Callable[[Outcome], None] | None = None) -> Outcome:
        """One expansion on the pool's workers.

        ``on_outcome`` (writing the output) is called before the checkpoint is removed: if it raises
        :class:`WriteFailed`, the checkpoint is kept and the error says how to rerun. ``stop`` are
        signal handlers installed earlier (the command line installs them before anything starts).
        """
        if self.closed or not self.workers:
            raise TaskFailedError("no worker of this session is left (all were lost); start a new session")
        started = time.perf_counter() if started is None else started
        journaled = JournalObserver(setup.journal, len(setup.reused))
        timing = TimingRecorder(setup.plan, started)
        try:
            with contextlib.ExitStack() as handlers:
                stop = stop or handlers.enter_context(_stop_signals(self.name))
                master_cpu = time.process_time()
                halt = _halting(stop, setup)
                if setup.screened is not None and setup.screened.prescreen is not None:
                    self._prescreen(setup, halt, progress, timing, started)
                shown = self._progress(setup.shown, set(setup.reused), planning=setup.stream is not None) \
                    if progress else None
                results = self._expansion(setup.plan, setup.options, setup.job, halt,
                                          [journaled, timing, shown, *setup.recorders()], started,
                                          **setup.schedule(shown))
                master_cpu = time.process_time() - master_cpu
            if shown is not None:
                shown.close()
            outcome = _outcome(setup.assemble(results), setup, timing, self, started, master_cpu, len(results))
        except RunStopped as exc:
            stopped = _stopped(exc, setup, journaled)
            setup.abandon()
            raise stopped from None
        except BaseException:
            setup.abandon()
            raise
        _deliver(outcome, setup, on_outcome)
        return outcome

    def _progress(self, tasks: list[Task], done: set[int], planning: bool = False) -> Progress:
        return Progress(tasks, done, len(self.workers), launched_by_mpi=self.name == "mpi", planning=planning)

    def _prescreen(self, setup: MasterSetup, stop: Callable[[], str | None], progress: bool,
                   timing: TimingRecorder, started: float) -> None:
        """The cheap expansion first, on the same workers; its outcome decides what the requested one may compute."""
        prescreen = setup.screened.prescreen
        began = time.perf_counter()
        todo = prescreen.todo
        logger.info("prescreen: %d %s tasks (%d reused)", len(todo), setup.screened.rules.prescreen.name,
                    len(prescreen.reused))
        shown = self._progress(todo, set()) if progress else None
        observers = [JournalObserver(setup.journal.beside(prescreen.plan), 0), _WorkersReady(timing), shown]
        results = self._expansion(prescreen.plan, setup.options, prescreen.job, stop, observers, started, tasks=todo)
        if shown is not None:
            shown.close()
        setup.screened.begin(prescreen.done(results, time.perf_counter() - began))

    def _expansion(self, plan: Plan, options: ExecutionOptions, job: Callable[[int], JobMessage],
                   stop: Callable[[], str | None], observers: list[RunObserver | None], started: float,
                   **schedule: Any) -> dict[int, ResultMessage]:
        """One JOB on the pool's workers: ``schedule`` is its tasks, or its levels (a screened expansion)."""
        self.jobs += 1
        master = Master(self.transport, plan, policy=SchedulePolicy.from_options(options),
                        cost_model=CostModel(program_estimates(plan)), observer=Observers(observers),
                        job=job(self.jobs), ready=sorted(self.ready), lost=sorted(self.lost),
                        stop_requested=stop, stop_grace=options.stop_grace,
                        liveness=LivenessSettings(options.heartbeat_timeout, 2 * options.heartbeat_interval + 1,
                                                  startup_deadline=self._startup_deadline(options, started),
                                                  startup_timeout=options.startup_timeout),
                        **schedule)
        try:
            return master.run()
        finally:
            self._after(master)

    def _startup_deadline(self, options: ExecutionOptions, started: float) -> float:
        """When a worker that has not joined is lost: ``startup_timeout`` after the pool's first run started.

        Kept on the pool's first run (perf_counter) and returned on the master's clock (monotonic).
        """
        if self.startup_deadline is None:
            self.startup_deadline = started + options.startup_timeout
        return time.monotonic() + (self.startup_deadline - time.perf_counter())

    def _after(self, master: Master) -> None:
        self.ready |= master.started
        self.lost |= master.liveness.lost
        if self.beacon is not None:
            self.beacon.skip = frozenset(self.lost)
        self.abandoned = master.abandoned

    def close(self) -> None:
        """Tell the workers to end and take in their last messages (never waiting forever).

        Workers that did not answer count as lost (under MPI the job is then ended after the output).
        """
        if not self.closed:
            self.closed = True
            if self.beacon is not None:
                self.beacon.stop()  # before SHUTDOWN: every beacon is then received before the GOODBYE
            self.lost |= shut_down(self.transport, self.workers, started=self.ready, hurry=self.abandoned > 0)


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


@dataclasses.dataclass(frozen=True)
class RunHooks:
    """What a caller of :func:`run` adds: progress, writing the output, early stop handlers, MPI start-up.

    ``on_outcome`` is called with the outcome before the workers are shut down (the output is
    written as soon as the last result is in) and before the checkpoint is removed. ``stop`` is a
    stop-request callable installed before anything started (the command line's signal handlers).
    ``mpi_start_timeout``: under MPI, end the job if MPI has not started on every rank by then.
    """

    progress: bool = False
    on_outcome: Callable[[Outcome], None] | None = None
    stop: Callable[[], str | None] | None = None
    mpi_start_timeout: float | None = None


def run(prepare: Prepare, hooks: RunHooks = RunHooks()) -> Outcome | None:
    """Run one MBE on whichever transport this process was launched for. Rank 0 returns the outcome."""
    if launched_by_mpi():
        return _run_mpi(prepare, hooks)
    return _run_local(prepare, hooks)


def _check_stop(hooks: RunHooks) -> None:
    """A stop asked for while the run was starting ends it here, before any worker is started."""
    reason = hooks.stop() if hooks.stop is not None else None
    if reason:
        raise RunStopped(f"{reason} while starting; no QC task was run; rerun the same command to start again")


def _run_local(prepare: Prepare, hooks: RunHooks) -> Outcome:
    started = time.perf_counter()
    zygote: Zygote | None = None

    def validated() -> tuple[ManyBodyInput, ExecutionOptions]:
        nonlocal zygote
        checked = prepare()
        # the workers' forkserver, forked now: the input is valid, the QC programs that checked it are
        # imported (so the zygote has them too), and planning, which may start a thread, has not begun
        zygote = fork_local_zygote()
        return checked

    setup: MasterSetup | None = None
    try:
        setup = MasterSetup.prepare(validated)
        _check_stop(hooks)
        logger.info("running %s on local worker processes", setup.count_text)
        pool = WorkerPool.local(setup.options, programs_of(setup.mbi), zygote=zygote)
    except BaseException:
        if zygote is not None:
            zygote.discard()  # nothing if it became the forkserver
        if setup is not None:
            setup.abandon()
        raise
    try:
        return pool.run(setup, progress=hooks.progress, started=started, stop=hooks.stop,
                        on_outcome=hooks.on_outcome)
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


def _announce(comm: Any, prepare: Prepare, hooks: RunHooks, timeout: float) -> tuple[MasterSetup | None, tuple]:
    """Rank 0 prepares the run and tells every rank how it starts (the options, or the error)."""
    from .transports.mpi import MasterGone, announce, await_announcement

    if comm.Get_rank() != 0:
        try:
            return None, await_announcement(comm, master_timeout(timeout))
        except MasterGone as exc:
            end_orphaned_rank(comm.Get_rank(), exc)
    setup = None
    try:
        setup = MasterSetup.prepare(prepare)
        _check_stop(hooks)
        announcement: tuple = ("ok", setup.options.to_dict(), programs_of(setup.mbi))
    except RunStopped as exc:
        setup.abandon()
        announcement = ("stopped", str(exc))
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


def fork_zygote() -> Zygote | None:
    """On a worker rank, before MPI starts: the fork that may become its forkserver (see transports.zygote)."""
    from .transports import launcher_rank

    return Zygote.fork() if launcher_rank() != 0 else None


def fork_local_zygote() -> Zygote | None:
    """In a master about to start local workers: the fork that may become their forkserver.

    Its children start with what this process has imported (QCEngine, QCManyBody, ours) instead of
    a fresh interpreter importing it all again: 1.4 s of a local run's start-up on this machine.
    Only while this process has one thread and no forkserver yet (see :class:`Zygote`); the
    zygote forgets this process's logging, so workers configure theirs as under ``spawn``.
    """
    from .transports.processes import forkserver_running

    return None if forkserver_running() else Zygote.fork(fresh_logging=True)


def mpi_worker_init(comm: Any, options: ExecutionOptions, programs: Iterable[str] | None = None,
                    zygote: Zygote | None = None) -> WorkerInit:
    """A worker rank's settings; collective (every rank calls it): the node's memory is shared by its workers.

    A worker rank also starts its forkserver here, preloaded for ``programs`` (None: all of ours):
    ``zygote`` (forked before MPI started) where it can serve, else a spawned one. Its supervised QC
    child, and any restart of it, is then a fork of that (milliseconds); the rank itself never forks
    once MPI runs.
    """
    from .transports.mpi import ignore_hydra_notices, workers_on_node
    from .transports.processes import forkserver_context

    memory = options.memory_per_task or default_memory_per_task(workers_on_node(comm))
    ignore_hydra_notices()
    if comm.Get_rank() != 0 and options.isolate_tasks:
        forkserver_context(options.threads_per_task, preload(programs), zygote)
    elif zygote is not None:
        zygote.discard()
    return WorkerInit.from_options(options, memory, child_start="forkserver")


def _run_mpi(prepare: Prepare, hooks: RunHooks) -> Outcome | None:
    started = time.perf_counter()
    from .transports import launcher_rank
    from .transports.watchdog import mpi_start_watchdog

    zygote = fork_zygote()
    with mpi_start_watchdog(hooks.mpi_start_timeout, launcher_rank()):
        from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if single_rank(comm):
        return _run_local(prepare, hooks)
    defaults = ExecutionOptions()
    beacon = start_beacon(comm, defaults.heartbeat_interval)  # rank 0 is silent while it plans
    setup, announcement = _announce(comm, prepare, hooks, defaults.heartbeat_timeout)
    if announcement[0] != "ok":
        if beacon is not None:
            beacon.stop()
        if zygote is not None:
            zygote.discard()
    if announcement[0] == "input":
        raise InputError(announcement[1])
    if announcement[0] == "stopped":
        raise RunStopped(announcement[1])
    if announcement[0] == "internal":
        raise RuntimeError(f"rank 0 failed while preparing the run:\n{announcement[1]}")
    options = ExecutionOptions.from_mapping(announcement[1])
    init = mpi_worker_init(comm, options, announcement[2], zygote)
    if comm.Get_rank() != 0:
        serve_rank(comm, init, options.heartbeat_timeout)
        return None
    if beacon is not None:
        beacon.interval = options.heartbeat_interval
    _warn_thread_cap(options.threads_per_task)
    logger.info("running %s on %d MPI worker ranks", setup.count_text, comm.Get_size() - 1)
    return _master_rank(comm, setup, hooks, started, beacon)


def start_beacon(comm: Any, interval: float) -> Any:
    """On rank 0, where MPI allows a second thread to send: the beacon that tells workers it is alive."""
    from .protocol import HeartbeatMessage, encode
    from .transports.mpi import MasterBeacon, beacon_possible

    if comm.Get_rank() != 0 or not beacon_possible():
        return None
    return MasterBeacon(comm, encode(HeartbeatMessage(0)), interval).start()


def master_timeout(timeout: float) -> float | None:
    """How long a worker rank waits for rank 0's beacon (None: rank 0 cannot send one)."""
    from .transports.mpi import beacon_possible

    return timeout if beacon_possible() else None


def serve_rank(comm: Any, init: WorkerInit, heartbeat_timeout: float) -> None:
    """A worker rank serves until SHUTDOWN, and ends itself if rank 0 vanishes (MPI_Finalize would wait forever)."""
    from .transports.mpi import MasterGone, MPIWorkerEndpoint

    try:
        worker_main(init, MPIWorkerEndpoint(comm, master_timeout=master_timeout(heartbeat_timeout)))
    except MasterGone as exc:
        end_orphaned_rank(comm.Get_rank(), exc)


def end_orphaned_rank(rank: int, exc: Exception) -> None:
    print(f"mbe_mpi[rank {rank}]: {exc}; this worker ends now (rerun the same command to resume from the "
          "checkpoint)", file=sys.stderr, flush=True)
    os._exit(EXIT_STOPPED)


def _master_rank(comm: Any, setup: MasterSetup, hooks: RunHooks, started: float, beacon: Any) -> Outcome:
    """Rank 0 of an MPI run: the pool of worker ranks, one expansion, and an end that never hangs."""
    from .transports.mpi import MPIMasterTransport

    pool = WorkerPool(MPIMasterTransport(comm), "mpi", beacon)
    try:
        outcome = pool.run(setup, progress=hooks.progress, started=started, stop=hooks.stop,
                           on_outcome=hooks.on_outcome)
    except BaseException as exc:
        if not (isinstance(exc, RunStopped) and exc.abandoned):
            pool.close()
        _end_if_stuck(pool, exc)
        raise
    pool.close()
    outcome.lost_workers = sorted({*outcome.lost_workers, *pool.lost})  # also those silent at the shutdown
    return outcome


def _end_if_stuck(pool: WorkerPool, exc: BaseException) -> None:
    """End the MPI job now, with the run's message and exit code, if MPI_Finalize would wait forever.

    It would for busy workers after a stop (they cannot be told to stop) and for lost ranks that
    the MPI library itself did not declare failed (hung, stopped, never started).
    """
    from .transports.mpi import abort

    abandoned = isinstance(exc, RunStopped) and exc.abandoned
    if not abandoned and not pool.lost - pool.transport.failed:
        return
    code, text = describe(exc) or (EXIT_INTERNAL_ERROR, "mbe_mpi: internal error on rank 0:\n"
                                   + "".join(traceback.format_exception(exc)))
    print(text, file=sys.stderr, flush=True)
    abort(code)
