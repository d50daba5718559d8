"""QCEngine harness that runs PySCF in-process: HF, MP2 and any libxc DFT functional.

QCEngine 0.52 ships no PySCF harness, and mbe_mpi needs one that both its parallel workers and
QCManyBody's sequential ``ManyBodyComputer`` call through ``qcengine.compute(..., "pyscf")``: only then
are the fragment numbers produced by the very same code and comparable bit for bit.

Design points (each is something an MBE needs, not a nicety):

* Ghost atoms (``molecule.real[i] is False``, counterpoise) become PySCF ``ghost-X`` atoms, which carry
  the element's basis functions but no nuclear charge and no electrons. They stay in the PySCF
  molecule, so gradients and Hessians have rows for every atom of the computed molecule -- which is
  what QCManyBody expects (basis functions move with ghost centres, so the forces there are nonzero).
* A basis set defined with an effective core potential (def2-* from Rb on, LANL2DZ, cc-pVXZ-PP) gets
  its ECP on real atoms, as in Psi4 or ORCA; PySCF alone would run all-electron in a valence basis.
* The OpenMP thread count is ``TaskConfig.ncores`` capped by the ``OMP_NUM_THREADS`` that was set when
  this module was imported. QCEngine rewrites ``OMP_NUM_THREADS`` to ``ncores`` while a task runs, so
  reading it then would be useless; the launch-time value is what the user asked for and what a
  reference run uses, and a different thread count may change the last bits of a result. PySCF, and
  the SciPy (OpenBLAS) it imports, are loaded with that launch value too: a library's thread pool is
  sized when it is loaded, and QCManyBody's sequential loop first imports PySCF inside a task.
* PySCF is kept silent (``verbose = 0``); with the ``verbose`` keyword its log goes into the result's
  ``stdout`` instead of the terminal.
* A non-converged SCF raises :class:`qcengine.exceptions.ConvergenceError`, so QCEngine reports a
  ``FailedOperation`` rather than returning numbers nobody should use.
"""

from __future__ import annotations

import functools
import io
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import qcengine.exceptions as qcng_exc
from qcelemental.models.v2 import AtomicResult, Provenance
from qcelemental.util import safe_version, which_import
from qcengine.programs.model import ProgramHarness

from ..errors import InputError
from .common import LAUNCH_OMP_THREADS, driver_name, import_with_launch_threads

if TYPE_CHECKING:
    from qcelemental.models.v2 import AtomicInput
    from qcengine.config import TaskConfig

__all__ = ["PySCFHarness", "ACCEPTED_KEYWORDS"]


def _read_thread_cap(value: str | None) -> int | None:
    """Turn an ``OMP_NUM_THREADS`` string into a positive thread cap, or ``None`` for no cap."""
    if value is None:
        return None
    try:
        # OpenMP allows a list ("4,2") for nested levels; the first entry is the outer level
        cap = int(value.split(",")[0].strip())
    except ValueError:
        return None
    return cap if cap > 0 else None


#: the launch ``OMP_NUM_THREADS`` as a cap on PySCF's threads (``None``: unset, no cap)
_LAUNCH_OMP_THREADS: int | None = _read_thread_cap(LAUNCH_OMP_THREADS)


def _load_pyscf() -> None:
    """Import PySCF, and the SciPy whose OpenBLAS it brings, with the launch thread count (see common)."""
    import_with_launch_threads("pyscf", "scipy.linalg")


_HF_NAMES = ("hf", "scf")
_MP2_NAMES = ("mp2",)
_DRIVERS = ("energy", "gradient", "hessian")
_REFERENCES = ("rhf", "uhf", "rohf")
_INIT_GUESSES = ("minao", "atom", "huckel", "mod_huckel", "hcore", "1e", "sap", "vsap")

