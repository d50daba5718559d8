"""Starting worker and QC processes fast, and safely: a forkserver with the heavy modules preloaded.

A fresh interpreter that imports QCEngine, QCManyBody and a QC program takes seconds; a fork of a
process that has imported them takes milliseconds. Forking an arbitrary process is not safe (its
threads, locks, OpenMP pools and MPI state would be copied half-way), but multiprocessing's
*forkserver* is a process made for it: a fresh interpreter (spawned, so it inherits no MPI state and
no file descriptors but its own), single-threaded, that imports the preload modules and then only
forks. Its children start with everything imported and run nothing they did not start themselves.
Where it can be, the forkserver is instead a fork of the process that needs it -- a worker rank
before MPI started, a local master before it started planning -- taken while it was just as clean
(:mod:`mbe_mpi.transports.zygote`), so that its imports are not made twice.

OpenMP runtimes and BLAS read their thread count once, when they are loaded: the forkserver is
started with the thread variables set to ``threads_per_task``, and a process whose forkserver
already runs with another thread count starts processes with ``spawn`` instead.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import select
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .zygote import Zygote

logger = logging.getLogger(__name__)

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# multiprocessing keeps one forkserver per process (module state of its own); this records the
# thread count ours was started with, so that a later pool with another count does not use it
_forkserver_threads: int | None = None


@contextlib.contextmanager
def thread_environment(threads: int) -> Iterator[None]:
    """Set thread-count variables while children start, so their OpenMP/BLAS pools are sized right."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _launched_with(threads: int) -> bool:
    """Whether the libraries this process loaded at its start read ``threads`` from the thread variables."""
    wanted = str(threads)
    return os.environ.get("OMP_NUM_THREADS") == wanted and all(
        os.environ.get(name) in (None, wanted) for name in _THREAD_VARIABLES if name != "OMP_NUM_THREADS")


def forkserver_running() -> bool:
    """Whether this process has started its forkserver (a zygote forked now could not serve)."""
    return _forkserver_threads is not None


def forkserver_context(threads: int, preload: Sequence[str], zygote: Zygote | None = None) -> Any:
    """A multiprocessing context whose processes fork from a preloaded forkserver (started here, once).

    The forkserver is ``zygote`` where one was forked and can serve ``threads``, else a spawned
    interpreter. Falls back to ``spawn`` if this process's forkserver was started with another thread count.
    """
    global _forkserver_threads
    if zygote is not None and (_forkserver_threads is not None or not _launched_with(threads)):
        zygote.discard()  # a forkserver runs already, or the zygote's BLAS was loaded for another thread count
        zygote = None
    if _forkserver_threads is not None and _forkserver_threads != threads:
        logger.debug("forkserver runs with %d threads, not %d: starting processes with spawn",
                     _forkserver_threads, threads)
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if _forkserver_threads is None:
        context.set_forkserver_preload(list(preload))
        if zygote is None or not zygote.become_forkserver(preload):
            with thread_environment(threads):
                multiprocessing.forkserver.ensure_running()
        _forkserver_threads = threads
    return context


def exit_when_gone(pid: int, what: str, code: int = 1) -> None:
    """End this process (``os._exit``) as soon as process ``pid`` -- ``what`` it works for -- has ended.

    A worker whose master was killed (``kill -9``, a crashed node's job step) or a QC child whose
    worker was must not live on, orphaned, running tasks nobody will read: not while it starts,
    nor in the middle of a three-hour task. The pipe between them closes too, but a process only
    notices that when it next reads; this notices at once, at every stage. A thread waits on a
    pidfd (Linux >= 5.3: readable when the process ends), without cost; elsewhere it looks once a
    second. Nothing is lost: whoever would have taken this process's results is gone.
    """
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(code)  # gone already
    except (AttributeError, OSError):
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])
        else:
            while _alive(pid):
                time.sleep(1.0)
        os._exit(code)  # nothing else: this may run while the interpreter is already shutting down

    threading.Thread(target=watch, name="mbe_mpi-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
