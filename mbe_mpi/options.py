"""Execution options: *how* to run, as opposed to the ManyBodyInput, which says *what* to compute.

They come from the `execution` section of a friendly input file, keyword arguments of
:func:`mbe_mpi.compute`, and command-line flags (in increasing priority). Validation happens
here, once, so that nonsense (``n_workers: -3``) is refused before any QC work starts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from .errors import InputError


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroups affinity, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class ExecutionOptions:
    """How to run an MBE: workers, resources per QC task, plugins.

    ``memory_per_task`` is in GiB (QCEngine's TaskConfig unit). ``None`` means an even share of
    the node's memory per worker, never QCEngine's default of 90% of the node for *each* task.

    ``checkpoint``: a file path, ``False`` for none, or ``None``/``True`` for the default (beside
    the output on the command line; none in the Python API). ``cache_dir``: a folder holding a
    result cache shared between runs. ``fresh``: ignore (delete) an existing checkpoint.
    ``stop_grace``: seconds to wait for running tasks after SIGTERM/SIGUSR1 before ending them.
    ``scratch_dir``: where each task gets its own scratch folder (node-local disk on clusters;
    default: the system's temporary folder); ``keep_scratch`` keeps those folders for inspection.
    ``prefetch``: TASK messages a worker may hold (one running, the rest queued; default 2).
    ``level_barrier``: finish every n-body level before the next starts (default); false lets the
    next level fill workers that would idle at the barrier. ``batch_seconds``: tasks measured to take
    less than this travel several per message (0 disables batching). ``order``: ``cost`` (largest
    expected cost first, with prefetch and stealing) or ``fifo`` (plan order, one task per worker,
    no stealing: the naive baseline, for comparisons). ``isolate_tasks``: run the QC program in a
    supervised child process of each worker (default; ~0.3 ms per task), so a crash, a hang past
    ``task_timeout`` (seconds) or a memory blow-up past ``memory_per_task`` fails the task, not the
    worker; false runs it in a thread of the worker.
    ``max_retries``: further attempts at a failed task, after ``retry_backoff`` seconds (doubling)
    and on another worker where possible. ``on_failure``: ``finish`` (default: complete every other
    task, keep all results, then exit 1 listing the failures) or ``stop`` (stop dispatching at once).
    ``heartbeat_interval``: how often an otherwise silent worker says it is alive;
    ``heartbeat_timeout``: silence after which the master declares a worker lost (hung, stopped or
    gone) and gives its tasks to the others.
    """

    n_workers: int | None = None
    threads_per_task: int = 1
    memory_per_task: float | None = None
    plugins: tuple[str, ...] = ()
    checkpoint: str | bool | None = None
    cache_dir: str | None = None
    fresh: bool = False
    stop_grace: float = 30.0
    scratch_dir: str | None = None
    keep_scratch: bool = False
    prefetch: int = 2
    level_barrier: bool = True
    batch_seconds: float = 0.02
    order: str = "cost"
    isolate_tasks: bool = True
    task_timeout: float | None = None
    max_retries: int = 2
    retry_backoff: float = 1.0
    on_failure: str = "finish"
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 60.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, where: str = "execution") -> ExecutionOptions:
        """Validate a plain mapping (from a file or keyword arguments) into options."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(
                f"unknown option {unknown[0]!r} in {where}; known options are: {', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = {}
        if values.get("n_workers") is not None:
            kwargs["n_workers"] = _positive_int(values["n_workers"], f"{where}.n_workers")
        if values.get("threads_per_task") is not None:
            kwargs["threads_per_task"] = _positive_int(values["threads_per_task"], f"{where}.threads_per_task")
        if values.get("memory_per_task") is not None:
            kwargs["memory_per_task"] = _positive_float(values["memory_per_task"], f"{where}.memory_per_task")
        if values.get("checkpoint") is not None:
            checkpoint = values["checkpoint"]
            if not isinstance(checkpoint, (str, bool)) or checkpoint == "":
                raise InputError(f"{where}.checkpoint must be a file path, true or false, got {checkpoint!r}")
            kwargs["checkpoint"] = checkpoint
        if values.get("cache_dir") is not None:
            if not isinstance(values["cache_dir"], str) or not values["cache_dir"]:
                raise InputError(f"{where}.cache_dir must be a folder path, got {values['cache_dir']!r}")
            kwargs["cache_dir"] = values["cache_dir"]
        if values.get("order") is not None:
            if values["order"] not in ("cost", "fifo"):
                raise InputError(f"{where}.order must be 'cost' or 'fifo', got {values['order']!r}")
            kwargs["order"] = values["order"]
        if values.get("prefetch") is not None:
            kwargs["prefetch"] = _positive_int(values["prefetch"], f"{where}.prefetch")
        if values.get("batch_seconds") is not None:
            seconds = values["batch_seconds"]
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
                raise InputError(f"{where}.batch_seconds must be a number of seconds (0 disables), got {seconds!r}")
            kwargs["batch_seconds"] = float(seconds)
        if values.get("max_retries") is not None:
            retries = values["max_retries"]
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise InputError(f"{where}.max_retries must be a whole number (0 or more), got {retries!r}")
            kwargs["max_retries"] = retries
        if values.get("retry_backoff") is not None:
            backoff = values["retry_backoff"]
            if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
                raise InputError(f"{where}.retry_backoff must be a number of seconds (0 or more), got {backoff!r}")
            kwargs["retry_backoff"] = float(backoff)
        if values.get("on_failure") is not None:
            if values["on_failure"] not in ("finish", "stop"):
                raise InputError(f"{where}.on_failure must be 'finish' or 'stop', got {values['on_failure']!r}")
            kwargs["on_failure"] = values["on_failure"]
        for name in ("heartbeat_interval", "heartbeat_timeout"):
            if values.get(name) is not None:
                seconds = values[name]
                if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
                    raise InputError(f"{where}.{name} must be a positive number of seconds, got {seconds!r}")
                kwargs[name] = float(seconds)
        if values.get("task_timeout") is not None:
            timeout = values["task_timeout"]
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                raise InputError(f"{where}.task_timeout must be a positive number of seconds, got {timeout!r}")
            kwargs["task_timeout"] = float(timeout)
        for flag in ("fresh", "keep_scratch", "level_barrier", "isolate_tasks"):
            if values.get(flag) is not None:
                if not isinstance(values[flag], bool):
                    raise InputError(f"{where}.{flag} must be true or false, got {values[flag]!r}")
                kwargs[flag] = values[flag]
        if values.get("scratch_dir") is not None:
            if not isinstance(values["scratch_dir"], str) or not values["scratch_dir"]:
                raise InputError(f"{where}.scratch_dir must be a folder path, got {values['scratch_dir']!r}")
            kwargs["scratch_dir"] = values["scratch_dir"]
        if values.get("stop_grace") is not None:
            grace = values["stop_grace"]
            if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
                raise InputError(f"{where}.stop_grace must be a number of seconds (0 or more), got {grace!r}")
            kwargs["stop_grace"] = float(grace)
        if values.get("plugins") is not None:
            plugins = values["plugins"]
            if isinstance(plugins, str):
                plugins = [plugins]
            if not isinstance(plugins, (list, tuple)) or not all(isinstance(p, str) and p for p in plugins):
                raise InputError(f"{where}.plugins must be a list of module names, got {plugins!r}")
            kwargs["plugins"] = tuple(plugins)
        return cls(**kwargs)

    def merged(self, **overrides: Any) -> ExecutionOptions:
        """Options with the non-None ``overrides`` applied (command-line flags win over the file)."""
        current = dataclasses.asdict(self)
        plugins = overrides.pop("plugins", None) or ()
        current.update({k: v for k, v in overrides.items() if v is not None})
        # plugins add up (file + flags) rather than replace each other
        current["plugins"] = tuple(dict.fromkeys([*self.plugins, *plugins]))
        return ExecutionOptions.from_mapping(current, where="options")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def _positive_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{name} must be a positive number (GiB), got {value!r}")
    return float(value)