#: keyword -> what it sets in PySCF (also the text of the "accepted keywords" error)
ACCEPTED_KEYWORDS: dict[str, str] = {
    "auxbasis": "auxiliary basis for density fitting (mf.density_fit(auxbasis=...))",
    "conv_tol": "SCF energy convergence threshold (mf.conv_tol)",
    "conv_tol_grad": "SCF orbital-gradient convergence threshold (mf.conv_tol_grad)",
    "density_fit": "use density fitting for the SCF (mf.density_fit())",
    "diis_space": "number of DIIS vectors (mf.diis_space)",
    "frozen": "number of frozen core orbitals in MP2 (mp.MP2(mf, frozen=...))",
    "grids_level": "DFT integration grid level 0-9 (mf.grids.level)",
    "init_guess": f"SCF initial guess, one of {', '.join(_INIT_GUESSES)} (mf.init_guess)",
    "level_shift": "virtual-orbital level shift in Hartree (mf.level_shift)",
    "max_cycle": "maximum number of SCF iterations (mf.max_cycle)",
    "reference": "rhf, uhf or rohf (RKS/UKS/ROKS for DFT); default rhf for closed-shell singlets, else uhf",
    "verbose": "PySCF log level 0-9 (mol.verbose); the log is returned as the result's stdout",
}


def _method_kind(method: str) -> str:
    """Classify a lower-case method name as "hf", "mp2" or "dft" (no validation of DFT names)."""
    if method in _HF_NAMES:
        return "hf"
    if method in _MP2_NAMES:
        return "mp2"
    return "dft"


def _fail(message: str) -> None:
    """Raise mbe_mpi's user-facing error (kept in one place so the message style stays uniform)."""
    raise InputError(message)


def _check_functional(method: str) -> None:
    """Refuse a DFT functional name that PySCF/libxc cannot evaluate, before any QC work starts."""
    from pyscf.dft import libxc
    from pyscf.scf import dispersion

    unknown = (
        f"PySCF does not know method {method!r}; available: hf (or scf), mp2, "
        f"or any libxc functional, e.g. b3lyp, pbe, pbe0, wb97x"
    )
    try:
        xc, _nlc, disp = dispersion.parse_dft(method)
    except NotImplementedError as exc:
        _fail(f"PySCF cannot run method {method!r} ({exc}); use a plain libxc functional such as b3lyp or pbe0")
    try:
        libxc.parse_xc(xc)
    except Exception:  # libxc raises KeyError for unknown names, ValueError/others for malformed strings
        _fail(unknown)
    if disp and dispersion.dispersion is None:
        _fail(
            f"method {method!r} asks for a {disp} dispersion correction, which needs the pyscf-dispersion "
            f"package (not installed); use the functional without the dispersion suffix"
        )


@functools.lru_cache(maxsize=64)
def _basis_known(name: str) -> bool:
    """True if PySCF can load basis ``name`` for at least one common element.

    Loading a single element's shells is cheap (~1 ms) and uses PySCF's own name resolution, so aliases
    such as "6-31g*", "def2-svp" or "unc-cc-pvdz" behave exactly as in the calculation. Several elements
    are tried because some sets (e.g. cc-pvdz-pp) only exist for heavy atoms.
    """
    return any(_basis_has(name, element) for element in ("H", "C", "O", "Li", "Xe", "Au"))


#: numeric keywords: name -> (integer?, minimum, minimum excluded?, maximum)
_NUMERIC_KEYWORDS: dict[str, tuple[bool, float, bool, float | None]] = {
    "conv_tol": (False, 0, True, None),
    "conv_tol_grad": (False, 0, True, None),
    "max_cycle": (True, 0, False, None),
    "level_shift": (False, 0, False, None),
    "diis_space": (True, 1, False, None),
    "grids_level": (True, 0, False, 9),
    "frozen": (True, 0, False, None),
    "verbose": (True, 0, False, 9),
}


def _check_keywords(keywords: dict[str, Any], kind: str, driver: str) -> None:
    """Refuse unknown keywords and values PySCF would reject or silently misuse."""
    unknown = sorted(set(keywords) - set(ACCEPTED_KEYWORDS))
    if unknown:
        _fail(
            f"PySCF harness does not accept keyword(s) {', '.join(map(repr, unknown))}; "
            f"accepted keywords: {', '.join(sorted(ACCEPTED_KEYWORDS))}"
        )
    for key, bounds in _NUMERIC_KEYWORDS.items():
        if key in keywords:
            _check_number(key, keywords[key], *bounds)
    _check_choices(keywords, kind)
    _check_combinations(keywords, kind, driver)


