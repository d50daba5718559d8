"""How the scheduler behaves, derived from the execution options (whose defaults it shares)."""

from __future__ import annotations

import dataclasses

from ..options import ExecutionOptions, option_defaults

_DEFAULTS = option_defaults()


@dataclasses.dataclass(frozen=True)
class SchedulePolicy:
    """Tunable scheduling: prefetch depth, level barrier, batching of cheap tasks, retries.

    The fields named like execution options take their defaults from :class:`ExecutionOptions`
    (the one home of defaults). The rest are the scheduler's own constants: ``batch_target``
    (seconds of work per batched TASK message), ``max_batch`` (tasks per message), ``stealing``,
    and ``max_hold``: while every worker has queued work, the master may leave results unread up to
    this long (and half the expected length of the queued work) to take them in bursts -- one
    wake-up for several results.
    """

    prefetch: int = _DEFAULTS["prefetch"]
    level_barrier: bool = _DEFAULTS["level_barrier"]
    batch_seconds: float = _DEFAULTS["batch_seconds"]
    order: str = _DEFAULTS["order"]
    max_retries: int = _DEFAULTS["max_retries"]
    retry_backoff: float = _DEFAULTS["retry_backoff"]
    stop_on_failure: bool = _DEFAULTS["on_failure"] == "stop"
    batch_target: float = 0.02
    max_batch: int = 64
    stealing: bool = True
    max_hold: float = 0.05

    @classmethod
    def from_options(cls, options: ExecutionOptions) -> SchedulePolicy:
        """The policy an ExecutionOptions asks for (``order: fifo`` is the naive baseline, :data:`FIFO_POLICY`)."""
        base = FIFO_POLICY if options.order == "fifo" else cls(prefetch=options.prefetch,
                                                                 batch_seconds=options.batch_seconds)
        return dataclasses.replace(base, level_barrier=options.level_barrier, max_retries=options.max_retries,
                                   retry_backoff=options.retry_backoff,
                                   stop_on_failure=options.on_failure == "stop")


#: the naive baseline the benchmarks compare against: plan order, one task at a time, no stealing
FIFO_POLICY = SchedulePolicy(prefetch=1, batch_seconds=0.0, order="fifo", stealing=False)
