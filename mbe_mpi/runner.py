"""Start a run on either transport: validate, plan, run master and workers, assemble.

SPMD under MPI: every rank calls :func:`run`; rank 0 alone reads and validates the input and
broadcasts either the validated input or the error, so a user mistake ends *every* rank with the
same message and exit code before any QC work -- no hang, no abort storm. Without MPI, the same
master and worker code runs over local worker processes.
"""

from __future__ import annotations

import dataclasses
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
from qcmanybody.utils import labeler

from .assemble import assemble
from .checkpoint import Journal
from .costs import CostModel, program_estimates
from .errors import EXIT_STOPPED, InputError, RunStopped
from .execute import WorkerContext, default_memory_per_task
from .harnesses import import_plugins
from .master import Completion, policy_from_options, run_master
from .options import ExecutionOptions, usable_cores
from .plan import Plan, Task, build_plan
from .progress import Progress
from .protocol import ResultMessage
from .report import TaskTiming, timing_report
from .supervise import QCChild
from .transports import MasterTransport, WorkerEndpoint
from .worker import serve, thread_executor

logger = logging.getLogger(__name__)

Prepare = Callable[[], tuple[ManyBodyInput, ExecutionOptions]]

# Environment variables set by MPI launchers (MPICH/hydra, Intel MPI, Open MPI, PMIx, SLURM's PMI).
_MPI_LAUNCH_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """Whether this process was started by mpiexec/mpirun/srun (without initialising MPI to find out)."""
    return any(name in os.environ for name in _MPI_LAUNCH_VARIABLES)


def finalize_mpi() -> None:
    """End MPI now, where a failure can still be reported, instead of silently at interpreter exit.

    mpi4py finalizes at exit and ignores errors. A rank whose MPI_Finalize fails (MPICH refuses
    while a message was never received) never tells the launcher it finished, and hydra then
    kills every rank (exit code 9, "Killed (signal 9)") -- all the user would see. Here the reason
    is printed. Nothing to do when MPI was never started (the local transport).
    """
    if "mpi4py.MPI" not in sys.modules:
        return
    from mpi4py import MPI

    if not MPI.Is_initialized() or MPI.Is_finalized():
        return
    rank = MPI.COMM_WORLD.Get_rank()
    try:
        MPI.Finalize()
    except MPI.Exception as exc:
        print(f"mbe_mpi: MPI_Finalize failed on rank {rank}; mpiexec may now end the job with an error: "
              f"{exc.Get_error_string()}", file=sys.stderr, flush=True)


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Outcome:
    """What rank 0 gets from a run: the result, and when each task ran (for reports and charts)."""

    result: ManyBodyResult
    timeline: list[TaskTiming]
    lost_workers: list[int] = dataclasses.field(default_factory=list)
    transport: str = "local"
    failed_by_mpi: set[int] = dataclasses.field(default_factory=set)  # lost workers the MPI library declared failed

    def release_mpi(self) -> None:
        """End the MPI job once everything is written, if a worker was lost.

        MPI_Finalize waits for every rank, and a lost (hung or stopped) one never arrives;
        ``MPI_Abort(0)`` from rank 0 ends every rank and MPICH's ``mpiexec`` then returns 0.
        Ranks that a fault-tolerant MPI (ULFM) reported failed do not hold up MPI_Finalize, and
        there MPI_Abort after a failure was seen to leave ranks behind (Open MPI 5.0): if every
        lost worker is such a rank, the job ends normally.
        """
        if self.transport == "mpi" and set(self.lost_workers) - self.failed_by_mpi:
            from mpi4py import MPI

            sys.stdout.flush()
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(0)


@dataclasses.dataclass
class MasterSetup:
    """Rank 0's view of a run once the input is validated: plan, journal and reusable results."""

    mbi: ManyBodyInput
    input_json: str
    options: ExecutionOptions
    plan: Plan
    journal: Journal
    reused: dict[int, ResultMessage]

    @classmethod
    def prepare(cls, prepare: Prepare) -> MasterSetup:
        mbi, options = prepare()
        plan = build_plan(mbi)
        input_json = mbi.model_dump_json()
        checkpoint = options.checkpoint if isinstance(options.checkpoint, str) else None
        journal = Journal(plan, input_json, checkpoint=checkpoint, cache_dir=options.cache_dir, fresh=options.fresh)
        reused = journal.reusable()
        if journal.from_checkpoint:
            logger.warning("resuming from checkpoint %s: %d of %d QC results are done already",
                           checkpoint, journal.from_checkpoint, len(plan.tasks))
        if journal.from_cache:
            logger.info("%d QC results found in the cache %s", journal.from_cache, options.cache_dir)
        return cls(mbi, input_json, options, plan, journal, reused)

    @property
    def todo(self) -> list[Task]:
        return [task for task in self.plan.tasks if task.index not in self.reused]


def launched_by_hydra() -> bool:
    """Started by MPICH's ``mpiexec`` (hydra), which gives every rank its control descriptor."""
    return "HYDI_CONTROL_FD" in os.environ


