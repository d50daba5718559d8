"""QCEngine program harnesses that mbe_mpi registers (PySCF, tblite, synthetic), and model checks.

Registering them with QCEngine (rather than calling PySCF directly) is what lets QCManyBody's own
sequential ``ManyBodyComputer`` run the very same code, which is how exactness is tested.

Each harness class may define ``check_model(method, basis, driver, keywords)`` that raises
:class:`~mbe_mpi.errors.InputError` for a method/basis/driver it cannot do, and
``check_elements(method, basis, elements, keywords)`` for elements of the molecule it cannot treat, so
bad input is refused before any QC work starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import qcengine

from ..errors import InputError

logger = logging.getLogger(__name__)

# module name -> harness class name; imported lazily so a missing optional program is not an error
_OUR_HARNESSES = {
    "pyscf": ("mbe_mpi.harnesses.pyscf", "PySCFHarness"),
    "tblite": ("mbe_mpi.harnesses.tblite", "TBLiteHarness"),
    "synthetic": ("mbe_mpi.harnesses.synthetic", "SyntheticHarness"),
}


def register_all() -> None:
    """Register our harnesses with QCEngine unless QCEngine already has a program of that name."""
    known = qcengine.list_all_programs()
    for name, (module, cls) in _OUR_HARNESSES.items():
        if name in known:
            continue
        harness_cls = getattr(importlib.import_module(module), cls)
        qcengine.register_program(harness_cls())


def import_plugins(modules: tuple[str, ...] | list[str]) -> None:
    """Import user plugin modules (which register their own QCEngine programs): module names or .py paths."""
    for module in modules:
        try:
            if is_plugin_path(module):
                _import_file(module)
            else:
                importlib.import_module(module)
        except InputError:
            raise
        except Exception as exc:  # any failure inside a user's module is a user problem
            raise InputError(f"plugin module {module!r} could not be imported: {type(exc).__name__}: {exc}") from exc


def is_plugin_path(plugin: str) -> bool:
    """``./site.py``, ``/opt/site/harness.py``: a file, not a module name."""
    return plugin.endswith(".py") or os.sep in plugin


def _import_file(plugin: str) -> None:
    """Run a plugin file as a module of its own name space (``mbe_mpi_plugin_<stem>``), once per process.

    Its own name would clash with the standard library for a file called ``site.py`` or ``test.py``.
    """
    path = Path(os.path.expanduser(plugin)).resolve()
    if not path.is_file():
        raise InputError(f"plugin {plugin!r} is not a file; give the path of a .py file, or a module name "
                         "that Python can import (on PYTHONPATH)")
    name = "mbe_mpi_plugin_" + re.sub(r"\W", "_", path.stem)
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def check_model_chemistry(program: str, method: str, basis: str | None, driver: str, keywords: dict | None = None,
                          elements: Iterable[str] = ()) -> None:
    """Refuse a program/method/basis/driver combination that cannot run, naming what is available.

    ``elements`` (the molecule's) go to the harness's ``check_elements`` where it has one: a basis set
    that lacks an element, or a method not parametrised for it, fails every task with that atom.
    """
    name = program.lower()
    all_programs = qcengine.list_all_programs()
    if name not in all_programs:
        available = sorted(qcengine.list_available_programs())
        raise InputError(f"unknown program {program!r}; programs available here: {', '.join(available)}")
    harness = qcengine.get_program(name, check=False)
    if not harness.found():
        available = sorted(qcengine.list_available_programs())
        raise InputError(
            f"program {program!r} is known to QCEngine but not installed here; "
            f"programs available here: {', '.join(available)}"
        )
    check = getattr(harness, "check_model", None)
    if check is not None:
        check(method, basis, driver, dict(keywords or {}))
    check_elements = getattr(harness, "check_elements", None)
    elements = list(dict.fromkeys(elements))
    if check_elements is not None and elements:
        check_elements(method, basis, elements, dict(keywords or {}))


def preload_modules(programs: Iterable[str] | None = None) -> list[str]:
    """Modules a process that will run these QC programs (default: all of ours) may import ahead.

    Each of our harnesses names them (``preload``); other programs' harnesses are imported by the
    workers themselves (plugins) when they start.
    """
    names = list(_OUR_HARNESSES) if programs is None else [p.lower() for p in programs]
    modules: list[str] = []
    for name in names:
        if name not in _OUR_HARNESSES:
            continue
        module, cls = _OUR_HARNESSES[name]
        harness = getattr(importlib.import_module(module), cls)
        if harness.found():
            modules.extend(getattr(harness, "preload", ()))
    return modules
