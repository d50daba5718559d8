"""Unit tests for the PySCF QCEngine harness (mbe_mpi.harnesses.pyscf).

Numbers are checked against PySCF called directly (or finite differences), so a harness that built the
wrong molecule, dropped a keyword or mislabelled a property fails here. Molecules are tiny (water,
OH, STO-3G) so the whole file runs in seconds on a shared 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pyscf = pytest.importorskip("pyscf")

import qcengine  # noqa: E402
from pyscf import gto, lib, mp, scf  # noqa: E402
from qcelemental.models.v2 import AtomicInput, Molecule  # noqa: E402

import mbe_mpi.harnesses.pyscf as harness_mod  # noqa: E402
from mbe_mpi.errors import InputError  # noqa: E402
from mbe_mpi.harnesses.pyscf import PySCFHarness  # noqa: E402

# water monomer (bohr) and a second water ~5.6 bohr away
WATER_A = [("O", (0.0, 0.0, -0.1294)), ("H", (0.0, 1.4941, 1.0274)), ("H", (0.0, -1.4941, 1.0274))]
WATER_B = [("O", (0.0, 0.0, 5.6)), ("H", (1.4941, 0.0, 6.7568)), ("H", (-1.4941, 0.0, 6.7568))]
OH = [("O", (0.0, 0.0, 0.0)), ("H", (0.0, 0.0, 1.8324))]


@pytest.fixture(scope="module", autouse=True)
def _registered():
    """Make "pyscf" a QCEngine program even if the mbe_mpi package did not register it yet."""
    if "pyscf" not in qcengine.list_all_programs():
        qcengine.register_program(PySCFHarness())
    yield


def _molecule(atoms, real=None, fragments=None, charge=0.0, multiplicity=1):
    symbols = [a[0] for a in atoms]
    geometry = np.array([a[1] for a in atoms], dtype=float).ravel()
    kwargs = {}
    if fragments is not None:
        kwargs["fragments"] = fragments
    if real is not None:
        kwargs["real"] = real
    return Molecule(
        symbols=symbols,
        geometry=geometry,
        molecular_charge=charge,
        molecular_multiplicity=multiplicity,
        **kwargs,
    )


def _input(molecule, method="hf", basis="sto-3g", driver="energy", keywords=None):
    return AtomicInput(
        molecule=molecule,
        specification={
            "driver": driver,
            "model": {"method": method, "basis": basis},
            "keywords": keywords if keywords is not None else {"conv_tol": 1e-11},
        },
    )


def _run(inp, **kwargs):
    result = qcengine.compute(inp, "pyscf", **kwargs)
    assert result.success, result.error.error_message
    return result


def _direct_mol(atoms, charge=0, spin=0, basis="sto-3g"):
    return gto.M(atom=atoms, unit="Bohr", basis=basis, charge=charge, spin=spin, verbose=0)


@pytest.fixture(scope="module")
def water():
    return _molecule(WATER_A)


# ---------------------------------------------------------------------------------------------- energies


def test_hf_energy_matches_direct_pyscf(water, capsys):
    result = _run(_input(water))
    capsys.readouterr()  # quiet: nothing from PySCF on the terminal
    mf = scf.RHF(_direct_mol(WATER_A))
    mf.conv_tol = 1e-11
    e_ref = mf.kernel()

    props = result.properties
    assert result.return_result == pytest.approx(e_ref, abs=1e-9)
    assert props.return_energy == result.return_result
    assert props.scf_total_energy == result.return_result
    assert props.nuclear_repulsion_energy == pytest.approx(mf.energy_nuc(), abs=1e-12)
    total = props.scf_one_electron_energy + props.scf_two_electron_energy + props.nuclear_repulsion_energy
    assert total == pytest.approx(props.scf_total_energy, abs=1e-9)
    assert (props.calcinfo_nbasis, props.calcinfo_nmo, props.calcinfo_natom) == (7, 7, 3)
    assert (props.calcinfo_nalpha, props.calcinfo_nbeta) == (5, 5)
    assert props.scf_iterations > 1
    assert props.scf_xc_energy is None
    assert result.provenance.creator == "PySCF"
    assert result.provenance.routine == "mbe_mpi.harnesses.pyscf"
    assert result.stdout is None
    out = capsys.readouterr()
    assert out.out == ""


def test_quiet_by_default_and_verbose_log_goes_to_result(water, capsys):
    _run(_input(water))
    assert capsys.readouterr().out == ""
    result = _run(_input(water, keywords={"verbose": 4}))
    assert capsys.readouterr().out == ""
    assert result.stdout is not None and "converged SCF energy" in result.stdout


def test_dft_energy_matches_direct_pyscf_and_grid_keyword(water):
    from pyscf import dft

    result = _run(_input(water, method="B3LYP", keywords={"conv_tol": 1e-11, "grids_level": 2}))
    mf = dft.RKS(_direct_mol(WATER_A), xc="b3lyp")
    mf.grids.level = 2
    mf.conv_tol = 1e-11
    assert result.return_result == pytest.approx(mf.kernel(), abs=1e-9)
    props = result.properties
    total = (
        props.scf_one_electron_energy
        + props.scf_two_electron_energy
        + props.scf_xc_energy
        + props.nuclear_repulsion_energy
    )
    assert total == pytest.approx(props.scf_total_energy, abs=1e-9)
    # a different grid gives a (slightly) different number: the keyword really reached PySCF
    coarse = _run(_input(water, method="b3lyp", keywords={"conv_tol": 1e-11, "grids_level": 0}))
    assert coarse.return_result != result.return_result


def test_density_fit_changes_energy_slightly(water):
    exact = _run(_input(water)).return_result
    fitted = _run(_input(water, keywords={"conv_tol": 1e-11, "density_fit": True})).return_result
    assert fitted != exact
    assert fitted == pytest.approx(exact, abs=1e-3)


def test_mp2_properties_match_direct_pyscf(water):
    result = _run(_input(water, method="MP2"))
    props = result.properties
    mf = scf.RHF(_direct_mol(WATER_A))
    mf.conv_tol = 1e-11
    mf.kernel()
    e_corr_ref = mp.MP2(mf).kernel()[0]

    assert props.mp2_correlation_energy == pytest.approx(e_corr_ref, abs=1e-9)
    assert props.mp2_correlation_energy < 0
    assert props.mp2_correlation_energy == pytest.approx(props.return_energy - props.scf_total_energy, abs=1e-12)
    assert props.mp2_total_energy == props.return_energy == result.return_result
    ss, os_ = props.mp2_same_spin_correlation_energy, props.mp2_opposite_spin_correlation_energy
    assert ss + os_ == pytest.approx(props.mp2_correlation_energy, abs=1e-12)

    frozen = _run(_input(water, method="mp2", keywords={"conv_tol": 1e-11, "frozen": 1})).properties
    assert frozen.scf_total_energy == pytest.approx(props.scf_total_energy, abs=1e-10)
    assert props.mp2_correlation_energy < frozen.mp2_correlation_energy < 0


# ---------------------------------------------------------------------------------------------- derivatives


def test_hf_gradient_matches_finite_difference(water):
    grad = np.asarray(_run(_input(water, driver="gradient")).return_result)
    assert grad.shape == (3, 3)
    assert np.allclose(grad.sum(axis=0), 0.0, atol=1e-7)  # translational invariance

    step = 1e-3
    for atom, xyz in ((0, 2), (1, 1)):
        energies = []
        for sign in (+1, -1):
            atoms = [(s, list(c)) for s, c in WATER_A]
            atoms[atom][1][xyz] += sign * step
            energies.append(_run(_input(_molecule(atoms))).return_result)
        fd = (energies[0] - energies[1]) / (2 * step)
        assert grad[atom, xyz] == pytest.approx(fd, abs=2e-6)


def test_mp2_gradient_matches_direct_pyscf(water):
    result = _run(_input(water, method="mp2", driver="gradient"))
    mf = scf.RHF(_direct_mol(WATER_A))
    mf.conv_tol = 1e-11
    mf.kernel()
    ref = mp.MP2(mf).run().nuc_grad_method().kernel()
    assert np.allclose(np.asarray(result.return_result), ref, atol=1e-7)
    assert np.allclose(result.properties.return_gradient, ref, atol=1e-7)


def test_hf_hessian_shape_symmetry_and_invariance(water):
    result = _run(_input(water, driver="hessian"))
    hess = np.asarray(result.return_result)
    assert hess.shape == (9, 9)
    assert np.allclose(hess, hess.T, atol=1e-6)
    # moving the whole molecule changes no force: each 3x3 block column sums to zero over atoms
    assert np.allclose(hess.reshape(3, 3, 3, 3).sum(axis=0), 0.0, atol=1e-5)
    assert result.properties.return_hessian.shape == (9, 9)
    assert result.properties.return_gradient.shape == (3, 3)


# ---------------------------------------------------------------------------------------------- molecules


def test_ghost_atoms_carry_basis_but_no_charge():
    dimer = _molecule(WATER_A + WATER_B, fragments=[[0, 1, 2], [3, 4, 5]])
    ghosted = _molecule(WATER_A + WATER_B, fragments=[[0, 1, 2], [3, 4, 5]], real=[True] * 3 + [False] * 3)
    bare = _run(_input(_molecule(WATER_A))).properties
    full = _run(_input(dimer)).properties
    cp = _run(_input(ghosted, driver="gradient"))
    props = cp.properties

    assert props.calcinfo_nbasis == full.calcinfo_nbasis == 2 * bare.calcinfo_nbasis
    assert (props.calcinfo_nalpha, props.calcinfo_nbeta) == (5, 5)
    assert props.calcinfo_natom == 6
    assert props.nuclear_repulsion_energy == pytest.approx(bare.nuclear_repulsion_energy, abs=1e-10)
    # BSSE: the partner's basis functions lower the monomer energy, by a little
    assert 0 < bare.return_energy - props.return_energy < 5e-3

    grad = np.asarray(cp.return_result)
    assert grad.shape == (6, 3)
    assert np.abs(grad[3:]).max() > 1e-6  # basis functions move with ghost centres
    assert np.allclose(grad.sum(axis=0), 0.0, atol=1e-7)


HI = [("I", (0.0, 0.0, 0.0)), ("H", (0.0, 0.0, 3.04))]


def test_a_basis_with_an_ecp_gets_it_on_real_atoms_and_ghosts_carry_functions_only():
    """def2-SVP describes iodine's valence only; without its ECP PySCF would compute nonsense."""
    result = _run(_input(_molecule(HI), basis="def2-svp"))
    direct = gto.M(atom=HI, unit="Bohr", basis="def2-svp", ecp="def2-svp", verbose=0)
    reference = scf.RHF(direct).set(conv_tol=1e-11).run()
    assert direct.nelectron == 26  # 28 core electrons of iodine in the ECP
    assert result.properties.calcinfo_nalpha == 13
    assert result.properties.return_energy == pytest.approx(reference.e_tot, abs=1e-9)

    # H with a ghost iodine: iodine's basis functions on the ghost, but neither its ECP nor its nucleus
    ghosted = _run(_input(_molecule(HI, real=[False, True], fragments=[[0], [1]], multiplicity=2),
                          basis="def2-svp")).properties
    assert ghosted.calcinfo_nbasis == result.properties.calcinfo_nbasis
    assert (ghosted.calcinfo_nalpha, ghosted.calcinfo_nbeta) == (1, 0)
    bare = _run(_input(_molecule(HI[1:], multiplicity=2), basis="def2-svp")).properties
    assert 0 < bare.return_energy - ghosted.return_energy < 5e-3
    assert ghosted.nuclear_repulsion_energy == pytest.approx(0.0, abs=1e-12)


