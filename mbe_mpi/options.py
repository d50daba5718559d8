"""Execution options: *how* to run, as opposed to the ManyBodyInput, which says *what* to compute.

They come from the ``execution`` section of an input file, keyword arguments of
:func:`mbe_mpi.compute`, and command-line flags (in increasing priority). :class:`ExecutionOptions`
is the one home of every default: each field has a type, a bound and a one-line description (the
option table of ``docs/hpc.md`` is checked against them), and nonsense (``n_workers: -3``) is
refused here, once, with one line naming the option and the value, before any QC work starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Literal

import psutil
import pydantic
from pydantic import ConfigDict, Field, field_validator

from .errors import InputError


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroups affinity, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_memory_per_task(workers_on_node: int) -> float:
    """An even share (GiB) of this node's memory per worker, keeping QCEngine's 10% safety margin.

    QCEngine's default gives *each* task 90% of the node, so several ranks on one node would
    oversubscribe it (QCEngine issue 415).
    """
    # psutil directly, as QCEngine's get_global("memory") does: that call would also run cpuinfo (~1 s)
    node_memory = psutil.virtual_memory().available / 1024**3
    return round(node_memory * 0.9 / max(1, workers_on_node), 3)


def _option(default: Any, description: str, expect: str, **bounds: Any) -> Any:
    """A field with its description and the phrase an error message uses (``... must be <expect>``)."""
    return Field(default, description=description, json_schema_extra={"expect": expect}, **bounds)


_SECONDS = "a positive number of seconds"
_SECONDS_OR_ZERO = "a number of seconds (0 or more)"
_FLAG = "true or false"


class ExecutionOptions(pydantic.BaseModel):
    """How to run an MBE: workers, resources per QC task, checkpoint and cache, scheduling, failures."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    n_workers: int | None = _option(
        None, "local worker processes (ignored under mpiexec); default: the usable cores",
        "a whole number of at least 1", ge=1)
    threads_per_task: int = _option(1, "threads (cores) QCEngine gives each QC task", "a whole number of at least 1",
                                    ge=1)
    memory_per_task: float | None = _option(
        None, "GiB for each QC task (enforced when given); default: an even share of the node per worker",
        "a positive number (GiB)", gt=0)
    plugins: tuple[str, ...] = _option(
        (), "modules imported on every rank first (a site's QCEngine harness)", "a list of module names")
    checkpoint: str | bool | None = _option(
        None, "checkpoint file; false: none; default: beside the output (none in the Python API)",
        "a file path, true or false")
    cache_dir: str | None = _option(None, "folder of a result cache shared between runs", "a folder path",
                                    min_length=1)
    fresh: bool = _option(False, "discard an existing checkpoint and start over", _FLAG)
    stop_grace: float = _option(30.0, "seconds running tasks get after SIGTERM/SIGUSR1", _SECONDS_OR_ZERO, ge=0)
    scratch_dir: str | None = _option(None, "each task runs in its own folder here (node-local disk)",
                                      "a folder path", min_length=1)
    keep_scratch: bool = _option(False, "keep every task's scratch folder", _FLAG)
    prefetch: int = _option(2, "TASK messages a worker holds (one running, the rest queued)",
                            "a whole number of at least 1", ge=1)
    level_barrier: bool = _option(True, "finish each n-body level before the next starts", _FLAG)
    batch_seconds: float = _option(0.02, "tasks measured to take less than this travel in batches (0: never)",
                                   "a number of seconds (0 disables)", ge=0)
    order: Literal["cost", "fifo"] = _option(
        "cost", "cost: largest expected cost first; fifo: plan order, one task at a time (the naive baseline)",
        "'cost' or 'fifo'")
    isolate_tasks: bool = _option(True, "run QC in a supervised child process of each worker", _FLAG)
    task_timeout: float | None = _option(None, "kill a QC task that runs longer (seconds)", _SECONDS, gt=0)
    max_retries: int = _option(2, "further attempts at a failed task, on another worker where possible",
                               "a whole number (0 or more)", ge=0)
    retry_backoff: float = _option(1.0, "seconds before the first retry, doubling", _SECONDS_OR_ZERO, ge=0)
    on_failure: Literal["finish", "stop"] = _option(
        "finish", "finish: complete every other task first; stop: dispatch nothing more", "'finish' or 'stop'")
    heartbeat_interval: float = _option(5.0, "seconds after which an otherwise silent worker says it is alive",
                                        _SECONDS, gt=0)
    heartbeat_timeout: float = _option(60.0, "silence after which a worker is declared lost (seconds)", _SECONDS,
                                       gt=0)
    startup_timeout: float = _option(
        120.0, "seconds from the start of the run by which MPI must be up and every worker ready; a worker not "
        "ready by then is declared lost", _SECONDS, gt=0)

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugin_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple) or not all(isinstance(p, str) and p for p in value):
            raise ValueError("not a list of module names")
        return value

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_path(cls, value: Any) -> Any:
        if value == "":
            raise ValueError("empty path")
        return value

    @field_validator("batch_seconds", "stop_grace", "retry_backoff", "memory_per_task", "task_timeout",
                     "heartbeat_interval", "heartbeat_timeout", "startup_timeout")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if value is not None and not math.isfinite(value):
            raise ValueError("not finite")
        return value

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, where: str = "execution") -> ExecutionOptions:
        """Validate a plain mapping (from a file or keyword arguments) into options; ``None`` values mean default."""
        values = {key: value for key, value in dict(values or {}).items() if value is not None}
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise InputError(f"unknown option {unknown[0]!r} in {where}; known options are: "
                             f"{', '.join(sorted(cls.model_fields))}")
        try:
            return cls(**values)
        except pydantic.ValidationError as exc:
            name = str(exc.errors()[0]["loc"][0])
            expect = cls.model_fields[name].json_schema_extra["expect"]
            raise InputError(f"{where}.{name} must be {expect}, got {values[name]!r}") from None

    def merged(self, **overrides: Any) -> ExecutionOptions:
        """Options with the non-None ``overrides`` applied (command-line flags win over the file).

        Plugins add up (file + flags) rather than replace each other.
        """
        plugins = overrides.pop("plugins", None) or ()
        current = {**self.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        current["plugins"] = tuple(dict.fromkeys([*self.plugins, *plugins]))
        return ExecutionOptions.from_mapping(current, where="options")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def option_defaults() -> dict[str, Any]:
    """Every option's default, by name (the documentation and the scheduling policy read them here)."""
    return {name: field.default for name, field in ExecutionOptions.model_fields.items()}
