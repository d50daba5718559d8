"""QCEngine program ``synthetic``: a SYNTHETIC model for benchmarks and tests -- not chemistry.

Nothing here describes real molecules. The program exists so that many-body expansions can be run
with a controllable cost per task (to benchmark scheduling and parallel efficiency without a QC
program's noise), with injectable faults (to test fault tolerance), and with an analytic energy,
gradient and Hessian whose many-body structure is non-trivial (to test exactness of the assembly).
Importing :mod:`mbe_mpi` registers it with QCEngine.

Model chemistry
    ``method``: "synthetic" (any case). ``basis``: must be empty (``None`` or ""). ``driver``:
    energy, gradient or hessian.

The energy (hartree, geometry in bohr)
    With ``R`` the real atoms, ``G`` the ghost atoms (``real == False``), ``Z_i`` atomic numbers,
    ``s_ij = |x_i - x_j|**2``, ``r_ij = sqrt(s_ij)`` and ``Q`` the ``molecular_charge``::

        rho_i = sum_{j != i, j in R or G} w_j * exp(-A * s_ij)        w_j = 1 (real), 0.3 (ghost)
        E = sum_{i in R} [ -Z_i / 2  -  C * sqrt(Z_i) * sqrt(1 + rho_i) ]
          + sum_{i < j, both in R} K * sqrt(Z_i * Z_j) * exp(-B * r_ij) / r_ij
          + 0.1 * Q**2

    with ``A = 0.05 bohr**-2``, ``B = 1 bohr**-1``, ``C = 0.1``, ``K = 0.02`` (module constants).
    The square root of the "embedding density" ``rho_i`` makes the energy *not* pairwise additive
    (every n-body contribution is nonzero), and ghost atoms enter ``rho_i`` with weight 0.3, so
    they change the energy (a counterpoise-corrected expansion differs from an uncorrected one; cp
    and vmfc differ too). Ghosts carry no energy of their own and take no part in the pair term.
    The gradient and Hessian are analytic and have rows/columns for *all* atoms of the input
    molecule, ghosts included (ghosts move ``rho`` of the real atoms). Shapes: gradient
    ``(natom, 3)``, Hessian ``(3 natom, 3 natom)``.

    Everything is plain numpy element-wise arithmetic and reductions (no BLAS calls), so results are
    deterministic and bit-identical between processes and independent of thread settings.

Keywords (spellings with "-" instead of "_" are accepted too)
    ``seconds`` (number >= 0, default 0): base cost of a task.
    ``exponent`` (number, default 0): the task costs ``seconds * natom**exponent`` seconds, where
    ``natom`` counts ALL atoms of the task molecule, real and ghost (ghosts cost basis functions in
    a real program). E.g. ``exponent: 3`` mimics the cubic scaling of a mean-field calculation.
    ``mode`` ("sleep" (default) or "spin"): "sleep" waits with ``time.sleep`` (no CPU used, so
    more tasks than cores can overlap); "spin" busy-loops on one CPU until ``time.perf_counter``
    has advanced by the cost (like a real calculation, it competes for cores).
    ``fault`` (mapping, default none) and ``state_dir`` (directory path): fault injection, below.

Fault injection
    ``fault`` is a mapping with these keys:

    ``kind`` (required): what happens to a selected task --
    "raise": ``RuntimeError("synthetic fault")`` (QCEngine returns a FailedOperation);
    "exit": the process ends at once with ``os._exit(3)``;
    "segfault": the process sends itself ``SIGSEGV``;
    "hang": the task sleeps forever;
    "oom": the task allocates (and touches) memory in 100 MB chunks until ``MemoryError`` or the
    operating system's OOM killer stops it, but at most ``oom_gib`` GiB (default 64), after which
    it raises ``MemoryError`` itself;
    "nan": the task "succeeds" with NaN in its energy, gradient and Hessian (a QC program gone wrong
    without saying so: mbe_mpi must fail such a task, never assemble it).

    Selection -- the harness sees only the task's molecule, not QCManyBody's label, so tasks are
    selected by the molecule. Optional keys, all of which must match (none given: every task):
    ``when_natoms_real`` (int or list of ints): number of real atoms of the task molecule (for
    equal-size fragments this picks an n-body level: 6 = the dimers of a water cluster);
    ``when_natoms_ghost`` (int or list of ints): number of ghost atoms (0 = no counterpoise ghosts);
    ``when_hash`` (str or list of str): ``Molecule.get_hash()`` of the task molecule, to pick one
    task exactly.

    ``attempts`` (int >= 1) makes a fault transient: it fires only for the first ``attempts``
    runs of each selected molecule, counted across processes (and machines sharing the file
    system) in the directory given by the keyword ``state_dir``. Each firing first claims a counter
    file ``<state_dir>/<molecule hash>.<n>`` (n = 1 .. attempts), created atomically with
    ``O_CREAT | O_EXCL``; when all ``attempts`` files exist the task runs normally. The directory
    is created if missing. The count is per molecule (not per driver or keyword set). Without
    ``state_dir`` the fault fires every time, whatever ``attempts`` says; without ``attempts`` it
    fires every time, too. The fault fires after the task's cost has been spent.

Failures
    Bad input in :meth:`SyntheticHarness.compute` raises ``qcengine.exceptions.InputError`` (QCEngine
    turns it into a FailedOperation); :meth:`SyntheticHarness.check_model` refuses a bad
    method/basis/driver/keyword up front with :class:`mbe_mpi.errors.InputError`, one sentence each.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Mapping
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from qcengine.exceptions import InputError as QCEngineInputError
from qcengine.programs.model import ProgramHarness

from .common import driver_name, normalise_keyword, refuse

if TYPE_CHECKING:
    from qcelemental.models.v2 import AtomicInput, AtomicResult, Molecule
    from qcengine.config import TaskConfig

#: version of the *model* (the formula above); change it whenever the numbers change
SYNTHETIC_MODEL_VERSION = "1.0"

# parameters of the energy; see the module docstring
GAUSS_A = 0.05  # bohr**-2, width of the embedding density
GHOST_WEIGHT = 0.3  # weight of a ghost atom in the embedding density
EMBED_C = 0.1  # hartree, embedding strength (times sqrt(Z))
ATOM_E = -0.5  # hartree per unit of Z, one-body reference energy
PAIR_K = 0.02  # hartree*bohr, screened pair repulsion (times sqrt(Z_i Z_j))
PAIR_B = 1.0  # bohr**-1, screening of the pair repulsion
CHARGE_C = 0.1  # hartree, charge term C * Q**2

_METHOD = "synthetic"
_DRIVERS: tuple[str, ...] = ("energy", "gradient", "hessian")
_KEYWORDS: tuple[str, ...] = ("seconds", "exponent", "mode", "fault", "state_dir")
_MODES: tuple[str, ...] = ("sleep", "spin")
_FAULT_KINDS: tuple[str, ...] = ("raise", "exit", "segfault", "hang", "oom", "nan")
_FAULT_KEYS: tuple[str, ...] = ("kind", "when_natoms_real", "when_natoms_ghost", "when_hash", "attempts", "oom_gib")
_OOM_CHUNK = 100 * 1000 * 1000  # bytes
_EXIT_CODE = 3
_ROUTINE = "mbe_mpi.harnesses.synthetic"


# ----------------------------------------------------------------------------------------------
# input checking
# ----------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _int_list(value: Any) -> list[int] | None:
    """``value`` as a list of ints >= 0 (a single int is a one-element list), or None if it is not one."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if items and all(_is_int(v) and v >= 0 for v in items):
        return [int(v) for v in items]
    return None