def test_one_electron_molecules_run_and_a_hessian_without_beta_electrons_is_refused():
    """PySCF's one-electron UHF/ROHF shortcut leaves its energy summary empty; the harness fills it."""
    hydrogen = _molecule([("H", (0.0, 0.0, 0.0))], multiplicity=2)
    direct = scf.UHF(_direct_mol([("H", (0.0, 0.0, 0.0))], spin=1)).run().e_tot
    for reference in ("uhf", "rohf"):
        props = _run(_input(hydrogen, driver="gradient", keywords={"reference": reference})).properties
        assert props.return_energy == pytest.approx(direct, abs=1e-9)
        assert props.scf_one_electron_energy == props.return_energy and props.scf_two_electron_energy == 0.0
    result = qcengine.compute(_input(hydrogen, driver="hessian"), "pyscf")
    assert not result.success and result.error.error_type == "input_error"
    assert "both spins" in result.error.error_message


def test_check_elements_refuses_a_basis_that_lacks_an_element_of_the_molecule():
    harness = PySCFHarness()
    harness.check_elements("hf", "def2-svp", ["I", "H"], {})
    harness.check_elements("hf", "cc-pvdz", ["O", "H"], {})
    with pytest.raises(InputError, match=r"basis set 'cc-pvdz' has no functions for I, Xe"):
        harness.check_elements("hf", "cc-pvdz", ["I", "H", "Xe"], {})
    with pytest.raises(InputError, match=r"auxiliary basis 'cc-pvdz-jkfit' has no functions for I"):
        harness.check_elements("hf", "def2-svp", ["H", "I"], {"density_fit": True, "auxbasis": "cc-pvdz-jkfit"})


