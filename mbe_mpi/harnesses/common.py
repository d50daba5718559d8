"""Small pieces every harness of ours shares."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from ..errors import InputError

#: ``OMP_NUM_THREADS`` as the process was started (read when mbe_mpi's harnesses are first imported,
#: which ``import mbe_mpi`` does). QCEngine overwrites the variable with ``ncores`` around every task.
LAUNCH_OMP_THREADS: str | None = os.environ.get("OMP_NUM_THREADS")


def import_with_launch_threads(*modules: str) -> None:
    """Import QC libraries with the ``OMP_NUM_THREADS`` the process was started with.

    OpenMP runtimes and OpenBLAS size their thread pools once, when their library is loaded, and
    QCEngine sets ``OMP_NUM_THREADS`` to ``ncores`` (all cores by default) around each task. A library
    first imported inside a task -- as QCManyBody's sequential loop imports PySCF, and with it SciPy's
    OpenBLAS -- would get a pool of that size for the rest of the process: a second thread that spins
    beside a run started with ``OMP_NUM_THREADS=1``, and (in SciPy's eigensolvers) last bits that depend
    on it. mbe_mpi's workers load these libraries with ``threads_per_task`` set, so loading them the
    same way here is also what makes their numbers equal a sequential run's bit for bit.
    """
    if all(name in sys.modules for name in modules):
        return
    during_task = os.environ.get("OMP_NUM_THREADS")
    _set_omp_threads(LAUNCH_OMP_THREADS)
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        _set_omp_threads(during_task)


def _set_omp_threads(value: str | None) -> None:
    if value is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = value


def driver_name(driver: Any) -> str:
    """Plain lower-case driver name from a ``DriverEnum`` or a string."""
    return str(getattr(driver, "value", driver)).lower()


def normalise_keyword(name: Any) -> str:
    """Keywords are case-insensitive and accept "-" for "_" (``max-iter`` is ``max_iter``)."""
    return str(name).strip().lower().replace("-", "_")


def refuse(problem: str | None) -> None:
    """A harness's ``check_model``: the one-sentence problem its checks found, as mbe_mpi's InputError."""
    if problem:
        raise InputError(problem)