def _str_list(value: Any) -> list[str] | None:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if items and all(isinstance(v, str) and v for v in items):
        return items
    return None


def _fault_problem(fault: Any) -> str | None:
    """Sentence describing what is wrong with the ``fault`` keyword, or None if fine."""
    if fault is None:
        return None
    if not isinstance(fault, Mapping):
        return f"synthetic keyword 'fault' must be a mapping with at least a 'kind', not {fault!r}"
    keys = {normalise_keyword(k): v for k, v in fault.items()}
    for key in keys:
        if key not in _FAULT_KEYS:
            return f"unknown key {key!r} in synthetic keyword 'fault'; accepted keys: {', '.join(_FAULT_KEYS)}"
    kind = keys.get("kind")
    if not (isinstance(kind, str) and kind.strip().lower() in _FAULT_KINDS):
        return f"synthetic 'fault' needs a 'kind', one of {', '.join(_FAULT_KINDS)}, not {kind!r}"
    for key in ("when_natoms_real", "when_natoms_ghost"):
        if key in keys and _int_list(keys[key]) is None:
            return f"synthetic fault key {key!r} must be an integer >= 0 or a list of them, not {keys[key]!r}"
    if "when_hash" in keys and _str_list(keys["when_hash"]) is None:
        shown = keys["when_hash"]
        return f"synthetic fault key 'when_hash' must be a molecule hash string or a list of them, not {shown!r}"
    if "attempts" in keys and not (_is_int(keys["attempts"]) and keys["attempts"] >= 1):
        return f"synthetic fault key 'attempts' must be an integer >= 1, not {keys['attempts']!r}"
    if "oom_gib" in keys and not (_is_number(keys["oom_gib"]) and keys["oom_gib"] > 0):
        return f"synthetic fault key 'oom_gib' must be a number > 0 (GiB), not {keys['oom_gib']!r}"
    return None


