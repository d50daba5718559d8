"""What a worker process is started with: settings that hold for its whole life, before any input."""

from __future__ import annotations

import dataclasses
import logging

from ..options import ExecutionOptions


@dataclasses.dataclass(frozen=True)
class WorkerInit:
    """A worker process's settings, the same for every expansion it serves (inputs come as JOB messages).

    ``memory_gib`` is the QCEngine budget of each task; ``memory_limit_gib`` is enforced on the
    supervised QC child only when the user asked for a limit explicitly (the default share is a
    budget, not a limit). ``child_start`` is how the supervised QC child starts: ``fork`` (from this
    worker, while it is single-threaded: the first child only; restarts spawn), or ``forkserver``
    (this process's preloaded forkserver: first start and restarts in milliseconds); see
    :mod:`mbe_mpi.worker.supervise`. ``close_fds`` are descriptors a forked child must close (its
    parent's link to the master, whose closing tells the master it is gone).
    """

    isolate_tasks: bool
    heartbeat_interval: float
    task_timeout: float | None
    memory_limit_gib: float | None
    plugins: tuple[str, ...]
    threads: int
    memory_gib: float
    scratch_dir: str | None
    keep_scratch: bool
    log_level: int = logging.WARNING
    child_start: str = "spawn"
    close_fds: tuple[int, ...] = ()

    @classmethod
    def from_options(cls, options: ExecutionOptions, memory_gib: float, *, child_start: str = "spawn") -> WorkerInit:
        return cls(
            isolate_tasks=options.isolate_tasks,
            heartbeat_interval=options.heartbeat_interval,
            task_timeout=options.task_timeout,
            memory_limit_gib=options.memory_per_task,
            plugins=tuple(options.plugins),
            threads=options.threads_per_task,
            memory_gib=memory_gib,
            scratch_dir=options.scratch_dir,
            keep_scratch=options.keep_scratch,
            log_level=logging.getLogger("mbe_mpi").getEffectiveLevel(),
            child_start=child_start,
        )

    def configure_logging(self, rank: int) -> None:
        """Log as worker ``rank`` at the run's level; a no-op where this process has handlers already
        (a rank's from the command line, a forked QC child's from its worker)."""
        logging.basicConfig(level=self.log_level, format=f"mbe_mpi[worker {rank}] %(levelname)s: %(message)s")