def test_open_shell_radical_uses_uhf_and_anion_works():
    radical = _run(_input(_molecule(OH, multiplicity=2))).properties
    assert (radical.calcinfo_nalpha, radical.calcinfo_nbeta) == (5, 4)
    uhf = scf.UHF(_direct_mol(OH, spin=1))
    uhf.conv_tol = 1e-11
    assert radical.return_energy == pytest.approx(uhf.kernel(), abs=1e-9)

    rohf = _run(_input(_molecule(OH, multiplicity=2), keywords={"conv_tol": 1e-11, "reference": "rohf"}))
    assert rohf.return_result >= radical.return_energy - 1e-9  # UHF is variationally lower

    anion = _run(_input(_molecule(OH, charge=-1.0))).properties
    assert (anion.calcinfo_nalpha, anion.calcinfo_nbeta) == (5, 5)
    rhf = scf.RHF(_direct_mol(OH, charge=-1))
    rhf.conv_tol = 1e-11
    assert anion.return_energy == pytest.approx(rhf.kernel(), abs=1e-9)

    ump2 = _run(_input(_molecule(OH, multiplicity=2), method="mp2")).properties
    assert ump2.mp2_correlation_energy < 0

    bad = qcengine.compute(_input(_molecule(OH, multiplicity=2), keywords={"reference": "rhf"}), "pyscf")
    assert not bad.success
    assert "closed-shell" in bad.error.error_message