class _StopSignals:
    """SIGTERM/SIGUSR1 (a batch system's warning before the time limit) ask the master to stop cleanly.

    Under MPICH's ``mpiexec -disable-auto-cleanup``, hydra sends SIGUSR1 to the surviving ranks when
    a rank ends (measured: within ~10 ms, whatever the exit code). There SIGUSR1 is therefore not a
    stop request but a notice that a worker may be gone (``exit_notices`` counts them); SIGTERM,
    which hydra forwards to every rank, remains the way to stop.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, usr1_is_exit_notice: bool = False) -> None:
        self.reason: str | None = None
        self.exit_notices = 0
        self._usr1_is_notice = usr1_is_exit_notice
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGUSR1 and self._usr1_is_notice:
            self.exit_notices += 1
        else:
            self.reason = f"received {signal.Signals(signum).name}"

    def notices(self) -> int:
        return self.exit_notices

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self) -> str | None:
        return self.reason


def _run_master_and_assemble(transport: MasterTransport, setup: MasterSetup, name: str,
                             started: float, show_progress: bool) -> Outcome:
    plan, journal = setup.plan, setup.journal
    task_time = 0.0
    saved = len(setup.reused)
    completed = False
    timeline: list[TaskTiming] = []
    ready_at: dict[int, float] = {}
    lost: list[int] = []

    def on_result(done: Completion) -> None:
        nonlocal task_time, saved
        journal.record(done.task, done.message)  # first: a result on disk survives whatever happens next
        saved += done.message.ok
        task_time += done.message.wall_time
        timeline.append(TaskTiming.from_completion(done, started))
        if progress is not None:
            progress.completed(done)
        if logger.isEnabledFor(logging.DEBUG):  # a label costs ~25 us to build: not per task for nothing
            logger.debug("task %s done on worker %d in %.3f s", plan.label(done.task), done.worker,
                         done.message.wall_time)

    todo = setup.todo
    progress = (Progress(plan.tasks, set(setup.reused), len(transport.worker_ids), launched_by_mpi=name == "mpi")
                if show_progress else None)
    try:
        hydra = name == "mpi" and launched_by_hydra()
        with _StopSignals(usr1_is_exit_notice=hydra) as stop:
            master_cpu = time.process_time()
            options = setup.options
            policy = policy_from_options(options)
            results = run_master(transport, plan, on_result, tasks=todo, policy=policy,
                                 cost_model=CostModel(program_estimates(plan)), stop_requested=stop,
                                 stop_grace=setup.options.stop_grace, ready_at=ready_at,
                                 on_dispatch=progress.dispatched if progress is not None else None,
                                 on_requeue=progress.requeued if progress is not None else None,
                                 heartbeat_timeout=setup.options.heartbeat_timeout, on_worker_lost=lost.append,
                                 exit_notices=stop.notices if hydra else None,
                                 exit_notice_grace=2 * setup.options.heartbeat_interval + 1)
            master_cpu = time.process_time() - master_cpu
        if progress is not None:
            progress.close()
        result = assemble(plan, {**setup.reused, **results})
        completed = True
    except RunStopped as exc:
        where = f" in {journal.checkpoint.path}" if journal.checkpoint else " (no checkpoint was kept)"
        raise RunStopped(f"{exc}; {saved} of {len(plan.tasks)} QC results are saved{where}; "
                         "rerun the same command to resume", abandoned=exc.abandoned) from None
    finally:
        journal.close(completed=completed)
    wall_time = time.perf_counter() - started
    n_workers = len(transport.worker_ids)
    stats = RunStats(
        transport=name,
        n_workers=n_workers,
        wall_time=wall_time,
        tasks_per_level={level: len(tasks) for level, tasks in plan.by_level().items()},
        task_time=task_time,
        computed=len(todo),
        from_checkpoint=journal.from_checkpoint,
        from_cache=journal.from_cache,
        timing=timing_report(timeline, n_workers, wall_time, master_cpu,
                             startup=max(ready_at.values(), default=started) - started),
        lost_workers=lost,
    )
    result = result.model_copy(update={"extras": {**result.extras, "mbe_mpi": stats.to_dict()}})
    return Outcome(result, timeline, lost, name, set(getattr(transport, "failed", ())))


def worker_startup(endpoint: WorkerEndpoint, init: dict[str, Any]) -> None:
    """A worker's whole life: build its context (plugins, input, QCEngine config), then serve."""
    # Batch systems and mpiexec deliver SIGTERM/SIGUSR1 to every process; stopping is the master's
    # decision (it saves results and then shuts the workers down), so workers ignore them.
    if threading.current_thread() is threading.main_thread():
        for sig in _StopSignals.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=init.get("log_level", logging.WARNING),
                        format=f"mbe_mpi[worker {endpoint.rank}] %(levelname)s: %(message)s")
    if init["isolate_tasks"]:
        names = init["model_chemistries"]
        if init.get("child_start") == "fork" and hasattr(endpoint, "conn"):
            init = {**init, "close_fds": [endpoint.conn.fileno()]}
        qc = QCChild(endpoint.rank, init, task_timeout=init["task_timeout"],
                     labels=lambda task: labeler(names[task.mc_index], task.real, task.basis),
                     first_start=init.get("child_start", "spawn"))
    else:
        qc = thread_executor(endpoint.rank, lambda: build_worker_context(endpoint.rank, init))
    exit_after = os.environ.get("MBE_MPI_FAULT_WORKER_EXIT")  # fault injection for tests: "RANK:RESULTS"
    rank_exit = None
    if exit_after and exit_after.split(":")[0] == str(endpoint.rank):
        rank_exit = int(exit_after.split(":")[1])
    serve(endpoint, qc, heartbeat_interval=init["heartbeat_interval"], exit_after=rank_exit)


