"""Which workers are still there: silence, the launcher's notices that a rank ended, and start-up.

Pure bookkeeping on a clock the caller reads: the master reports whom it heard from and asks which
workers to declare lost. A worker is lost when it sends nothing for ``heartbeat_timeout`` seconds
(workers send heartbeats, so silence means hung, stopped or gone), or -- for a while after the
launcher noticed that *some* rank ended (MPICH hydra's SIGUSR1, which does not say which) -- when
it has been silent for ``notice_grace`` seconds, which finds a rank that exited long before
``heartbeat_timeout``. A worker that has not joined (sent anything, READY first) is lost at
``startup_deadline`` -- a time on the caller's clock, ``startup_timeout`` after the run started --
so a rank hung while starting neither holds up the run nor its end.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class LivenessSettings:
    heartbeat_timeout: float | None = None  # None: never declare a silent worker lost
    notice_grace: float = 11.0
    startup_deadline: float | None = None  # None: a worker may take any time to join
    startup_timeout: float | None = None  # what the deadline came from, for the message


class Liveness:
    def __init__(self, workers: Iterable[int], now: float, settings: LivenessSettings, lost: Iterable[int] = (),
                 joined: Iterable[int] = ()):
        self.settings = settings
        self.last_seen = dict.fromkeys(workers, now)
        self.joined: set[int] = set(joined)
        self.lost: set[int] = set(lost)
        self._notices_seen = 0
        self._notice_at: float | None = None
        self._next_check = 0.0

    def heard_from(self, worker: int, now: float) -> None:
        self.last_seen[worker] = now
        self.joined.add(worker)

    def notices(self, count: int, now: float) -> None:
        """The launcher's count of rank-ended notices; a new one opens a window of closer checks."""
        if count != self._notices_seen:
            self._notices_seen = count
            self._notice_at = now
            logger.warning("mpiexec reports that a rank has ended; workers silent for %.0f s are declared lost",
                           self.settings.notice_grace)

    def silent(self, now: float) -> list[tuple[int, str]]:
        """Workers to declare lost now, with why (checked about once a second, not on every call)."""
        timeout, grace = self.settings.heartbeat_timeout, self.settings.notice_grace
        if now < self._next_check:
            return []
        self._next_check = now + min(1.0, (timeout or 4.0) / 4, grace / 4)
        found = self._not_joined(now)
        if not timeout:
            return found
        after_notice = self._notice_at is not None and grace < now - self._notice_at < 3 * grace
        for worker, seen in self.last_seen.items():
            if worker in self.lost or worker not in self.joined:
                continue
            if now - seen > timeout:
                found.append((worker, f"no message for {now - seen:.0f} s (hung, stopped or gone)"))
            elif after_notice and now - seen > grace:  # live workers speak every heartbeat_interval
                found.append((worker, f"silent for {now - seen:.0f} s after mpiexec reported a rank's end"))
        return found

    def _not_joined(self, now: float) -> list[tuple[int, str]]:
        deadline = self.settings.startup_deadline
        if deadline is None or now <= deadline:
            return []
        why = f"it did not start within startup_timeout ({self.settings.startup_timeout:g} s)"
        return [(worker, why) for worker in self.last_seen if worker not in self.joined and worker not in self.lost]

    def declare_lost(self, worker: int) -> None:
        self.lost.add(worker)

    @property
    def everyone_lost(self) -> bool:
        return len(self.lost) == len(self.last_seen)
