"""Exceptions that carry a user-facing message.

User mistakes (bad input files, impossible options) are reported as one readable sentence and
exit code 2 -- never a traceback. Everything else is a bug or a QC failure and keeps its traceback
in the log.
"""

from __future__ import annotations


class InputError(Exception):
    """The input (file, options or model) is wrong; the message says what and how to fix it."""


class TaskFailedError(RuntimeError):
    """A QC task failed for good; the message names the label, model chemistry and error text."""

    def __init__(self, message: str, failures: list | None = None):
        super().__init__(message)
        self.failures = failures or []


class RunStopped(RuntimeError):
    """The run was asked to stop (SIGTERM/SIGUSR1, e.g. a batch time limit) before it finished.

    ``abandoned`` counts tasks still running on workers that could not be waited for; their
    workers must be ended by the caller.
    """

    def __init__(self, message: str, abandoned: int = 0):
        super().__init__(message)
        self.abandoned = abandoned


class WriteFailed(RunStopped):
    """A file the run must write could not be written (disk full, quota, read-only, gone): it stopped.

    What was computed is kept in the checkpoint where that could be written; the message says where
    and how to resume (the same command, once the disk has room).
    """


EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_INPUT_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_STOPPED = 4  # stopped early on request; rerun the same command to resume
EXIT_WRITE_FAILED = 5  # the checkpoint or the output could not be written; free space, rerun to resume
EXIT_INTERRUPTED = 130  # Ctrl-C; rerun the same command to resume


def describe(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and message of an expected way for a run to end; None for a bug (traceback, exit 3)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "mbe_mpi: interrupted; rerun the same command to resume"
    if isinstance(exc, InputError):
        return EXIT_INPUT_ERROR, f"mbe_mpi: error: {exc}"
    if isinstance(exc, TaskFailedError):
        return EXIT_TASK_FAILED, f"mbe_mpi: error: {exc}"
    if isinstance(exc, WriteFailed):
        return EXIT_WRITE_FAILED, f"mbe_mpi: error: {exc}"
    if isinstance(exc, RunStopped):
        return EXIT_STOPPED, f"mbe_mpi: {exc}"
    return None
