"""Python API: ``mbe_mpi.compute(manybody_input, n_workers=..., **execution_options)``.

For scripts and notebooks that already build QCManyBody inputs. In a plain Python process it runs
local worker processes; under ``mpiexec`` it acts SPMD: call it on every rank, rank 0 gets the
:class:`ManyBodyResult`, the other ranks serve as workers and get ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput, ManyBodyResult

from .run import input_preparer, run


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
    task fails. It is a session of one expansion: workers start, compute it, and end.
    """
    outcome = run(input_preparer(manybody_input, {**execution_options, "n_workers": n_workers}, screening=screening))
    return None if outcome is None else outcome.result


class ManyBodyComputer:
    """QCManyBody's ``ManyBodyComputer.from_manybodyinput``, run in parallel: a drop-in for scripts.

    ``from qcmanybody.v2 import ManyBodyComputer`` becomes ``from mbe_mpi import ManyBodyComputer``;
    the returned ``ManyBodyResult`` is the same, bit for bit.
    """

    @classmethod
    def from_manybodyinput(cls, manybody_input: ManyBodyInput | Mapping[str, Any], n_workers: int | None = None,
                           **execution_options: Any) -> ManyBodyResult | None:
        return compute(manybody_input, n_workers, **execution_options)
