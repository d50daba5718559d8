"""QCEngine harness for GFN1-xTB / GFN2-xTB through tblite's Python API (``tblite.interface``).

Why our own harness rather than ``tblite.qcschema.run_schema``: ``run_schema`` passes every atom of
the molecule to tblite and ignores the ``real`` flags, so a monomer carrying ghost atoms of its
partner (a counterpoise task) comes back with the energy of the whole dimer. Many-body expansions
are full of such ghosted tasks, so here the calculator is driven directly.

Ghost atoms
    xTB has a fixed minimal valence basis tied to each atom; there is no way to place basis
    functions on an atom without also placing its nucleus and electrons there. Ghost atoms
    (``real == False``) are therefore dropped before the calculation, and zero rows are put back
    for them into the gradient, which always has one row per atom of the *input* molecule, in the
    input order. Consequence: with xTB a counterpoise-corrected (``cp``) expansion gives exactly the
    same numbers as the uncorrected (``nocp``) one -- there is no basis-set superposition to correct.

Model chemistry
    ``method``: GFN1-xTB or GFN2-xTB. Matching ignores case, ``-``, ``_`` and blanks, so
    "GFN2-xTB", "gfn2-xtb", "gfn2xtb" and "GFN2_xTB" all select GFN2-xTB. (IPEA1-xTB, which tblite
    also has, is not offered: it is a special-purpose parametrisation for ionisation potentials.)
    ``basis``: must be empty (``None`` or ""). xTB has no basis choice, and a non-empty basis is
    refused rather than ignored, because it almost always means the input was meant for another
    program (e.g. "cc-pvdz" together with a mistyped program name).
    ``driver``: energy or gradient (tblite has no analytic Hessian).

Charge and spin
    The molecule's ``molecular_charge`` is the total charge and ``molecular_multiplicity - 1`` the
    number of unpaired electrons (tblite's ``uhf``). For a ghosted task QCManyBody already sets both
    for the real fragments only. Geometry is in bohr, which is what tblite expects.

Keywords (spellings with "-" instead of "_" are accepted too)
    ``accuracy`` (float > 0, tblite default 1.0; smaller is tighter),
    ``max_iter`` (int > 0, maximum SCC iterations, default 250),
    ``electronic_temperature`` (float >= 0, in **kelvin**, default 300 K; converted to hartree
    with tblite's own factor, so 300 reproduces the default bit for bit),
    ``verbosity`` (int >= 0, default 0). tblite's printout is never written to the process's
    stdout; with ``verbosity`` > 0 it is collected into ``AtomicResult.stdout`` instead. Keywords
    not set are left at tblite's defaults (no ``set`` call at all), so results equal a plain
    ``tblite.interface.Calculator`` run.

Threads
    tblite is OpenMP-parallel. QCEngine sets ``OMP_NUM_THREADS`` to ``config.ncores`` around the
    call, but libgomp reads that variable only once, when tblite's library is first loaded; later
    changes of ``ncores`` in the same process have no effect. This module therefore loads tblite's
    library (on first use, so that a run without tblite never loads it) with the ``OMP_NUM_THREADS``
    the process was started with, not whatever QCEngine happens to set around the first call (all
    cores by default). Set ``OMP_NUM_THREADS`` when starting the process; mbe_mpi's local workers get
    ``threads_per_task``. For bit-for-bit results it must be 1: with 2 threads, repeating the *same*
    calculation in one process gave gradients differing in the last bits (OpenMP reductions in
    varying order; tblite 0.8, 12-atom water cluster), while 1 thread is reproducible.

Failures
    An SCC that does not converge raises ``qcengine.exceptions.ConvergenceError``; bad input raises
    ``qcengine.exceptions.InputError``; QCEngine turns either into a ``FailedOperation``
    (``success=False``). :meth:`TBLiteHarness.check_model` refuses a bad method/basis/driver/keyword
    up front with :class:`mbe_mpi.errors.InputError`, before any QC work starts.
"""

from __future__ import annotations

import math
import re
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from qcelemental.util import safe_version, which_import
from qcengine.exceptions import ConvergenceError, UnknownError
from qcengine.exceptions import InputError as QCEngineInputError
from qcengine.programs.model import ProgramHarness

from .common import driver_name, import_with_launch_threads, normalise_keyword, refuse


def _load_tblite() -> None:
    """Import tblite's library (and its OpenMP runtime) with the thread count the process started with."""
    import_with_launch_threads("tblite.interface")


if TYPE_CHECKING:
    from qcelemental.models.v2 import AtomicInput, AtomicResult
    from qcengine.config import TaskConfig

#: normalised method name (lower case, no "-", "_" or blanks) -> tblite's method name
_METHODS: dict[str, str] = {"gfn1xtb": "GFN1-xTB", "gfn2xtb": "GFN2-xTB"}

_DRIVERS: tuple[str, ...] = ("energy", "gradient")
_LAST_ELEMENT = 86  # GFN1-xTB and GFN2-xTB cover H to Rn

