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


EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_INPUT_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_STOPPED = 4  # stopped early on request; rerun the same command to resume
