"""Exponential back-off for polling loops (the idea of mpi4py.futures' ``Backoff``).

Reset on activity, grow while idle, capped: a polling loop answers in microseconds when busy and
costs almost no CPU when nothing happens.
"""

from __future__ import annotations

import time


class Backoff:
    """Exponential sleep for polling loops: reset on activity, grow while idle, capped."""

    def __init__(self, minimum: float = 1e-6, maximum: float = 1e-3):
        self.minimum = minimum
        self.maximum = maximum
        self.reset()

    def reset(self) -> None:
        # first look again at once -- unless waiting blocks until something happens (minimum ==
        # maximum: a kernel wait on pipes), where an immediate look would be a wasted system call
        self.delay = 0.0 if self.minimum < self.maximum else self.maximum

    def next_delay(self) -> float:
        delay = self.delay
        self.delay = min(self.maximum, max(self.minimum, delay * 2))
        return delay

    def sleep(self) -> None:
        # The first call after a reset does not sleep at all: even time.sleep(0) costs ~70 us on a
        # VM, and MPICH's Iprobe often finds an already-queued message only on the second probe.
        delay = self.next_delay()
        if delay > 0:
            time.sleep(delay)


class ArrivalRate:
    """Messages per second over the last complete window: tells whether waiting collects several.

    Sleeping ``hold`` seconds before reading is itself a wake-up; it saves wake-ups only when more
    than one message is expected in that time, so the master holds only when
    ``rate * hold >= worthwhile``. Cheap to update: a counter and one clock reading per call.
    """

    def __init__(self, window: float = 1.0, worthwhile: float = 2.0, now: float | None = None):
        self.window = window
        self.worthwhile = worthwhile
        self.rate = 0.0
        self._count = 0
        self._start = time.monotonic() if now is None else now

    def add(self, count: int, now: float) -> None:
        self._count += count
        if now - self._start >= self.window:
            self.rate = self._count / (now - self._start)
            self._count = 0
            self._start = now

    def worth_holding(self, hold: float) -> bool:
        return hold > 0 and self.rate * hold >= self.worthwhile