#: accepted keywords (normalised spelling); see the module docstring for meaning and units
_KEYWORDS: tuple[str, ...] = ("accuracy", "max_iter", "electronic_temperature", "verbosity")

#: kelvin -> hartree, the factor tblite itself uses for its 300 K default (see Calculator.set docs)
_KELVIN_TO_HARTREE = 3.166808578545117e-6

_ROUTINE = "mbe_mpi.harnesses.tblite"


def _canonical_method(method: Any) -> str | None:
    """tblite's name for ``method`` (ignoring case, "-", "_", blanks), or None if not supported."""
    if not isinstance(method, str):
        return None
    return _METHODS.get(re.sub(r"[\s_\-]", "", method.lower()))


def _check_keyword_value(name: str, value: Any) -> str | None:
    """Sentence describing what is wrong with ``value`` for keyword ``name``, or None if fine."""
    is_int = isinstance(value, Integral) and not isinstance(value, bool)
    is_real = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if name == "accuracy" and not (is_real and value > 0):
        return f"tblite keyword 'accuracy' must be a number > 0, not {value!r}"
    if name == "max_iter" and not (is_int and value > 0):
        return f"tblite keyword 'max_iter' must be an integer > 0, not {value!r}"
    if name == "electronic_temperature" and not (is_real and value >= 0):
        return f"tblite keyword 'electronic_temperature' must be a number >= 0 (kelvin), not {value!r}"
    if name == "verbosity" and not (is_int and value >= 0):
        return f"tblite keyword 'verbosity' must be an integer >= 0, not {value!r}"
    return None


def _model_problem(method: Any, basis: Any, driver: Any, keywords: dict[str, Any] | None) -> str | None:
    """One readable sentence saying what is wrong with this model chemistry, or None if it can run.

    Shared by :meth:`TBLiteHarness.check_model` (raises mbe_mpi's InputError before any work) and
    :meth:`TBLiteHarness.compute` (raises QCEngine's InputError so the task fails cleanly).
    """
    if _canonical_method(method) is None:
        return f"tblite cannot do method {method!r}; available methods: {', '.join(_METHODS.values())}"
    if not (basis is None or (isinstance(basis, str) and not basis.strip())):
        shown = basis if isinstance(basis, str) else getattr(basis, "name", type(basis).__name__)
        return (
            f"tblite was given basis {shown!r}, but xTB methods ({', '.join(_METHODS.values())}) have no basis "
            f"choice; leave the basis empty"
        )
    drv = driver_name(driver)
    if drv not in _DRIVERS:
        return f"tblite cannot do driver {drv!r} (no analytic Hessian or properties); available drivers: " + ", ".join(
            _DRIVERS
        )
    for key, value in (keywords or {}).items():
        name = normalise_keyword(str(key))
        if name not in _KEYWORDS:
            return f"unknown tblite keyword {key!r}; accepted keywords: {', '.join(_KEYWORDS)}"
        problem = _check_keyword_value(name, value)
        if problem:
            return problem
    return None


def _singlepoint(method: str, numbers: np.ndarray, positions: np.ndarray, charge: float, uhf: int,
                 keywords: dict[str, Any], log: list[str]) -> Any:
    """tblite's calculator set up from our keywords, run once; its errors as QCEngine's kinds."""
    _load_tblite()
    from tblite.exceptions import TBLiteRuntimeError, TBLiteTypeError, TBLiteValueError
    from tblite.interface import Calculator

    try:
        calc = Calculator(method, numbers, positions, charge=charge, uhf=uhf, color=False, logger=log.append)
        calc.set("verbosity", int(keywords.get("verbosity", 0)))
        if "accuracy" in keywords:
            calc.set("accuracy", float(keywords["accuracy"]))
        if "max_iter" in keywords:
            calc.set("max-iter", int(keywords["max_iter"]))
        if "electronic_temperature" in keywords:
            calc.set("temperature", float(keywords["electronic_temperature"]) * _KELVIN_TO_HARTREE)
    except (TBLiteRuntimeError, TBLiteTypeError, TBLiteValueError) as exc:
        # e.g. an element beyond the parametrisation (Z > 86)
        raise QCEngineInputError(f"tblite {method} could not be set up: {exc}") from exc
    try:
        return calc.singlepoint()
    except TBLiteRuntimeError as exc:
        message = f"tblite {method} failed: {exc}"
        if "not converged" in str(exc).lower():
            raise ConvergenceError(message) from exc
        raise UnknownError(message) from exc


