"""When a worker sends the results it holds: the rule the worker follows and the simulator models.

Results of tasks shorter than :data:`TINY_TASK_SECONDS` are held back briefly and sent together
while more work is queued: one message per ~10 ms instead of one per task keeps the master's cost
per task small for cheap tasks (an xTB task takes 1-5 ms).
"""

from __future__ import annotations

TINY_TASK_SECONDS = 0.02
FLUSH_AFTER_SECONDS = 0.01
FLUSH_AFTER_RESULTS = 32


def should_flush(held: int, last_seconds: float, age: float, queue_empty: bool) -> bool:
    """Send the ``held`` results now (the latest took ``last_seconds``; the oldest waited ``age``)?

    An empty queue always flushes: the master refills the queue only when it hears of results, so
    holding them then would let the worker run dry.
    """
    return (queue_empty or last_seconds >= TINY_TASK_SECONDS or held >= FLUSH_AFTER_RESULTS
            or age >= FLUSH_AFTER_SECONDS)