def _check_number(key: str, value: Any, integer: bool, minimum: float, strict: bool, maximum: float | None) -> None:
    ok = (isinstance(value, int) if integer else isinstance(value, (int, float))) and not isinstance(value, bool)
    if ok:
        ok = (value > minimum if strict else value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        what = "an integer" if integer else "a number"
        bound = f"> {minimum}" if strict else f">= {minimum}"
        upper = f" and <= {maximum}" if maximum is not None else ""
        _fail(f"PySCF keyword {key!r} must be {what} {bound}{upper}, got {value!r}")


def _check_choices(keywords: dict[str, Any], kind: str) -> None:
    if "init_guess" in keywords:
        guess = keywords["init_guess"]
        if not isinstance(guess, str) or guess.lower() not in _INIT_GUESSES:
            _fail(f"PySCF keyword 'init_guess' must be one of {', '.join(_INIT_GUESSES)}, got {guess!r}")
        if guess.lower() == "vsap" and kind != "dft":
            _fail("PySCF init_guess 'vsap' is only available for DFT methods; use minao, atom, huckel or sap")
    if "density_fit" in keywords and not isinstance(keywords["density_fit"], bool):
        _fail(f"PySCF keyword 'density_fit' must be true or false, got {keywords['density_fit']!r}")
    if "auxbasis" in keywords:
        aux = keywords["auxbasis"]
        if not keywords.get("density_fit", False):
            _fail("PySCF keyword 'auxbasis' only applies with density_fit: true")
        if not isinstance(aux, str) or not aux.strip() or not _basis_known(aux.strip()):
            _fail(
                f"PySCF does not know auxiliary basis {aux!r}; use a name such as def2-universal-jkfit or cc-pvdz-jkfit"
            )
    if "reference" in keywords:
        ref = keywords["reference"]
        if not isinstance(ref, str) or ref.lower() not in _REFERENCES:
            _fail(f"PySCF keyword 'reference' must be one of {', '.join(_REFERENCES)}, got {ref!r}")


def _check_combinations(keywords: dict[str, Any], kind: str, driver: str) -> None:
    if "frozen" in keywords and kind != "mp2":
        _fail("PySCF keyword 'frozen' (frozen core orbitals) only applies to method mp2")
    if "grids_level" in keywords and kind != "dft":
        _fail("PySCF keyword 'grids_level' only applies to DFT methods, not hf or mp2")
    reference = str(keywords.get("reference", "")).lower()
    if reference == "rohf" and kind == "mp2":
        _fail("PySCF mp2 is available with reference rhf or uhf, not rohf")
    if reference == "rohf" and driver == "hessian":
        _fail("PySCF has no analytic hessian for reference rohf (ROHF/ROKS); use reference uhf")
    if kind == "mp2" and driver == "gradient" and keywords.get("density_fit", False):
        _fail("PySCF has no density-fitted mp2 gradient; set density_fit: false for mp2 gradients")


def _basis_stem(name: str) -> str:
    """The library name PySCF looks up: without its "uncontracted" prefix (``unc-cc-pvdz``)."""
    return name[3:] if name.lower().startswith("unc") else name


@functools.cache
def _basis_has(name: str, element: str) -> bool:
    """Whether PySCF's library (or basis-set-exchange, where installed) has basis ``name`` for ``element``."""
    from pyscf.gto import basis as pyscf_basis

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "install basis-set-exchange" hints are not our message
            return bool(pyscf_basis.load(_basis_stem(name), element))
    except Exception:  # BasisNotFoundError, or a parse error for a garbage name
        return False


@functools.cache
def _basis_ecp(name: str, element: str) -> bool:
    """Whether basis ``name`` comes with an effective core potential for ``element`` in PySCF's library.

    Sets such as def2-SVP (from Rb on), LANL2DZ or cc-pVDZ-PP describe only the valence electrons of
    heavy atoms and are meant to be used with their ECP. PySCF applies an ECP only when ``Mole.ecp`` names
    it; without it the same input runs as an all-electron calculation in a valence basis, which converges
    to a number that is plainly wrong (HI in def2-SVP: -1996.9 Eh instead of -297.2 Eh). Psi4, ORCA and
    Q-Chem pair such a basis with its ECP by default, and so does this harness.
    """
    from pyscf.gto import basis as pyscf_basis

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(pyscf_basis.load_ecp(_basis_stem(name), element))
    except Exception:  # no ECP of that name for that element
        return False


def _atoms_and_basis(molecule: Any, basis: str) -> tuple[list[tuple[str, tuple[float, float, float]]],
                                                         dict[str, str], dict[str, str]]:
    """PySCF atom list (bohr), basis dict and ECP dict for a QCSchema molecule, ghosts as ``ghost-X`` atoms.

    PySCF treats a symbol prefixed with ``ghost-`` (or ``X-``) as a charge-free centre; its basis is looked
    up under that label, so the dict names the element's basis for every ghost label explicitly. This is
    the documented PySCF way of doing counterpoise corrections (see pyscf/gto/mole.py, ``is_ghost_atom``).
    A real atom whose basis has an ECP gets it (:func:`_basis_ecp`); a ghost carries basis functions only.
    """
    atoms = []
    basis_dict: dict[str, str] = {}
    ecp_dict: dict[str, str] = {}
    for symbol, xyz, real in zip(molecule.symbols, molecule.geometry, molecule.real, strict=True):
        element = symbol.capitalize()
        label = element if real else f"ghost-{element}"
        atoms.append((label, (float(xyz[0]), float(xyz[1]), float(xyz[2]))))
        basis_dict[label] = basis
        if real and _basis_ecp(basis, element):
            ecp_dict[label] = basis
    return atoms, basis_dict, ecp_dict


def _build_mole(input_data: AtomicInput, config: TaskConfig, verbose: int, stdout: io.StringIO) -> Any:
    """PySCF ``Mole`` for the input molecule: bohr geometry, charge, spin = multiplicity - 1, ghosts."""
    from pyscf import gto

    molecule = input_data.molecule
    if not any(bool(r) for r in molecule.real):
        raise qcng_exc.InputError("PySCF cannot compute a molecule whose atoms are all ghosts (no electrons)")

    basis = input_data.specification.model.basis
    atoms, basis_dict, ecp_dict = _atoms_and_basis(molecule, basis)

    mol = gto.Mole()
    mol.atom = atoms
    mol.unit = "Bohr"
    mol.basis = basis_dict
    mol.ecp = ecp_dict
    mol.charge = int(round(float(molecule.molecular_charge)))
    mol.spin = int(round(float(molecule.molecular_multiplicity))) - 1
    mol.verbose = verbose
    mol.stdout = stdout
    if config.memory is not None:
        mol.max_memory = float(config.memory) * 1024.0  # TaskConfig memory is GiB, PySCF wants MB
    try:
        mol.build(dump_input=False, parse_arg=False)  # dump_input would copy the running script into the log
    except Exception as exc:  # BasisNotFoundError, or RuntimeError for charge/spin that do not fit
        raise qcng_exc.InputError(f"PySCF could not build the molecule with basis {basis!r}: {exc}") from exc
    return mol


def _make_scf(mol: Any, kind: str, method: str, keywords: dict[str, Any]) -> Any:
    """SCF object (RHF/UHF/ROHF or RKS/UKS/ROKS) with the keyword settings applied, not yet run."""
    from pyscf import dft, scf

    closed_shell = mol.spin == 0
    reference = str(keywords.get("reference", "rhf" if closed_shell else "uhf")).lower()
    if reference == "rhf" and not closed_shell:
        raise qcng_exc.InputError(
            f"reference rhf needs a closed-shell singlet, but the molecule has multiplicity {mol.spin + 1}; "
            "use reference uhf or rohf"
        )

    if kind == "dft":
        cls = {"rhf": dft.RKS, "uhf": dft.UKS, "rohf": dft.ROKS}[reference]
        mf = cls(mol, xc=method)
        if "grids_level" in keywords:
            mf.grids.level = int(keywords["grids_level"])
    else:
        cls = {"rhf": scf.RHF, "uhf": scf.UHF, "rohf": scf.ROHF}[reference]
        mf = cls(mol)

    if keywords.get("density_fit", False):
        mf = mf.density_fit(auxbasis=keywords.get("auxbasis"))
    for key in ("conv_tol", "conv_tol_grad", "level_shift"):
        if key in keywords:
            setattr(mf, key, float(keywords[key]))
    for key in ("max_cycle", "diis_space"):
        if key in keywords:
            setattr(mf, key, int(keywords[key]))
    if "init_guess" in keywords:
        mf.init_guess = str(keywords["init_guess"]).lower()
    return mf


def _derivatives(obj: Any, driver: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Analytic gradient (natom x 3) and, for the hessian driver, Hessian (3N x 3N) of a converged method."""
    if driver == "energy":
        return None, None
    gradient = np.asarray(obj.nuc_grad_method().kernel(), dtype=float)
    if driver != "hessian":
        return gradient, None
    if min(obj.mol.nelec) == 0 and obj.mol.nelec != (0, 0):
        raise qcng_exc.InputError(  # PySCF's UHF response equations break on an empty beta (or alpha) space
            f"PySCF's analytic UHF/UKS hessian needs electrons of both spins; this molecule has "
            f"{obj.mol.nelec[0]} alpha and {obj.mol.nelec[1]} beta (e.g. a lone H atom)")
    hess4 = np.asarray(obj.Hessian().kernel(), dtype=float)  # (natm, natm, 3, 3)
    natm = hess4.shape[0]
    hessian = hess4.transpose(0, 2, 1, 3).reshape(3 * natm, 3 * natm)
    return gradient, hessian


class PySCFHarness(ProgramHarness):
    """Run PySCF (HF, MP2, DFT) for one QCSchema v2 ``AtomicInput`` inside this Python process.

    In-process rather than via a subprocess: fragment tasks of an MBE are many and small, so start-up cost
    would dominate, and PySCF is a Python library anyway.
    """

    #: what a forkserver imports for this program (the modules a task uses, ~1 s of a cold start)
    preload: ClassVar[tuple[str, ...]] = ("pyscf.gto", "pyscf.scf", "pyscf.dft", "pyscf.mp", "pyscf.grad",
                                          "pyscf.hessian")

    _defaults: ClassVar[dict[str, Any]] = {
        "name": "pyscf",
        "scratch": True,
        "thread_safe": False,  # lib.num_threads is process-global
        "thread_parallel": True,
        "node_parallel": False,
        "managed_memory": True,
    }

    @staticmethod
    def found(raise_error: bool = False) -> bool:
        """Whether PySCF can be imported (QCEngine lists the program as available only then)."""
        return which_import(
            "pyscf",
            return_bool=True,
            raise_error=raise_error,
            raise_msg="Please install via `pip install pyscf`.",
        )

    def get_version(self) -> str:
        """PySCF's version, normalised the way QCEngine expects."""
        self.found(raise_error=True)
        _load_pyscf()
        import pyscf

        return safe_version(pyscf.__version__)

    # ------------------------------------------------------------------ checks

    def check_model(self, method: str, basis: Any, driver: Any, keywords: dict[str, Any] | None = None) -> None:
        """Refuse a method/basis/driver/keywords combination this harness cannot run.

        Called by mbe_mpi before any QC work (so a typo costs seconds, not a failed batch job), and again
        by :meth:`compute`. Raises :class:`mbe_mpi.errors.InputError` with one sentence that names the bad
        value and what is available.
        """
        _load_pyscf()
        keywords = dict(keywords or {})
        if not isinstance(method, str) or not method.strip():
            _fail("PySCF needs a method: hf (or scf), mp2, or any libxc functional, e.g. b3lyp, pbe0")
        method = method.strip().lower()
        kind = _method_kind(method)
        if kind == "dft":
            _check_functional(method)

        drv = driver_name(driver)
        if drv not in _DRIVERS:
            _fail(f"PySCF harness cannot run driver {drv!r}; available drivers: {', '.join(_DRIVERS)}")
        if kind == "mp2" and drv == "hessian":
            _fail("PySCF has no analytic mp2 hessian; available drivers for mp2: energy, gradient")

        if basis is None or (isinstance(basis, str) and not basis.strip()):
            _fail("PySCF needs a basis set, e.g. sto-3g, 6-31g*, cc-pvdz or def2-svp")
        if not isinstance(basis, str):
            _fail(f"PySCF harness takes a basis set name (e.g. cc-pvdz), not a {type(basis).__name__} object")
        if not _basis_known(basis.strip()):
            _fail(
                f"PySCF does not know basis set {basis!r}; use a name from PySCF's library, "
                f"e.g. sto-3g, 6-31g*, cc-pvdz, aug-cc-pvtz or def2-svp"
            )

        _check_keywords(keywords, kind, drv)

    def check_elements(self, method: str, basis: Any, elements: list[str], keywords: dict[str, Any] | None = None) -> None:
        """Refuse a basis set (or auxiliary basis) that PySCF's library lacks for an element of the molecule.

        Called by mbe_mpi after :meth:`check_model` accepted the names, so that cc-pVDZ on iodine is one
        line before the run rather than a failure of every task with that atom.
        """
        _load_pyscf()
        names = [("basis set", basis.strip())]
        aux = (keywords or {}).get("auxbasis")
        if isinstance(aux, str) and aux.strip():
            names.append(("auxiliary basis", aux.strip()))
        for what, name in names:
            missing = [element for element in elements if not _basis_has(name, element)]
            if missing:
                _fail(f"PySCF's {what} {name!r} has no functions for {', '.join(missing)}; choose a basis set "
                      f"defined for every element of the molecule (e.g. def2-svp, which covers H to Rn)")

    # ------------------------------------------------------------------ compute

    def compute(self, input_data: AtomicInput, config: TaskConfig) -> AtomicResult:
        """Run one QCSchema v2 task; raise (QCEngine turns it into a FailedOperation) on any failure."""
        self.found(raise_error=True)
        _load_pyscf()
        import pyscf
        from pyscf import lib

        spec = input_data.specification
        keywords = dict(spec.keywords or {})
        driver = driver_name(spec.driver)
        try:
            self.check_model(spec.model.method, spec.model.basis, driver, keywords)
        except InputError as exc:
            raise qcng_exc.InputError(str(exc)) from exc

        method = spec.model.method.strip().lower()
        kind = _method_kind(method)
        verbose = int(keywords.get("verbose", 0))
        log = io.StringIO()

        threads = max(1, int(config.ncores))
        if _LAUNCH_OMP_THREADS is not None:
            threads = min(threads, _LAUNCH_OMP_THREADS)
        previous_threads = lib.num_threads()
        previous_tmpdir = lib.param.TMPDIR
        lib.num_threads(threads)
        if config.scratch_directory:  # PySCF's temporary files (integrals, chkfile) go to the task's scratch
            lib.param.TMPDIR = config.scratch_directory
        try:
            mol = _build_mole(input_data, config, verbose, log)
            used = {"threads": lib.num_threads(), "max_memory_mb": mol.max_memory, "tmpdir": lib.param.TMPDIR}
            properties, return_result = _run(mol, kind, method, driver, keywords)
        finally:
            lib.num_threads(previous_threads)
            lib.param.TMPDIR = previous_tmpdir

        return AtomicResult(
            input_data=input_data,
            molecule=input_data.molecule,
            properties=properties,
            return_result=return_result,
            stdout=log.getvalue() or None,
            provenance=Provenance(
                creator="PySCF", version=safe_version(pyscf.__version__), routine="mbe_mpi.harnesses.pyscf"
            ),
            extras={"pyscf_resources": used},  # what the task really got: threads, memory, scratch
            success=True,
        )


def _scf_properties(mol: Any, mf: Any, kind: str) -> dict[str, Any]:
    """QCSchema AtomicProperties of the converged SCF."""
    nalpha, nbeta = (int(n) for n in mol.nelec)
    if "e1" not in mf.scf_summary:
        # a one-electron UHF/ROHF (an H atom, say) takes PySCF's shortcut that skips the summary
        mf.energy_elec(mf.make_rdm1())
    summary = mf.scf_summary
    props: dict[str, Any] = {
        "calcinfo_nbasis": int(mol.nao),
        "calcinfo_nmo": int(np.asarray(mf.mo_coeff).shape[-1]),
        "calcinfo_nalpha": nalpha,
        "calcinfo_nbeta": nbeta,
        "calcinfo_natom": int(mol.natm),
        "nuclear_repulsion_energy": float(mol.energy_nuc()),
        "scf_total_energy": float(mf.e_tot),
        "scf_one_electron_energy": float(summary["e1"]),
        "scf_iterations": int(mf.cycles),
    }
    if kind == "dft":
        # PySCF's split: "coul" is the Coulomb (J) energy; "exc" holds the functional energy plus the
        # exact-exchange share of a hybrid and any VV10 term. e1 + coul + exc + nuc = total.
        props["scf_two_electron_energy"] = float(summary["coul"])
        props["scf_xc_energy"] = float(summary["exc"])
    else:
        props["scf_two_electron_energy"] = float(summary["e2"])
    if "dispersion" in summary:
        props["scf_dispersion_correction_energy"] = float(summary["dispersion"])
    return props


def _mp2(mf: Any, mol: Any, keywords: dict[str, Any], props: dict[str, Any]) -> tuple[float, Any]:
    """MP2 on the SCF; its energies go into ``props``. Returns (total energy, the MP2 object)."""
    from pyscf import mp

    nalpha, nbeta = (int(n) for n in mol.nelec)
    frozen = keywords.get("frozen")
    frozen = int(frozen) if frozen else None
    if frozen is not None and (frozen >= nalpha or frozen > nbeta):
        raise qcng_exc.InputError(
            f"PySCF keyword frozen={frozen} leaves no correlated occupied orbitals "
            f"({nalpha} alpha and {nbeta} beta electrons)"
        )
    pt = mp.MP2(mf, frozen=frozen)
    pt.kernel()
    energy = float(pt.e_tot)
    props["mp2_correlation_energy"] = float(pt.e_corr)
    props["mp2_total_energy"] = energy
    props["mp2_doubles_energy"] = float(pt.e_corr)
    props["mp2_singles_energy"] = 0.0  # canonical RHF/UHF references: no singles contribution
    for key, attr in (
        ("mp2_same_spin_correlation_energy", "e_corr_ss"),
        ("mp2_opposite_spin_correlation_energy", "e_corr_os"),
    ):
        value = getattr(pt, attr, None)
        if value is not None:
            props[key] = float(value)
    return energy, pt


def _run(mol: Any, kind: str, method: str, driver: str, keywords: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Run SCF (+ MP2) and the requested derivatives; return (AtomicProperties dict, return_result)."""
    mf = _make_scf(mol, kind, method, keywords)
    mf.kernel()
    if not mf.converged:
        raise qcng_exc.ConvergenceError(
            f"PySCF {type(mf).__name__} for {method} did not converge in {mf.max_cycle} cycles "
            f"(conv_tol={mf.conv_tol:g}); raise max_cycle, or try level_shift or another init_guess"
        )

    props = _scf_properties(mol, mf, kind)
    if kind == "mp2":
        energy, pt = _mp2(mf, mol, keywords, props)
        gradient, hessian = _derivatives(pt, driver)
    else:
        energy = float(mf.e_tot)
        gradient, hessian = _derivatives(mf, driver)
        if gradient is not None:
            props["scf_total_gradient"] = gradient
        if hessian is not None:
            props["scf_total_hessian"] = hessian

    props["return_energy"] = energy
    if gradient is not None:
        props["return_gradient"] = gradient
    if hessian is not None:
        props["return_hessian"] = hessian

    return props, {"energy": energy, "gradient": gradient, "hessian": hessian}[driver]
