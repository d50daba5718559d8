"""Loaded data -> a validated ``(ManyBodyInput, ExecutionOptions)``, whichever of the two formats it is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qcmanybody.models.v2 import ManyBodyInput

from ..errors import InputError
from ..harnesses import import_plugins
from ..options import ExecutionOptions
from ..screening import with_screening
from .friendly import friendly_input
from .load import read_document
from .qcschema import is_qcschema, qcschema_input
from .screening import screening_section
from .text import one_line, prefix, type_name
from .validate import validate_manybody_input


def load_input(path: str | os.PathLike) -> tuple[ManyBodyInput, ExecutionOptions]:
    """Read a QCSchema or friendly input file (``.json``: JSON, otherwise YAML) and validate it."""
    return parse_input(read_document(path), Path(path).parent, os.fspath(path))


def parse_input(
    data: Mapping, base_dir: str | os.PathLike | None = None, source: str = "<input>"
) -> tuple[ManyBodyInput, ExecutionOptions]:
    """Turn already-loaded file content into a validated ``(ManyBodyInput, ExecutionOptions)``.

    ``base_dir`` is where relative ``molecule.xyz`` paths are looked up (the input file's folder).
    Plugins named in ``execution.plugins`` are imported before model chemistries are checked. A
    ``screening`` section is checked and stored in the returned input
    (``specification.extras["mbe_mpi"]["screening"]``, see :mod:`mbe_mpi.screening.rules`).
    """
    where = prefix(source)
    if data is None:
        raise InputError(f"{where}the input is empty; give a molecule and a model (or a QCSchema ManyBodyInput)")
    if not isinstance(data, Mapping):
        raise InputError(
            f"{where}the top level must be a mapping of keys to values (like molecule:, model:), "
            f"not a {type_name(data)}"
        )
    data = dict(data)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if is_qcschema(data, where):
        options = _execution_options(data.pop("execution", None), where)
        screening = data.pop("screening", None)
        mbi = attach_screening(qcschema_input(data, where), screening, where)
        validate_manybody_input(mbi, source)
    else:
        options = _execution_options(data.get("execution"), where)
        mbi = attach_screening(friendly_input(data, base, where), data.get("screening"), where)
        validate_manybody_input(mbi, source, levels_name="levels")
    return mbi, options


def attach_screening(mbi: ManyBodyInput, screening: Any, where: str) -> ManyBodyInput:
    """The input with a ``screening`` section's rules stored in it (checked in form; validation checks the rest)."""
    if screening is None:
        return mbi
    return with_screening(mbi, screening_section(screening, where))


def _execution_options(values: Any, where: str) -> ExecutionOptions:
    """The ``execution`` section, with its plugins imported (they may define the input's program)."""
    if values is None:
        return ExecutionOptions()
    if not isinstance(values, Mapping):
        raise InputError(f"{where}execution must be a mapping such as {{n_workers: 4}}, not a {type_name(values)}")
    try:
        options = ExecutionOptions.from_mapping(values, where="execution")
        import_plugins(options.plugins)
    except InputError as exc:
        raise InputError(one_line(f"{where}{exc}")) from None
    return options