def _keyword_problem(name: str, value: Any) -> str | None:
    """Sentence describing what is wrong with ``value`` for keyword ``name``, or None if fine."""
    if name == "seconds" and not (_is_number(value) and value >= 0):
        return f"synthetic keyword 'seconds' must be a number >= 0, not {value!r}"
    if name == "exponent" and not _is_number(value):
        return f"synthetic keyword 'exponent' must be a finite number, not {value!r}"
    if name == "mode" and not (isinstance(value, str) and value.strip().lower() in _MODES):
        return f"synthetic keyword 'mode' must be one of {', '.join(_MODES)}, not {value!r}"
    if name == "state_dir" and not (value is None or (isinstance(value, (str, os.PathLike)) and str(value).strip())):
        return f"synthetic keyword 'state_dir' must be a directory path, not {value!r}"
    if name == "fault":
        return _fault_problem(value)
    return None


def _model_problem(method: Any, basis: Any, driver: Any, keywords: Mapping[str, Any] | None) -> str | None:
    """One readable sentence saying what is wrong with this model chemistry, or None if it can run."""
    if not (isinstance(method, str) and method.strip().lower() == _METHOD):
        return f"program synthetic cannot do method {method!r}; its only method is {_METHOD!r}"
    if not (basis is None or (isinstance(basis, str) and not basis.strip())):
        shown = basis if isinstance(basis, str) else getattr(basis, "name", type(basis).__name__)
        return f"program synthetic was given basis {shown!r}, but the synthetic model has no basis; leave it empty"
    drv = driver_name(driver)
    if drv not in _DRIVERS:
        return f"program synthetic cannot do driver {drv!r}; available drivers: {', '.join(_DRIVERS)}"
    for key, value in (keywords or {}).items():
        name = normalise_keyword(key)
        if name not in _KEYWORDS:
            return f"unknown synthetic keyword {key!r}; accepted keywords: {', '.join(_KEYWORDS)}"
        problem = _keyword_problem(name, value)
        if problem:
            return problem
    return None


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------


