"""Python API: ``mbe_mpi.compute(manybody_input, n_workers=..., **execution_options)``.

For scripts and notebooks that already build QCManyBody inputs. In a plain Python process it runs
local worker processes; under ``mpiexec`` it acts SPMD: call it on every rank, rank 0 gets the
:class:`ManyBodyResult`, the other ranks serve as workers and get ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput, ManyBodyResult

from .errors import InputError
from .harnesses import import_plugins
from .options import ExecutionOptions
from .run import run


def compute(
    manybody_input: ManyBodyInput | Mapping[str, Any],
    n_workers: int | None = None,
    *,
    screening: Mapping[str, Any] | None = None,
    **execution_options: Any,
) -> ManyBodyResult | None:
    """Run a many-body expansion in parallel; the result equals QCManyBody's sequential computer.

    ``execution_options`` are those of an input file's ``execution`` section (``threads_per_task``,
    ``memory_per_task`` in GiB, ``plugins``). ``screening`` is an input file's ``screening``
    section (distance cutoffs, energy thresholds, a prescreen; docs/screening.md): the result is
    then the truncated expansion those rules define. Raises :class:`~mbe_mpi.errors.InputError` for
    a bad input (on every rank under MPI) and :class:`~mbe_mpi.errors.TaskFailedError` when a QC
    task fails.
    """

    def prepare() -> tuple[ManyBodyInput, ExecutionOptions]:
        from .inputs import attach_screening, parse_input, validate_manybody_input

        overrides = {**execution_options, "n_workers": n_workers}
        options = ExecutionOptions().merged(**overrides)  # refuses unknown or nonsense options first
        import_plugins(options.plugins)
        if isinstance(manybody_input, ManyBodyInput):
            mbi = attach_screening(manybody_input, screening, "compute(): ")
            validate_manybody_input(mbi, "compute()")
            return mbi, options
        if not isinstance(manybody_input, Mapping):
            raise InputError(f"compute() takes a ManyBodyInput or a dict, not a {type(manybody_input).__name__}")
        # a dict may be a QCSchema ManyBodyInput or the friendly format, exactly as in an input file
        data = dict(manybody_input)
        if screening is not None:
            if "screening" in data:
                raise InputError("compute(): screening is given twice (in the input and as an argument); keep one")
            data["screening"] = screening
        mbi, file_options = parse_input(data, source="compute()")
        return mbi, file_options.merged(**overrides)

    outcome = run(prepare)
    return None if outcome is None else outcome.result
