"""Scheduling, pure: the scheduler, its policy, the workers' batching rule, and a simulator on a virtual clock."""

from .policy import FIFO_POLICY, SchedulePolicy
from .scheduler import Assign, Deferred, PendingTasks, Scheduler, Steal

__all__ = ["FIFO_POLICY", "Assign", "Deferred", "PendingTasks", "SchedulePolicy", "Scheduler", "Steal"]
