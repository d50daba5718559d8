"""QCEngine procedure ``mbe_mpi``: ``qcengine.compute(manybody_input, "mbe_mpi", task_config={"ncores": K})``.

The same ManyBodyInput and ManyBodyResult as QCEngine's own ``qcmanybody`` procedure, with the
fragment QC tasks run in parallel on K local worker processes (one thread each), so QCEngine users
and QCFractal-style managers get parallel MBE without new code. ``import mbe_mpi`` registers it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from qcengine.procedures.base import list_all_procedures, register_procedure
from qcengine.procedures.qcmanybody import QCManyBodyProcedure

if TYPE_CHECKING:
    from qcengine.config import TaskConfig


class MbeMpiProcedure(QCManyBodyProcedure):
    """QCEngine's ``qcmanybody`` procedure (its input handling, v1 and v2), computed by mbe_mpi."""

    _defaults: ClassVar[dict[str, Any]] = {"name": "mbe_mpi", "procedure": "manybody"}

    def compute(self, input_model: Any, config: TaskConfig) -> Any:
        from .api import compute

        # QCEngine's ncores is the whole task's: one worker per core, one thread per QC task (bit for
        # bit with the sequential procedure); its memory is the whole task's too, shared by the workers.
        options: dict[str, Any] = {"checkpoint": False, "memory_per_task": config.memory / max(1, config.ncores)}
        if config.scratch_directory:
            options["scratch_dir"] = config.scratch_directory
        return compute(input_model, n_workers=config.ncores, **options)


def register() -> None:
    """Make ``mbe_mpi`` a QCEngine procedure (unless QCEngine already has one of that name)."""
    if "mbe_mpi" not in list_all_procedures():
        register_procedure(MbeMpiProcedure())
