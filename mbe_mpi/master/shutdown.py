"""The end of the conversation: SHUTDOWN to every worker, then everything each sent up to its GOODBYE."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

from ..backoff import Backoff
from ..protocol import GoodbyeMessage, ShutdownMessage, decode, encode
from ..transports import MasterTransport

logger = logging.getLogger(__name__)

#: seconds a started worker may take to answer SHUTDOWN (it reads messages every few ms, even mid-task)
GOODBYE_TIMEOUT = 10.0


class Clock(Protocol):
    """What the master reads time from (the ``time`` module, or a virtual clock in tests)."""

    def monotonic(self) -> float: ...

    def perf_counter(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


def shut_down(transport: MasterTransport, workers: Iterable[int], *, started: set[int],
              hurry: bool = False, clock: Clock = time) -> set[int]:
    """Tell ``workers`` to end, take in their last messages, and close the transport; who did not answer."""
    workers = list(workers)
    for worker in workers:
        transport.send(worker, encode(ShutdownMessage()))
    silent = await_goodbyes(transport, workers, started=started, hurry=hurry, clock=clock)
    transport.close(abandon=hurry)
    return silent


def await_goodbyes(transport: MasterTransport, workers: Iterable[int], *, started: set[int] = frozenset(),
                   hurry: bool = False, clock: Clock = time) -> set[int]:
    """After SHUTDOWN, take in messages until each worker's GOODBYE (its last) has come; who never answered.

    Whatever a worker sent before it read SHUTDOWN (a heartbeat, a STOLEN answer, the READY of a
    worker still starting) is received here and dropped, so nothing is left in flight when the
    master ends: MPICH's MPI_Finalize fails on a message never received, and hydra then kills every
    rank (exit code 9) after the result was written. A started worker answers within milliseconds,
    and one still starting gets as long (:data:`GOODBYE_TIMEOUT`): the run ends within seconds of its
    work, and a worker that did not answer is treated as lost (under MPI the job is then ended
    with ``MPI_Abort(0)``, as ``MPI_Finalize`` would wait for it). When stopping with tasks abandoned
    (``hurry``), one second. A worker whose process ends is not waited for.
    """
    now = clock.monotonic()
    deadlines = {worker: now + (1.0 if hurry else GOODBYE_TIMEOUT) for worker in workers}
    silent: set[int] = set()
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
            silent.add(worker)
            if not hurry:
                logger.warning("worker %d did not answer SHUTDOWN in time (%s); it is treated as lost", worker,
                               "hung or stopped" if worker in started else "it never finished starting")
    return silent
