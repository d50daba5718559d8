"""The end of the conversation: SHUTDOWN to every worker, then everything each sent up to its GOODBYE."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

from ..backoff import Backoff
from ..protocol import GoodbyeMessage, ShutdownMessage, decode, encode
from ..transports import MasterTransport
from .liveness import STARTUP_ALLOWANCE

logger = logging.getLogger(__name__)

#: seconds a started worker may take to answer SHUTDOWN (it reads messages every few ms, even mid-task)
GOODBYE_TIMEOUT = 10.0


class Clock(Protocol):
    """What the master reads time from (the ``time`` module, or a virtual clock in tests)."""

    def monotonic(self) -> float: ...

    def perf_counter(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


def shut_down(transport: MasterTransport, workers: Iterable[int], *, started: set[int],
              hurry: bool = False, clock: Clock = time) -> None:
    """Tell ``workers`` to end, take in their last messages, and close the transport."""
    workers = list(workers)
    for worker in workers:
        transport.send(worker, encode(ShutdownMessage()))
    await_goodbyes(transport, workers, started=started, hurry=hurry, clock=clock)
    transport.close(abandon=hurry)


def await_goodbyes(transport: MasterTransport, workers: Iterable[int], *, started: set[int] = frozenset(),
                   hurry: bool = False, clock: Clock = time) -> None:
    """After SHUTDOWN, take in messages until each worker's GOODBYE (its last) has come.

    Whatever a worker sent before it read SHUTDOWN (a heartbeat, a STOLEN answer, the READY of a
    worker still starting) is received here and dropped, so nothing is left in flight when the
    master ends: MPICH's MPI_Finalize fails on a message never received, and hydra then kills every
    rank (exit code 9) after the result was written. A started worker answers within milliseconds;
    one still starting gets ``STARTUP_ALLOWANCE`` (MPI_Finalize would wait for it anyway); when
    stopping with tasks abandoned (``hurry``), one second. A worker whose process ends is not waited for.
    """
    now = clock.monotonic()
    deadlines = {worker: now + (1.0 if hurry else GOODBYE_TIMEOUT if worker in started else STARTUP_ALLOWANCE)
                 for worker in workers}
    backoff = Backoff(minimum=transport.min_idle_wait, maximum=transport.max_idle_wait)
    while deadlines:
        for worker, data in transport.wait(backoff.next_delay()):
            message = None if data is None else decode(data)
            if message is None or isinstance(message, GoodbyeMessage):
                deadlines.pop(worker, None)
            else:
                logger.debug("after SHUTDOWN: %s from worker %d dropped", type(message).__name__, worker)
        now = clock.monotonic()
        for worker in [worker for worker, deadline in deadlines.items() if now > deadline]:
            del deadlines[worker]
            if not hurry:
                logger.warning("worker %d did not answer SHUTDOWN in time; the job may not end cleanly", worker)