def _pair_derivatives(f1: np.ndarray, f2: np.ndarray | None, d: np.ndarray, hessian: bool):
    """Gradient (and Hessian) of a pair sum ``sum_{i<j} c_ij f(s_ij)``, ``s = r**2``, ``d[i, j] = x_i - x_j``.

    ``f1 = c * f'(s)`` and ``f2 = c * f''(s)`` (symmetric, zero diagonal; derivatives with respect
    to ``s``). Per pair: d/dx_i = 2 f' d;  d2/dx_i dx_i = 4 f'' d d^T + 2 f' I = -d2/dx_i dx_j.
    """
    gradient = 2.0 * np.einsum("ij,ijk->ik", f1, d)
    if not hessian:
        return gradient, None
    n = d.shape[0]
    blocks = 4.0 * f2[:, :, None, None] * d[:, :, :, None] * d[:, :, None, :]
    blocks += 2.0 * f1[:, :, None, None] * np.eye(3)
    hess = -blocks.transpose(0, 2, 1, 3).copy()  # (i, a, j, b)
    idx = np.arange(n)
    hess[idx, :, idx, :] = blocks.sum(axis=1)
    return gradient, hess.reshape(3 * n, 3 * n)


# One function on purpose (longer than our usual 60 lines): the energy and its analytic derivatives
# read top to bottom as the formula in the module docstring, sharing every intermediate.
def synthetic_model(
    geometry: np.ndarray, numbers: np.ndarray, real: np.ndarray, charge: float, order: int = 0
) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """Energy, and for ``order`` >= 1 the gradient, for ``order`` 2 the Hessian, of the synthetic model.

    ``geometry`` (natom, 3) in bohr; ``numbers`` atomic numbers; ``real`` boolean mask (False =
    ghost); ``charge`` the molecular charge. See the module docstring for the formula.
    """
    x = np.asarray(geometry, dtype=float).reshape(-1, 3)
    n = x.shape[0]
    m = np.asarray(real, dtype=bool).reshape(n)
    z = np.asarray(numbers, dtype=float).reshape(n)
    mf = m.astype(float)
    off = ~np.eye(n, dtype=bool)

    d = x[:, None, :] - x[None, :, :]  # d[i, j] = x_i - x_j
    s = np.einsum("ijk,ijk->ij", d, d)

    # embedding: E_emb = sum_i real F_i(rho_i), F_i(rho) = -C sqrt(Z_i) sqrt(1 + rho)
    w = np.where(m, 1.0, GHOST_WEIGHT)
    phi = np.where(off, np.exp(-GAUSS_A * s), 0.0)
    rho = (phi * w[None, :]).sum(axis=1)
    c = EMBED_C * np.sqrt(z) * mf
    root = np.sqrt(1.0 + rho)
    e_embed = -(c * root).sum()

    # screened pair repulsion between real atoms
    kmat = np.where(off & m[:, None] & m[None, :], PAIR_K * np.sqrt(z[:, None] * z[None, :]), 0.0)
    pair = kmat != 0.0
    r = np.sqrt(np.where(pair, s, 1.0))
    ebr = np.exp(-PAIR_B * r)
    e_pair = 0.5 * (kmat * ebr / r).sum()

    energy = float(ATOM_E * (z * mf).sum() + e_embed + e_pair + CHARGE_C * charge * charge)
    if order < 1:
        return energy, None, None
    hessian = order >= 2

    # embedding as a pair sum with frozen F'_i:  sum_i F'_i rho_i = sum_{i<j} (F'_i w_j + F'_j w_i) phi_ij
    fp = -0.5 * c / root  # F'_i (zero for ghosts)
    cemb = fp[:, None] * w[None, :] + fp[None, :] * w[:, None]
    g_emb, h_emb = _pair_derivatives(
        cemb * (-GAUSS_A) * phi, cemb * (GAUSS_A * GAUSS_A) * phi if hessian else None, d, hessian
    )
    # pair term f(s) = exp(-B r)/r: f' = -e (Br + 1) / (2 r^3), f'' = e (B^2 r^2 + 3 B r + 3) / (4 r^5)
    br = PAIR_B * r
    k1 = np.where(pair, -kmat * ebr * (br + 1.0) / (2.0 * r**3), 0.0)
    k2 = np.where(pair, kmat * ebr * (br * br + 3.0 * br + 3.0) / (4.0 * r**5), 0.0) if hessian else None
    g_pair, h_pair = _pair_derivatives(k1, k2, d, hessian)
    gradient = g_emb + g_pair
    if not hessian:
        return energy, gradient, None

    # the F''_i (d rho_i)(d rho_i)^T part of the embedding Hessian
    fpp = 0.25 * c / root**3  # F''_i (zero for ghosts)
    gmat = (2.0 * (-GAUSS_A) * phi * w[None, :])[:, :, None] * d  # w_j phi'(s_ij) 2 (x_i - x_j)
    jac = -gmat  # jac[i, l] = d rho_i / d x_l
    idx = np.arange(n)
    jac[idx, idx, :] = gmat.sum(axis=1)
    h_rho = np.einsum("i,ika,ilb->kalb", fpp, jac, jac).reshape(3 * n, 3 * n)
    hess = h_emb + h_pair + h_rho
    return energy, gradient, 0.5 * (hess + hess.T)  # exactly symmetric (the einsum above is only to rounding)


