"""The master: the loop that drives the scheduler over a transport, liveness, observers, shutdown."""

from .liveness import LivenessSettings
from .loop import Master, failure_text
from .observer import Completion, Observers, RunObserver
from .shutdown import GOODBYE_TIMEOUT, await_goodbyes, shut_down

__all__ = ["GOODBYE_TIMEOUT", "Completion", "LivenessSettings", "Master", "Observers", "RunObserver",
           "await_goodbyes", "failure_text", "shut_down"]
