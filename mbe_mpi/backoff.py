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
