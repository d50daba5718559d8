"""A worker process's whole life: quiet signals, logging, its QC executor, then serve until SHUTDOWN."""

from __future__ import annotations

import dataclasses
import signal
import threading

from ..errors import InputError
from ..harnesses import import_plugins
from ..transports import WorkerEndpoint
from .executors import QCThread, thread_executor
from .init import WorkerInit
from .serve import serve
from .supervise import QCChild

#: signals a batch system or mpiexec delivers to every process; stopping is the master's decision (it
#: saves results and then shuts the workers down), so workers ignore them
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def worker_main(init: WorkerInit, endpoint: WorkerEndpoint) -> None:
    """Run a worker on ``endpoint`` (a pipe or an MPI rank) with ``init``'s settings."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    init.configure_logging(endpoint.rank)
    try:  # here too, not only where QC runs: a forked QC child then inherits them
        import_plugins(init.plugins)
    except InputError:
        pass  # the executor meets the same error and reports it with every task, as data
    serve(endpoint, make_executor(init, endpoint), heartbeat_interval=init.heartbeat_interval)


def make_executor(init: WorkerInit, endpoint: WorkerEndpoint) -> QCThread:
    """The supervised QC child (``isolate_tasks``), or a thread of this process."""
    if not init.isolate_tasks:
        return thread_executor(endpoint.rank, init)
    if init.child_start == "fork":
        init = dataclasses.replace(init, close_fds=(*init.close_fds, *endpoint.inherited_fds()))
    return QCChild(endpoint.rank, init)