# ----------------------------------------------------------------------------------------------
# cost and faults
# ----------------------------------------------------------------------------------------------


def _spend(seconds: float, mode: str) -> None:
    if seconds <= 0:
        return
    if mode == "spin":
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    else:
        time.sleep(seconds)


def _fault_selected(fault: Mapping[str, Any], mol: Molecule, nreal: int, nghost: int) -> bool:
    if "when_natoms_real" in fault and nreal not in _int_list(fault["when_natoms_real"]):
        return False
    if "when_natoms_ghost" in fault and nghost not in _int_list(fault["when_natoms_ghost"]):
        return False
    if "when_hash" in fault and mol.get_hash() not in _str_list(fault["when_hash"]):
        return False
    return True


def _claim_firing(state_dir: str, key: str, attempts: int, kind: str) -> bool:
    """Atomically claim one of ``attempts`` counter files for ``key``; False when all are taken."""
    os.makedirs(state_dir, exist_ok=True)
    for n in range(1, attempts + 1):
        path = os.path.join(state_dir, f"{key}.{n}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            os.write(fd, f"{kind} pid={os.getpid()} time={time.time():.6f}\n".encode())
        finally:
            os.close(fd)
        return True
    return False


def _fire(kind: str, oom_gib: float) -> None:
    if kind == "nan":
        return  # the caller poisons the result
    if kind == "raise":
        raise RuntimeError("synthetic fault")
    if kind == "exit":
        os._exit(_EXIT_CODE)
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(60)  # the signal is delivered asynchronously; never return normally
        os._exit(_EXIT_CODE)
    if kind == "hang":
        while True:
            time.sleep(3600)
    if kind == "oom":
        hoard = []
        cap = oom_gib * 2**30
        try:
            while len(hoard) * _OOM_CHUNK < cap:
                chunk = bytearray(_OOM_CHUNK)  # zero-filled: every page is written
                chunk[::4096] = b"\x01" * len(range(0, _OOM_CHUNK, 4096))
                hoard.append(chunk)
        except MemoryError:
            hoard.clear()
            raise MemoryError("synthetic fault: out of memory") from None
        hoard.clear()
        raise MemoryError(f"synthetic fault: allocated the cap of oom_gib={oom_gib} GiB")
    raise RuntimeError(f"unknown synthetic fault kind {kind!r}")  # unreachable after validation


# ----------------------------------------------------------------------------------------------
# the harness
# ----------------------------------------------------------------------------------------------


def _maybe_fire(keywords: dict[str, Any], mol: Any, nreal: int, nghost: int) -> bool:
    """The configured fault, if this task is selected (and, when transient, still has firings left).

    True when the result is to be poisoned with NaN (fault kind "nan").
    """
    fault = keywords.get("fault")
    if fault is None:
        return False
    fault = {normalise_keyword(k): v for k, v in fault.items()}
    kind = fault["kind"].strip().lower()
    if not _fault_selected(fault, mol, nreal, nghost):
        return False
    state_dir = keywords.get("state_dir")
    if state_dir is not None and "attempts" in fault:
        if not _claim_firing(os.fspath(state_dir), mol.get_hash(), int(fault["attempts"]), kind):
            return False
    _fire(kind, float(fault.get("oom_gib", 64)))
    return kind == "nan"


class SyntheticHarness(ProgramHarness):
    """QCEngine program "synthetic": a synthetic many-body model with tunable cost and faults.

    Not chemistry; see the module docstring for the formula, keywords and fault injection.
    """

    _defaults: ClassVar[dict[str, Any]] = {
        "name": "synthetic",
        "scratch": False,
        "thread_safe": True,
        "thread_parallel": False,
        "node_parallel": False,
        "managed_memory": False,
    }
    version_cache: ClassVar[dict[str, str]] = {}

    @staticmethod
    def found(raise_error: bool = False) -> bool:
        """Always available: the model is plain numpy."""
        return True

    def get_version(self) -> str:
        """Version of the synthetic model's formula (not of a QC program)."""
        return SYNTHETIC_MODEL_VERSION

    def check_model(self, method: str, basis: str | None, driver: str, keywords: dict[str, Any] | None) -> None:
        """Refuse, before any QC work, what this harness cannot run (InputError naming the value)."""
        refuse(_model_problem(method, basis, driver, keywords))

    @staticmethod
    def expected_seconds(keywords: Mapping[str, Any], natom: int) -> float:
        """The cost this program spends on a task of ``natom`` atoms (real and ghost): known exactly,
        which lets the scheduler's simulator be checked against real runs."""
        keywords = {normalise_keyword(k): v for k, v in keywords.items()}
        return float(keywords.get("seconds", 0.0)) * float(natom) ** float(keywords.get("exponent", 0.0))

    def compute(self, input_data: AtomicInput, config: TaskConfig) -> AtomicResult:
        """Spend the configured cost, maybe fire a fault, and return the synthetic model's result."""
        from qcelemental.models.v2 import AtomicResult, Provenance

        spec = input_data.specification
        problem = _model_problem(spec.model.method, spec.model.basis, spec.driver, spec.keywords)
        if problem:
            raise QCEngineInputError(problem)
        driver = driver_name(spec.driver)
        keywords = {normalise_keyword(k): v for k, v in spec.keywords.items()}

        mol = input_data.molecule
        natom = len(mol.symbols)
        real = np.asarray(mol.real, dtype=bool).reshape(natom)
        nreal = int(real.sum())
        if nreal == 0:
            raise QCEngineInputError("program synthetic was given a molecule whose atoms are all ghosts")
        geometry = np.asarray(mol.geometry, dtype=float).reshape(natom, 3)
        if nreal > 1:  # the pair term is singular there
            xr = geometry[real]
            dist = np.sqrt(((xr[:, None, :] - xr[None, :, :]) ** 2).sum(axis=-1))
            if dist[~np.eye(nreal, dtype=bool)].min() < 1e-6:
                raise QCEngineInputError("program synthetic was given a molecule with two real atoms on one spot")

        cost = self.expected_seconds(keywords, natom)
        _spend(cost, str(keywords.get("mode", "sleep")).strip().lower())

        poisoned = _maybe_fire(keywords, mol, nreal, natom - nreal)

        order = {"energy": 0, "gradient": 1, "hessian": 2}[driver]
        energy, gradient, hessian = synthetic_model(
            geometry, np.asarray(mol.atomic_numbers), real, float(mol.molecular_charge), order
        )
        if poisoned:
            energy, gradient, hessian = (None if value is None else value * np.nan for value in (energy, gradient, hessian))
            energy = float(energy)
        properties: dict[str, Any] = {"calcinfo_natom": natom, "return_energy": energy}
        return_result: Any = energy
        if gradient is not None:
            properties["return_gradient"] = gradient
            return_result = gradient
        if hessian is not None:
            properties["return_hessian"] = hessian
            return_result = hessian

        return AtomicResult(
            input_data=input_data,
            molecule=mol,
            properties=properties,
            return_result=return_result,
            stdout=None,
            success=True,
            provenance=Provenance(creator="mbe_mpi-synthetic", version=self.get_version(), routine=_ROUTINE),
            extras={},
        )
