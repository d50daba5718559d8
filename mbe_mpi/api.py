"""Python API: ``mbe_mpi.compute(manybody_input, n_workers=..., **execution_options)``.

For scripts and notebooks that already build QCManyBody inputs. In a plain Python process it runs
local worker processes; under ``mpiexec`` it acts SPMD: call it on every rank, rank 0 gets the
:class:`ManyBodyResult`, the other ranks serve as workers and get ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
from qcmanybody.models.v2 import ManyBodyInput, ManyBodyResult

from .errors import InputError
from .harnesses import import_plugins
from .options import ExecutionOptions
from .runner import run


def coerce_manybody_input(manybody_input: ManyBodyInput | Mapping[str, Any]) -> ManyBodyInput:
    """Accept the model or a dict; a malformed dict is an InputError naming the first problem."""
    if isinstance(manybody_input, ManyBodyInput):
        return manybody_input
    if not isinstance(manybody_input, Mapping):
        raise InputError(f"expected a ManyBodyInput or a dict, got {type(manybody_input).__name__}")
    try:
        return ManyBodyInput(**manybody_input)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(f"invalid ManyBodyInput at {where}: {first['msg']}") from None


def compute(
    manybody_input: ManyBodyInput | Mapping[str, Any],
    n_workers: int | None = None,
    **execution_options: Any,
) -> ManyBodyResult | None:
    """Run a many-body expansion in parallel; the result equals QCManyBody's sequential computer.

    ``execution_options`` are those of an input file's ``execution`` section (``threads_per_task``,
    ``memory_per_task`` in GiB, ``plugins``). Raises :class:`~mbe_mpi.errors.InputError` for a bad
    input (on every rank under MPI) and :class:`~mbe_mpi.errors.TaskFailedError` when a QC task fails.
    """

    def prepare() -> tuple[ManyBodyInput, ExecutionOptions]:
        from .inputs import validate_manybody_input

        options = ExecutionOptions.from_mapping(execution_options, where="compute()")
        if n_workers is not None:
            options = options.merged(n_workers=n_workers)
        import_plugins(options.plugins)
        mbi = coerce_manybody_input(manybody_input)
        validate_manybody_input(mbi)
        return mbi, options

    return run(prepare)
