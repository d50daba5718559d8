"""A worker: receive TASK -> run -> send RESULT, until SHUTDOWN. Same code for both transports."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from .execute import WorkerContext, run_task
from .protocol import ReadyMessage, ResultMessage, ShutdownMessage, TaskError, TaskMessage, decode, encode
from .transports import WorkerEndpoint

logger = logging.getLogger(__name__)


def serve(endpoint: WorkerEndpoint, make_context: Callable[[], WorkerContext]) -> None:
    """Serve tasks until SHUTDOWN.

    If the worker cannot even start (a plugin fails to import on this node, say), it still answers
    every TASK -- with a structured error -- so the master reports the cause instead of waiting.
    """
    try:
        context: WorkerContext | None = make_context()
        startup_error = ""
    except Exception as exc:
        logger.exception("worker %d could not start", endpoint.rank)
        context = None
        startup_error = f"worker could not start: {type(exc).__name__}: {exc}"
        startup_traceback = traceback.format_exc()

    endpoint.send(encode(ReadyMessage(endpoint.rank)))
    while True:
        message = decode(endpoint.recv())
        if isinstance(message, ShutdownMessage):
            return
        if not isinstance(message, TaskMessage):
            raise RuntimeError(f"worker {endpoint.rank} received an unexpected {type(message).__name__}")
        for task in message.tasks:
            if context is not None:
                result = run_task(context, task)
            else:
                error = TaskError("startup", startup_error, startup_traceback, "", endpoint.rank, task.attempt)
                result = ResultMessage(task.task_id, endpoint.rank, 0.0, error=error)
            if not result.ok:
                logger.info("task %s failed on rank %d: %s", result.error.label, endpoint.rank, result.error.message)
            endpoint.send(encode(result))