def build_worker_context(rank: int, init: dict[str, Any]) -> WorkerContext:
    """What a process that runs QC tasks needs: plugins imported, the input, QCEngine configured."""
    import_plugins(init["plugins"])
    mbi = ManyBodyInput.model_validate_json(init["input_json"])
    return WorkerContext.build(mbi, rank=rank, threads=init["threads"], memory_gib=init["memory_gib"],
                               scratch_dir=init["scratch_dir"], keep_scratch=init["keep_scratch"])


def _worker_init(input_json: str, options: ExecutionOptions, memory_gib: float,
                 model_chemistries: tuple[str, ...]) -> dict[str, Any]:
    return {
        "input_json": input_json,
        "model_chemistries": list(model_chemistries),
        "isolate_tasks": options.isolate_tasks,
        "heartbeat_interval": options.heartbeat_interval,
        "task_timeout": options.task_timeout,
        # enforced only when asked for explicitly; the default share is a budget, not a limit
        "memory_limit_gib": options.memory_per_task,
        "plugins": list(options.plugins),
        "threads": options.threads_per_task,
        "memory_gib": memory_gib,
        "scratch_dir": options.scratch_dir,
        "keep_scratch": options.keep_scratch,
        "log_level": logging.getLogger("mbe_mpi").getEffectiveLevel(),
    }


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

    init = {**_worker_init(setup.input_json, options, memory, setup.plan.model_chemistries), "child_start": "fork"}
    transport = LocalMasterTransport(n_workers, init, options.threads_per_task)
    return _run_master_and_assemble(transport, setup, "local", started, progress)


def _warn_thread_cap(threads_per_task: int) -> None:
    """MPI ranks start with the launcher's environment, and OpenMP runtimes read OMP_NUM_THREADS once."""
    launched = os.environ.get("OMP_NUM_THREADS", "")
    if launched.isdigit() and int(launched) < threads_per_task:
        logger.warning(
            "OMP_NUM_THREADS=%s in the environment of the MPI ranks limits threads_per_task=%d to %s thread(s); "
            "export OMP_NUM_THREADS=%d before mpiexec", launched, threads_per_task, launched, threads_per_task,
        )


def _run_mpi(prepare: Prepare, progress: bool = False) -> Outcome | None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        logger.warning(
            "mbe_mpi: only one MPI rank, so there is no worker rank; running the single-node fallback "
            "with local worker processes instead (use mpiexec -n 2 or more for MPI workers)"
        )
        return _run_local(prepare, progress)

    from .transports.mpi import MPIMasterTransport, MPIWorkerEndpoint, announce, await_announcement

    started = time.perf_counter()
    rank = comm.Get_rank()
    setup = None
    if rank == 0:
        try:
            setup = MasterSetup.prepare(prepare)
            announcement: tuple = ("ok", setup.input_json, setup.options.to_dict(), setup.plan.model_chemistries)
        except InputError as exc:
            announcement = ("input", str(exc))
        except Exception:
            announcement = ("internal", traceback.format_exc())
        announce(comm, announcement)
    else:
        announcement = await_announcement(comm)
    if announcement[0] == "input":
        raise InputError(announcement[1])
    if announcement[0] == "internal":
        raise RuntimeError(f"rank 0 failed while preparing the run:\n{announcement[1]}")
    _, input_json, options_dict, model_chemistries = announcement
    options = ExecutionOptions.from_mapping({k: v for k, v in options_dict.items() if v is not None})

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    workers_on_node = node.Get_size() - node.allreduce(int(rank == 0))
    node.Free()
    memory = options.memory_per_task or default_memory_per_task(workers_on_node)

    if launched_by_hydra():  # hydra's notice that a rank ended arrives until the very end: never die of it
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if rank == 0:
        _warn_thread_cap(options.threads_per_task)
        logger.info("running %d QC tasks on %d MPI worker ranks", len(setup.todo), comm.Get_size() - 1)
        try:
            return _run_master_and_assemble(MPIMasterTransport(comm), setup, "mpi", started, progress)
        except RunStopped as exc:
            if not exc.abandoned:
                raise
            # Busy workers cannot be told to stop, and MPI_Finalize would wait for them: end the job.
            print(f"mbe_mpi: {exc}", file=sys.stderr, flush=True)
            comm.Abort(EXIT_STOPPED)
    worker_startup(MPIWorkerEndpoint(comm), _worker_init(input_json, options, memory, model_chemistries))
    return None