def _properties(res: Any, natom: int, real: np.ndarray, driver: str) -> tuple[dict[str, Any], Any]:
    """AtomicProperties and return_result from tblite's result; ghost atoms get zero gradient rows."""
    energy = float(res.get("energy"))
    norb = int(res.get("norbitals"))
    properties: dict[str, Any] = {
        "calcinfo_natom": natom,  # of the input molecule, ghosts included (rows of the gradient)
        "calcinfo_nbasis": norb,
        "calcinfo_nmo": norb,
        "return_energy": energy,
        "scf_total_energy": energy,
        "scf_dipole_moment": np.asarray(res.get("dipole"), dtype=float),  # e*bohr, same origin as input
    }
    if driver == "gradient":
        gradient = np.zeros((natom, 3))
        gradient[real] = np.asarray(res.get("gradient"), dtype=float).reshape(-1, 3)
        properties["return_gradient"] = gradient
        properties["scf_total_gradient"] = gradient
        return_result: Any = gradient
    else:
        return_result = energy
    return properties, return_result


class TBLiteHarness(ProgramHarness):
    """QCEngine program "tblite": GFN1-/GFN2-xTB energies and gradients, ghost atoms dropped.

    See the module docstring for the conventions (ghosts, keywords, threads, failures).
    """

    #: what a forkserver imports for this program (loading libtblite there, with the workers' threads)
    preload: ClassVar[tuple[str, ...]] = ("tblite.interface",)

    _defaults: ClassVar[dict[str, Any]] = {
        "name": "tblite",
        "scratch": False,
        # one tblite context per call, but libgomp/OpenMP state is process-wide: do not share threads
        "thread_safe": False,
        "thread_parallel": True,
        "node_parallel": False,
        "managed_memory": False,
    }
    version_cache: ClassVar[dict[str, str]] = {}

    @staticmethod
    def found(raise_error: bool = False) -> bool:
        """Whether tblite's Python API is importable."""
        return which_import(
            "tblite",
            return_bool=True,
            raise_error=raise_error,
            raise_msg="Please install via `pip install tblite` or `conda install tblite-python -c conda-forge`.",
        )

    def get_version(self) -> str:
        """Version of the tblite library actually loaded (its C API reports it; the package has no __version__)."""
        self.found(raise_error=True)
        which_prog = which_import("tblite")
        if which_prog not in self.version_cache:
            _load_tblite()
            from tblite.library import get_version

            self.version_cache[which_prog] = safe_version(".".join(str(v) for v in get_version()))
        return self.version_cache[which_prog]

    def check_model(self, method: str, basis: str | None, driver: str, keywords: dict[str, Any] | None) -> None:
        """Refuse, before any QC work, what this harness cannot run (InputError naming the value)."""
        refuse(_model_problem(method, basis, driver, keywords))

    def check_elements(self, method: str, basis: str | None, elements: list[str],
                       keywords: dict[str, Any] | None = None) -> None:
        """Refuse elements beyond GFN1/GFN2-xTB's parametrisation (H to Rn, Z <= 86) before any QC work."""
        from qcelemental import periodictable

        beyond = [element for element in elements if periodictable.to_Z(element) > _LAST_ELEMENT]
        if beyond:
            refuse(f"tblite {_canonical_method(method)} is parametrised for H to Rn (Z <= {_LAST_ELEMENT}), "
                   f"not for {', '.join(beyond)}")

    def compute(self, input_data: AtomicInput, config: TaskConfig) -> AtomicResult:
        """Run one xTB single point on the real atoms of ``input_data.molecule``.

        ``config`` is not used directly: its ``ncores`` reaches OpenMP only through QCEngine's
        ``OMP_NUM_THREADS`` (see the module docstring), and xTB needs no scratch or memory setting.
        """
        self.found(raise_error=True)

        from qcelemental.models.v2 import AtomicResult, Provenance

        spec = input_data.specification
        problem = _model_problem(spec.model.method, spec.model.basis, spec.driver, spec.keywords)
        if problem:
            raise QCEngineInputError(problem)
        method = _canonical_method(spec.model.method)
        driver = driver_name(spec.driver)
        keywords = {normalise_keyword(str(k)): v for k, v in spec.keywords.items()}

        mol = input_data.molecule
        natom = len(mol.symbols)
        real = np.asarray(mol.real, dtype=bool).reshape(natom)
        if not real.any():
            raise QCEngineInputError("tblite was given a molecule whose atoms are all ghosts; nothing to compute")
        numbers = np.asarray(mol.atomic_numbers)[real]
        positions = np.asarray(mol.geometry, dtype=float).reshape(natom, 3)[real]  # bohr
        charge = float(mol.molecular_charge)
        multiplicity = float(mol.molecular_multiplicity)
        if multiplicity < 1 or multiplicity != round(multiplicity):
            raise QCEngineInputError(f"tblite needs an integer spin multiplicity >= 1, not {multiplicity!r}")
        uhf = round(multiplicity) - 1

        log: list[str] = []  # tblite's printout goes here, never to stdout
        res = _singlepoint(method, numbers, positions, charge, uhf, keywords, log)
        properties, return_result = _properties(res, natom, real, driver)
        return AtomicResult(
            input_data=input_data,
            molecule=mol,
            properties=properties,
            return_result=return_result,
            stdout="\n".join(log) if log else None,
            success=True,
            provenance=Provenance(creator="tblite", version=self.get_version(), routine=_ROUTINE),
            extras={},
        )
