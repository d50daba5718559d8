"""A start-up watchdog for ``MPI_Init``, which no code in this process can interrupt.

MPICH's ``MPI_Init`` waits for every rank of the job; when one is hung or its node is down, the
others wait inside the C call (spinning a core each) until the job's wall-clock limit. A Python
signal handler never runs while a C call holds the interpreter, and a thread cannot take the GIL
from it. What can act is another process: a tiny interpreter (``python -S``, milliseconds) that
waits on a pipe from this rank. When MPI is up the rank closes the pipe and the watchdog exits; if
the rank dies first, the pipe closes too. If neither happens within the timeout, the watchdog
kills its rank with SIGKILL, and once a rank that waits in ``MPI_Init`` is gone the launcher ends
the job. Rank 0's watchdog acts first and prints the message: one line for the job. The other
ranks' watchdogs wait ``LATER`` seconds more: had one of them acted at the same moment, the
launcher could end the job (rank 0's watchdog with it) before that line was written. They act only
when rank 0 cannot (its node is down), and then say so themselves.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

LATER = 5.0  # seconds the watchdogs of ranks other than 0 wait beyond the timeout

_WATCHDOG = """\
import os, select, signal, sys
parent, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([0], [], [], timeout)[0]:
    if message:
        sys.stderr.write(message + "\\n")
        sys.stderr.flush()
    try:
        os.kill(parent, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


def message(timeout: float) -> str:
    return (f"mbe_mpi: MPI did not start on all ranks within {timeout:g} s (a rank is hung or its node is down); "
            "rerun to resume")


@contextlib.contextmanager
def mpi_start_watchdog(timeout: float | None, rank: int) -> Iterator[None]:
    """Kill this rank, with a message, if the block (importing ``mpi4py.MPI``) takes longer than ``timeout``."""
    if not timeout:
        yield
        return
    import os

    text = message(timeout) if rank == 0 else message(timeout).replace("mbe_mpi:", f"mbe_mpi[rank {rank}]:", 1)
    wait = timeout if rank == 0 else timeout + LATER
    try:
        watchdog = subprocess.Popen([sys.executable, "-S", "-c", _WATCHDOG, str(os.getpid()), str(wait), text],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    except OSError:  # no watchdog is better than no run
        yield
        return
    try:
        yield
    finally:
        watchdog.stdin.close()
        watchdog.wait()