# ---------------------------------------------------------------------------------------------- keywords, config


def test_scf_keywords_reach_pyscf(water, monkeypatch):
    seen = {}
    original = harness_mod._make_scf

    def spy(*args, **kwargs):
        mf = original(*args, **kwargs)
        seen["mf"] = mf
        return mf

    monkeypatch.setattr(harness_mod, "_make_scf", spy)
    keywords = {
        "conv_tol": 1e-11,
        "conv_tol_grad": 1e-7,
        "max_cycle": 77,
        "level_shift": 0.1,
        "diis_space": 6,
        "init_guess": "sap",
    }
    _run(_input(water, keywords=keywords))
    mf = seen["mf"]
    assert (mf.conv_tol, mf.conv_tol_grad, mf.max_cycle) == (1e-11, 1e-7, 77)
    assert (mf.level_shift, mf.diis_space, mf.init_guess) == (0.1, 6, "sap")

    # and conv_tol changes the work done
    loose = _run(_input(water, keywords={"conv_tol": 1e-3})).properties.scf_iterations
    tight = _run(_input(water, keywords={"conv_tol": 1e-12})).properties.scf_iterations
    assert loose < tight


def _threads_seen_inside(monkeypatch, ncores, cap):
    seen = []
    original = harness_mod._build_mole

    def spy(*args, **kwargs):
        seen.append(lib.num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(harness_mod, "_build_mole", spy)
    monkeypatch.setattr(harness_mod, "_LAUNCH_OMP_THREADS", cap)
    config = qcengine.config.get_config(task_config={"ncores": ncores})
    before = lib.num_threads()
    PySCFHarness().compute(_input(_molecule(WATER_A)), config)
    assert lib.num_threads() == before  # restored afterwards
    return seen[0]


def test_threads_follow_ncores_without_cap(monkeypatch):
    assert _threads_seen_inside(monkeypatch, ncores=2, cap=None) == 2


def test_threads_capped_by_launch_omp_num_threads(monkeypatch):
    assert _threads_seen_inside(monkeypatch, ncores=2, cap=1) == 1


_FIRST_IMPORT_IN_A_TASK = textwrap.dedent("""
    # A fresh process as QCManyBody's sequential loop is one: PySCF (and SciPy) first imported inside
    # qcengine.compute, which sets OMP_NUM_THREADS to ncores (2 here) around the task.
    import importlib.abc, json, os, sys
    seen = {}

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "scipy.linalg" and name not in seen:
                seen[name] = os.environ.get("OMP_NUM_THREADS")
            return None

    sys.meta_path.insert(0, Spy())
    import mbe_mpi, qcengine
    assert "scipy.linalg" not in sys.modules
    from qcelemental.models.v2 import AtomicInput, Molecule
    water = Molecule(symbols=["O", "H", "H"], geometry=[0, 0, -0.1294, 0, 1.4941, 1.0274, 0, -1.4941, 1.0274])
    task = AtomicInput(molecule=water, specification={"driver": "energy", "program": "pyscf",
                                                      "model": {"method": "hf", "basis": "sto-3g"}})
    qcengine.compute(task, "pyscf", raise_error=True, task_config={"ncores": 2})
    print(json.dumps({"omp_at_scipy_import": seen.get("scipy.linalg"), "omp_after": os.environ.get("OMP_NUM_THREADS"),
                      "threads": len(os.listdir("/proc/self/task"))}))
""")


def test_libraries_first_imported_inside_a_task_get_the_launch_thread_count():
    # Regression: SciPy's OpenBLAS, loaded during the first task under QCEngine's OMP_NUM_THREADS=ncores,
    # kept a second (spinning) thread in a run started with OMP_NUM_THREADS=1, and its eigensolver's last
    # bits then differed from mbe_mpi's workers' (4e-12 Eh on a (H2O)6 cc-pVDZ expansion).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OPENBLAS_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", _FIRST_IMPORT_IN_A_TASK], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["omp_at_scipy_import"] == "1"
    assert seen["omp_after"] == "1"  # QCEngine's value around the task is gone again
    if sys.platform == "linux" and (os.cpu_count() or 1) >= 2:
        assert seen["threads"] == 1  # no BLAS thread pool beside the main thread


def test_read_thread_cap():
    assert harness_mod._read_thread_cap(None) is None
    assert harness_mod._read_thread_cap("3") == 3
    assert harness_mod._read_thread_cap("4,2") == 4
    assert harness_mod._read_thread_cap("junk") is None
    assert harness_mod._read_thread_cap("0") is None


def test_memory_goes_to_mole_in_mb(monkeypatch):
    seen = {}
    original = harness_mod._build_mole

    def spy(*args, **kwargs):
        mol = original(*args, **kwargs)
        seen["max_memory"] = mol.max_memory
        return mol

    monkeypatch.setattr(harness_mod, "_build_mole", spy)
    config = qcengine.config.get_config(task_config={"ncores": 1, "memory": 1.5})
    PySCFHarness().compute(_input(_molecule(WATER_A)), config)
    assert seen["max_memory"] == pytest.approx(1536.0)


# ---------------------------------------------------------------------------------------------- failures


def test_unconverged_scf_is_a_failure(water):
    result = qcengine.compute(_input(water, keywords={"max_cycle": 1}), "pyscf")
    assert not result.success
    assert result.error.error_type == "convergence_error"
    assert "did not converge" in result.error.error_message


def test_bad_keyword_through_qcengine_is_input_error(water):
    result = qcengine.compute(_input(water, keywords={"conv_tol": 1e-8, "maxiter": 5}), "pyscf")
    assert not result.success
    assert result.error.error_type == "input_error"
    assert "maxiter" in result.error.error_message and "max_cycle" in result.error.error_message


@pytest.mark.parametrize(
    "method, basis, driver, keywords, expect",
    [
        ("ccsd", "sto-3g", "energy", {}, ["'ccsd'", "hf", "mp2", "b3lyp"]),
        ("b3lpy", "sto-3g", "energy", {}, ["'b3lpy'", "libxc"]),
        ("", "sto-3g", "energy", {}, ["method"]),
        ("mp2", "sto-3g", "hessian", {}, ["mp2", "hessian", "energy, gradient"]),
        ("hf", "sto-3g", "properties", {}, ["'properties'", "energy, gradient, hessian"]),
        ("hf", "cc-pvxz", "energy", {}, ["'cc-pvxz'", "cc-pvdz"]),
        ("hf", None, "energy", {}, ["needs a basis set"]),
        ("hf", "", "energy", {}, ["needs a basis set"]),
        ("hf", "sto-3g", "energy", {"maxiter": 3}, ["'maxiter'", "conv_tol", "max_cycle", "reference"]),
        ("hf", "sto-3g", "energy", {"reference": "ghf"}, ["'ghf'", "rhf, uhf, rohf"]),
        ("hf", "sto-3g", "energy", {"conv_tol": -1.0}, ["conv_tol", "-1.0"]),
        ("hf", "sto-3g", "energy", {"max_cycle": 2.5}, ["max_cycle", "integer"]),
        ("hf", "sto-3g", "energy", {"init_guess": "chkfile"}, ["init_guess", "minao"]),
        ("hf", "sto-3g", "energy", {"density_fit": "yes"}, ["density_fit"]),
        ("hf", "sto-3g", "energy", {"frozen": 1}, ["frozen", "mp2"]),
        ("hf", "sto-3g", "energy", {"grids_level": 3}, ["grids_level", "DFT"]),
        ("hf", "sto-3g", "hessian", {"reference": "rohf"}, ["rohf", "hessian"]),
        ("mp2", "sto-3g", "energy", {"reference": "rohf"}, ["rohf"]),
        ("mp2", "sto-3g", "gradient", {"density_fit": True}, ["density", "gradient"]),
    ],
)
def test_check_model_refuses(method, basis, driver, keywords, expect):
    with pytest.raises(InputError) as info:
        PySCFHarness().check_model(method, basis, driver, keywords)
    message = str(info.value)
    assert "\n" not in message
    for fragment in expect:
        assert fragment in message, message


@pytest.mark.parametrize(
    "method, basis, driver",
    [
        ("hf", "sto-3g", "hessian"),
        ("SCF", "STO-3G", "energy"),
        ("mp2", "cc-pvdz", "gradient"),
        ("b3lyp", "def2-svp", "hessian"),
        ("PBE0", "6-31g*", "gradient"),
        ("wb97x", "6-31G", "energy"),
        ("pbe", "aug-cc-pvdz", "energy"),
    ],
)
def test_check_model_accepts(method, basis, driver):
    PySCFHarness().check_model(method, basis, driver, {"conv_tol": 1e-8, "reference": "uhf"})


def test_harness_metadata():
    harness = PySCFHarness()
    assert harness.name == "pyscf"
    assert harness.found() is True
    assert harness.get_version() == pyscf.__version__
    assert (harness.thread_parallel, harness.node_parallel, harness.managed_memory) == (True, False, True)
    assert harness.thread_safe is False and harness.scratch is True  # temporary files go to the task scratch
