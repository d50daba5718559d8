"""A forkserver without a second cold start: a fork of the process that needs one, made while that is safe.

A worker rank imports QCEngine, QCManyBody and our worker modules before MPI starts; its forkserver
(see :mod:`mbe_mpi.transports.processes`) used to be a fresh interpreter importing all of it again,
once per rank: 0.6-0.8 s of CPU each on this machine, and on a cluster twice the file-system
traffic of an "import storm" of hundreds of ranks. A *zygote* is a fork of the rank taken at the last
moment it is safe to fork -- one thread, MPI not initialised, nothing of MPI's in the process -- that
waits until the rank knows what the run needs, then imports only what is missing (the QC program)
and becomes the rank's multiprocessing forkserver. A local run's master forks one the same way
before it starts planning (its first thread), for its worker processes: 1.4 s less start-up.

The same rules as for a spawned forkserver hold: it starts no threads and runs nothing but forks;
it closes every descriptor it inherited except stdio (the launcher's PMI socket among them); the
garbage collector never walks the heap it shares with the rank (``gc.freeze``), so its pages stay
shared. OpenMP and BLAS read their thread count when loaded, and NumPy's BLAS is already loaded in
the rank: :func:`mbe_mpi.transports.processes.forkserver_context` lets the zygote serve only when the
launch environment asks for the run's ``threads_per_task``, otherwise it ends and a spawned forkserver
is started as before.

This fills in multiprocessing's forkserver state (``multiprocessing.forkserver._forkserver``) the
way ``ForkServer.ensure_running`` does after spawning; where that state is not the one known here
(another Python), :meth:`Zygote.fork` returns None and nothing changes.
"""

from __future__ import annotations

import ctypes
import gc
import inspect
import logging
import multiprocessing.forkserver
import os
import pickle
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Sequence
from multiprocessing import connection, reduction, resource_tracker, spawn, util

__all__ = ["PROCESS_NAME", "TASK_PROCESS_NAME", "WORKER_PROCESS_NAME", "Zygote", "name_process"]

#: the zygote's process name (``ps -o comm``, ``top``; psutil's ``name()``): its command line is the rank's
PROCESS_NAME = "mbe_mpi-server"
#: a supervised QC child's process name (a fork of the zygote would otherwise show the zygote's)
TASK_PROCESS_NAME = "mbe_mpi-task"
#: a local worker process's name (the single-node fallback; an MPI worker is its rank's process)
WORKER_PROCESS_NAME = "mbe_mpi-worker"

_MAIN_PARAMETERS = ["listener_fd", "alive_r", "preload", "main_path", "sys_path"]
_PR_SET_NAME = 15


def name_process(name: str) -> None:
    """Set this process's name as the kernel shows it (Linux; at most 15 bytes; elsewhere nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _forkserver_is_known() -> bool:
    """multiprocessing's forkserver has the state and entry point this module fills in (3.11, 3.12)."""
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    fields = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid", "_preload_modules", "_lock")
    return (server is not None and all(hasattr(server, name) for name in fields)
            and not hasattr(server, "_forkserver_authkey")
            and list(inspect.signature(multiprocessing.forkserver.main).parameters) == _MAIN_PARAMETERS)


