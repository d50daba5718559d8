"""``mbe_mpi.Session``: one pool of workers for any number of expansions.

Geometry optimisation, molecular dynamics and scans evaluate one expansion after another; starting
workers (processes, QC programs) for each would cost as much as a step of a small optimisation.
A session starts them once::

    with mbe_mpi.Session(n_workers=4) as session:
        if session is not None:          # under mpiexec only rank 0 gets the session
            r1 = session.compute(input_1)
            r2 = session.compute(input_2)

Under ``mpiexec`` every rank enters the ``with``; the worker ranks serve until rank 0 leaves it and
then get ``None`` (the convention of ``mpi4py.futures.MPICommExecutor``). Without MPI the workers
are local processes; the ``with`` is then optional (``close()`` ends them, as does interpreter exit).
"""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput, ManyBodyResult

from .options import ExecutionOptions
from .run import (
    MasterSetup,
    Outcome,
    WorkerPool,
    fork_local_zygote,
    fork_zygote,
    input_preparer,
    mpi_worker_init,
    serve_rank,
    single_rank,
    start_beacon,
)
from .transports import launched_by_mpi


class Session:
    """Workers started once, serving :meth:`compute` calls until :meth:`close`.

    ``execution_options`` are those of :func:`mbe_mpi.compute`. The worker options (``n_workers``,
    ``threads_per_task``, ``memory_per_task``, ``plugins``, ``isolate_tasks``, ``task_timeout``,
    ``heartbeat_interval``, scratch) hold for the session; the others (checkpoint, cache, scheduling,
    retries) may be given again per call. A call that fails -- bad input, a QC task that fails for
    good, Ctrl-C -- leaves the session usable for the next one; a lost worker is not used again.
    """

    def __init__(self, n_workers: int | None = None, **execution_options: Any):
        self._overrides = {**execution_options, "n_workers": n_workers}
        self.options = ExecutionOptions().merged(**self._overrides)  # nonsense is refused here, on every rank
        self._pool: WorkerPool | None = None
        self._closed = False

    def __enter__(self) -> Session | None:
        if launched_by_mpi() and self._start_mpi():
            return None  # a worker rank, whose serving ended when rank 0 left the session
        self._start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start_mpi(self) -> bool:
        """Under mpiexec: rank 0 becomes the pool's master; other ranks serve. True on a worker rank."""
        zygote = fork_zygote()  # before MPI starts (None once it runs)
        from mpi4py import MPI

        from .transports.mpi import MPIMasterTransport

        comm = MPI.COMM_WORLD
        if single_rank(comm):
            return False
        init = mpi_worker_init(comm, self.options, zygote=zygote)
        if comm.Get_rank() != 0:
            serve_rank(comm, init, self.options.heartbeat_timeout)
            self._closed = True
            return True
        self._pool = WorkerPool(MPIMasterTransport(comm), "mpi", start_beacon(comm, self.options.heartbeat_interval))
        return False

    def _start(self) -> WorkerPool:
        if self._closed:
            raise RuntimeError("this session is closed; start a new Session")
        if self._pool is None:
            self._pool = WorkerPool.local(self.options, zygote=fork_local_zygote())
            atexit.register(self.close)  # workers must not outlive a script that forgot close()
        return self._pool

    def run(self, manybody_input: ManyBodyInput | Mapping[str, Any], *, progress: bool = False,
            screening: Mapping[str, Any] | None = None, **execution_options: Any) -> Outcome:
        """One expansion on the session's workers, with its timeline (see :class:`mbe_mpi.run.Outcome`).

        ``screening`` is that of :func:`mbe_mpi.compute`; a prescreen runs on the same workers.
        """
        pool = self._start()
        prepare = input_preparer(manybody_input, {**self._overrides, **execution_options},
                                 source="Session.compute()", pool_options=self.options, screening=screening)
        return pool.run(MasterSetup.prepare(prepare), progress=progress)

    def compute(self, manybody_input: ManyBodyInput | Mapping[str, Any], *,
                screening: Mapping[str, Any] | None = None, **execution_options: Any) -> ManyBodyResult:
        """What :func:`mbe_mpi.compute` returns for this input, computed on the session's workers."""
        return self.run(manybody_input, screening=screening, **execution_options).result

    def close(self) -> None:
        """End the workers (they finish what they are told to, then leave)."""
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
            atexit.unregister(self.close)
            if pool.name == "mpi" and pool.lost - pool.transport.failed:
                # MPI_Finalize would wait for a lost (hung) rank forever: end the job when the script ends
                from .transports.mpi import end_if_ranks_lost

                atexit.register(end_if_ranks_lost, sorted(pool.lost), pool.transport.failed)
