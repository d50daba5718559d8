"""Small pieces every harness of ours shares."""

from __future__ import annotations

from typing import Any

from ..errors import InputError


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