def _single_threaded() -> bool:
    """One thread in this process, counting those Python does not know (BLAS, OpenMP, MPI progress)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


class Zygote:
    """The rank's side: the zygote's pid and the socket on which it waits to be told to serve."""

    def __init__(self, pid: int, channel: socket.socket):
        self.pid = pid
        self._channel: socket.socket | None = channel

    @classmethod
    def fork(cls, *, fresh_logging: bool = False) -> Zygote | None:
        """Fork a zygote of this process, or None where that is not safe or this Python is not known.

        ``fresh_logging``: the zygote forgets this process's logging handlers, as a spawned
        interpreter has none (a worker forked from it then configures its own); else it keeps those
        writing to stdout and stderr. Handlers on other descriptors are always forgotten: the zygote
        closes those descriptors, and their numbers are reused for pipes in what it forks.
        """
        if (sys.platform != "linux" or "mpi4py.MPI" in sys.modules or not _single_threaded()
                or not _forkserver_is_known()):
            return None
        for stream in (sys.stdout, sys.stderr):  # else what they hold is written again by every process
            try:                                   # forked from the zygote, when it exits
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass
        ours, theirs = socket.socketpair()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:  # the zygote never returns from here
            _zygote_main(theirs, fresh_logging)
        theirs.close()
        return cls(pid, ours)

    def become_forkserver(self, preload: Sequence[str]) -> bool:
        """Make the zygote this process's forkserver, preloaded with ``preload``; False: it cannot (it ends)."""
        if self._channel is None:
            return False
        server = multiprocessing.forkserver._forkserver
        with server._lock:
            if server._forkserver_pid is not None:  # this process has one already
                self.discard()
                return False
            resource_tracker.ensure_running()
            data = {key: value for key, value in spawn.get_preparation_data("ignore").items()
                    if key in ("main_path", "sys_path")}
            with socket.socket(socket.AF_UNIX) as listener:
                address = connection.arbitrary_address("AF_UNIX")
                listener.bind(address)
                if not util.is_abstract_socket_namespace(address):
                    os.chmod(address, 0o600)
                listener.listen()
                alive_r, alive_w = os.pipe()  # every client holds the write end; the server ends at EOF
                try:
                    payload = pickle.dumps((list(preload), data))
                    reduction.sendfds(self._channel, [listener.fileno(), alive_r])
                    self._channel.sendall(struct.pack("!I", len(payload)) + payload)
                except OSError:
                    os.close(alive_w)
                    self.discard()
                    return False
                finally:
                    os.close(alive_r)
            self._channel.close()
            self._channel = None
            server._forkserver_address = address
            server._forkserver_alive_fd = alive_w
            server._forkserver_pid = self.pid
            server._preload_modules = list(preload)
        return True

    def discard(self) -> None:
        """Not needed: the zygote ends (it reads EOF) and is reaped."""
        if self._channel is None:
            return
        self._channel.close()
        self._channel = None
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _receive(channel: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = channel.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


#: handlers the zygote took off its loggers: kept referenced, so that no file object of theirs is ever
#: finalised (closing a descriptor number that by then belongs to something else)
_forgotten_handlers: list[logging.Handler] = []


def _writes_to_stdio(handler: logging.Handler) -> bool:
    try:
        return handler.stream.fileno() in (1, 2)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def _forget_logging(everything: bool) -> None:
    """Take handlers off every logger: all of them, or those writing elsewhere than stdout/stderr."""
    loggers = [logging.getLogger(), *(item for item in logging.Logger.manager.loggerDict.values()
                                      if isinstance(item, logging.Logger))]
    for each in loggers:
        for handler in list(each.handlers):
            if everything or not _writes_to_stdio(handler):
                each.removeHandler(handler)
                _forgotten_handlers.append(handler)


def _zygote_main(channel: socket.socket, fresh_logging: bool) -> None:
    """In the zygote: wait for the order to serve (or EOF: the rank is gone or does not need us), then serve."""
    code = 0
    try:
        name_process(PROCESS_NAME)
        # stopping is the master's decision (see mbe_mpi.preload), Ctrl-C's too: what the zygote forks
        # (workers, QC children) starts with these ignored, as forkserver children restore its handlers
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        _forget_logging(everything=fresh_logging)
        keep = channel.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        gc.freeze()
        listener_fd, alive_r = reduction.recvfds(channel, 2)
        (size,) = struct.unpack("!I", _receive(channel, 4))
        preload, data = pickle.loads(_receive(channel, size))
        channel.close()
        multiprocessing.forkserver.main(listener_fd, alive_r, preload, **data)
    except (EOFError, SystemExit, ConnectionError):
        pass  # not needed, or the rank is gone: the forkserver's own end is SystemExit too
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)  # never back into the rank's code, its atexit handlers or its finally blocks
