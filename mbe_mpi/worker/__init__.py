"""Worker processes: the serve loop, QC executors (a thread, or a supervised child) and their settings."""

from .init import WorkerInit
from .main import worker_main

__all__ = ["WorkerInit", "worker_main"]
