"""Tests of the tblite QCEngine harness (mbe_mpi/harnesses/tblite.py).

Reference numbers come from tblite's own ``Calculator`` called directly in the test, so the
harness is checked against the library, not against stored numbers.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import qcengine
from qcelemental.models.v2 import AtomicInput, AtomicResult, FailedOperation, Molecule

# tblite's OpenMP gradients are only bit-reproducible on one thread, and libgomp reads this once, at load
if "tblite" not in sys.modules:
    os.environ["OMP_NUM_THREADS"] = "1"
tblite_interface = pytest.importorskip("tblite.interface")


import mbe_mpi.harnesses.tblite as harness_mod  # noqa: E402
from mbe_mpi.errors import InputError as MBEInputError  # noqa: E402  (the class check_model raises)

TBLiteHarness = harness_mod.TBLiteHarness

# water and a water dimer, bohr; fragment A = atoms 0-2, fragment B = atoms 3-5
WATER_SYMBOLS = ["O", "H", "H"]
WATER_GEOM = np.array(
    [
        [0.0000000, 0.0000000, -0.1294769],
        [0.0000000, -1.4941317, 1.0274624],
        [0.0000000, 1.4941317, 1.0274624],
    ]
)
DIMER_GEOM_B = np.array(  # hydrogen-bond donor on the -z side of A, donating to A's oxygen
    [
        [0.0000000, 0.0000000, -5.6000000],
        [0.0000000, 0.0000000, -3.7700000],
        [1.7500000, 0.0000000, -6.2000000],
    ]
)
DIMER_SYMBOLS = WATER_SYMBOLS * 2
DIMER_GEOM = np.vstack([WATER_GEOM, DIMER_GEOM_B])


@pytest.fixture(scope="module", autouse=True)
def tblite_program():
    """Make sure QCEngine's "tblite" is *our* harness (register it if mbe_mpi did not already)."""
    registered_here = False
    if "tblite" not in qcengine.list_all_programs():
        qcengine.register_program(TBLiteHarness())
        registered_here = True
    # compared by name, not isinstance: a half-imported package may have registered an earlier copy of the class
    program_cls = type(qcengine.get_program("tblite", check=False))
    assert (program_cls.__module__, program_cls.__qualname__) == ("mbe_mpi.harnesses.tblite", "TBLiteHarness")
    yield
    if registered_here:
        qcengine.unregister_program("tblite")


def _water(**kwargs) -> Molecule:
    return Molecule(symbols=WATER_SYMBOLS, geometry=WATER_GEOM, **kwargs)


def _run(mol, method="GFN2-xTB", driver="energy", keywords=None, basis=None):
    inp = AtomicInput(
        molecule=mol,
        specification={"driver": driver, "model": {"method": method, "basis": basis}, "keywords": keywords or {}},
    )
    return qcengine.compute(inp, "tblite", task_config={"ncores": 1}, raise_error=False)


def _ok(result) -> AtomicResult:
    assert isinstance(result, AtomicResult), getattr(result, "error", result)
    assert result.success
    return result


def _direct(numbers, positions, method="GFN2-xTB", charge=0.0, uhf=0):
    """tblite's own answer, quietly: (energy, gradient)."""
    calc = tblite_interface.Calculator(
        method,
        np.asarray(numbers),
        np.asarray(positions, dtype=float),
        charge=charge,
        uhf=uhf,
        color=False,
        logger=lambda _msg: None,
    )
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    return float(res.get("energy")), np.asarray(res.get("gradient"))


# --- agreement with tblite itself ----------------------------------------------------------------


def test_energy_equals_direct_calculator():
    res = _ok(_run(_water()))
    e_ref, _ = _direct([8, 1, 1], WATER_GEOM)
    assert res.return_result == e_ref  # bit for bit
    assert res.properties.return_energy == e_ref
    assert res.properties.calcinfo_natom == 3
    assert res.properties.calcinfo_nbasis == 6  # GFN2: O 2s2p -> 4, H 1s each
    assert res.properties.return_gradient is None  # energy driver
    assert res.provenance.creator == "tblite"
    assert res.provenance.routine == "mbe_mpi.harnesses.tblite"
    assert res.provenance.version == TBLiteHarness().get_version()


def test_gradient_equals_direct_and_finite_difference():
    res = _ok(_run(_water(), driver="gradient"))
    e_ref, g_ref = _direct([8, 1, 1], WATER_GEOM)
    assert res.return_result.shape == (3, 3)
    np.testing.assert_array_equal(res.return_result, g_ref)
    np.testing.assert_array_equal(res.properties.return_gradient, g_ref)
    assert res.properties.return_energy == e_ref

    # central differences of the harness's own energies, on a few coordinates
    step = 1.0e-4
    for atom, xyz in [(0, 2), (1, 1), (2, 2)]:
        energies = []
        for sign in (+1, -1):
            geom = WATER_GEOM.copy()
            geom[atom, xyz] += sign * step
            energies.append(_ok(_run(Molecule(symbols=WATER_SYMBOLS, geometry=geom))).return_result)
        fd = (energies[0] - energies[1]) / (2 * step)
        assert abs(fd - res.return_result[atom, xyz]) < 1e-5, (atom, xyz, fd, res.return_result[atom, xyz])


# --- ghost atoms -----------------------------------------------------------------------------------


def _dimer(real):
    return Molecule(symbols=DIMER_SYMBOLS, geometry=DIMER_GEOM, fragments=[[0, 1, 2], [3, 4, 5]], real=real)


def test_ghost_partner_gives_bare_monomer_energy_and_gradient():
    bare_a = _ok(_run(_water(), driver="gradient"))
    a_in_ab = _ok(_run(_dimer([True] * 3 + [False] * 3), driver="gradient"))
    assert a_in_ab.return_result.shape == (6, 3)
    assert a_in_ab.properties.calcinfo_natom == 6
    assert a_in_ab.properties.return_energy == bare_a.properties.return_energy
    np.testing.assert_array_equal(a_in_ab.return_result[:3], bare_a.return_result)
    np.testing.assert_array_equal(a_in_ab.return_result[3:], 0.0)

    # and really different from the full dimer (i.e. run_schema's behaviour would be caught)
    full = _ok(_run(_dimer([True] * 6)))
    assert abs(full.return_result - bare_a.properties.return_energy) > 1.0


def test_qcmanybody_cp_equals_nocp():
    """The documented consequence, through QCManyBody's own sequential computer."""
    from qcmanybody.models.v2 import ManyBodyInput
    from qcmanybody.v2 import ManyBodyComputer

    mbe_input = ManyBodyInput(
        molecule=_dimer([True] * 6),
        specification={
            "driver": "gradient",
            "keywords": {"bsse_type": ["cp", "nocp"], "return_total_data": True},
            "specification": {"(auto)": {"program": "tblite", "model": {"method": "GFN2-xTB"}, "driver": "energy"}},
        },
    )
    props = ManyBodyComputer.from_manybodyinput(mbe_input).properties
    assert props.cp_corrected_interaction_energy == props.nocp_corrected_interaction_energy
    assert -0.02 < props.nocp_corrected_interaction_energy < -0.002  # a hydrogen bond, a few kcal/mol
    np.testing.assert_array_equal(props.cp_corrected_total_gradient, props.nocp_corrected_total_gradient)


def test_ghost_first_keeps_row_order():
    bare_b = _ok(_run(Molecule(symbols=WATER_SYMBOLS, geometry=DIMER_GEOM_B), driver="gradient"))
    b_in_ab = _ok(_run(_dimer([False] * 3 + [True] * 3), driver="gradient"))
    assert b_in_ab.properties.return_energy == bare_b.properties.return_energy
    np.testing.assert_array_equal(b_in_ab.return_result[:3], 0.0)
    np.testing.assert_array_equal(b_in_ab.return_result[3:], bare_b.return_result)
    np.testing.assert_array_equal(b_in_ab.properties.return_gradient, b_in_ab.return_result)


def test_all_ghosts_is_an_input_error():
    res = _run(_dimer([False] * 6))
    assert isinstance(res, FailedOperation)
    assert res.error.error_type == "input_error"
    assert "all ghosts" in res.error.error_message


# --- methods, charge, spin, keywords ---------------------------------------------------------------


def test_gfn1_and_gfn2_differ_and_gfn1_equals_direct():
    e1 = _ok(_run(_water(), method="GFN1-xTB")).return_result
    e2 = _ok(_run(_water(), method="GFN2-xTB")).return_result
    assert e1 == _direct([8, 1, 1], WATER_GEOM, method="GFN1-xTB")[0]
    assert abs(e1 - e2) > 1e-3


@pytest.mark.parametrize("spelling", ["gfn2-xtb", "GFN2-XTB", "gfn2xtb", "Gfn2_xTB"])
def test_method_spelling_is_case_and_dash_insensitive(spelling):
    assert _ok(_run(_water(), method=spelling)).return_result == _direct([8, 1, 1], WATER_GEOM)[0]


def test_hydroxide_anion():
    geom = WATER_GEOM[:2]
    res = _ok(_run(Molecule(symbols=["O", "H"], geometry=geom, molecular_charge=-1), driver="gradient"))
    e_ref, g_ref = _direct([8, 1], geom, charge=-1.0, uhf=0)
    assert res.properties.return_energy == e_ref
    np.testing.assert_array_equal(res.return_result, g_ref)


def test_oh_radical_doublet():
    geom = WATER_GEOM[:2]
    res = _ok(_run(Molecule(symbols=["O", "H"], geometry=geom, molecular_multiplicity=2)))
    assert res.return_result == _direct([8, 1], geom, charge=0.0, uhf=1)[0]


def test_triplet_differs_from_singlet():
    """uhf really reaches tblite: O2 triplet and singlet differ."""
    geom = [[0.0, 0.0, 0.0], [0.0, 0.0, 2.28]]
    singlet = _ok(_run(Molecule(symbols=["O", "O"], geometry=geom, molecular_multiplicity=1))).return_result
    triplet = _ok(_run(Molecule(symbols=["O", "O"], geometry=geom, molecular_multiplicity=3))).return_result
    assert triplet == _direct([8, 8], geom, uhf=2)[0]
    assert abs(singlet - triplet) > 1e-4


def test_keywords_reach_tblite():
    default = _ok(_run(_water())).return_result
    # 300 K is tblite's default electronic temperature: same bits; "-" spelling also accepted
    assert _ok(_run(_water(), keywords={"electronic-temperature": 300.0})).return_result == default
    hot = _ok(_run(_water(), keywords={"electronic_temperature": 20000.0})).return_result
    assert hot != default
    tight = _ok(_run(_water(), keywords={"accuracy": 0.01, "max_iter": 100})).return_result
    assert abs(tight - default) < 1e-6


def test_unconverged_scf_is_a_failed_operation():
    res = _run(_water(), keywords={"max_iter": 1})
    assert isinstance(res, FailedOperation)
    assert res.error.error_type == "convergence_error"
    assert "not converged" in res.error.error_message


# --- quietness -----------------------------------------------------------------------------------


def test_nothing_printed(capfd):
    capfd.readouterr()
    res = _ok(_run(_dimer([True] * 3 + [False] * 3), driver="gradient"))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert res.stdout is None


def test_verbose_printout_goes_to_result_not_stdout(capfd):
    capfd.readouterr()
    res = _ok(_run(_water(), keywords={"verbosity": 1}))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert "cycle" in res.stdout


# --- check_model and refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, basis, driver, keywords, expected",
    [
        ("b3lyp", None, "energy", {}, ["'b3lyp'", "GFN1-xTB", "GFN2-xTB"]),
        ("ipea1-xtb", None, "energy", {}, ["'ipea1-xtb'", "GFN1-xTB, GFN2-xTB"]),
        ("gfn2-xtb", "cc-pvdz", "energy", {}, ["'cc-pvdz'", "no basis choice"]),
        ("gfn2-xtb", None, "hessian", {}, ["'hessian'", "energy, gradient"]),
        ("gfn2-xtb", None, "properties", {}, ["'properties'", "energy, gradient"]),
        ("gfn2-xtb", None, "energy", {"solvent": "water"}, ["'solvent'", "accuracy", "max_iter"]),
        ("gfn2-xtb", None, "energy", {"max_iter": 0}, ["max_iter", "0"]),
        ("gfn2-xtb", None, "energy", {"accuracy": "high"}, ["accuracy", "'high'"]),
        ("gfn2-xtb", None, "energy", {"verbosity": True}, ["verbosity", "True"]),
    ],
)
def test_check_model_refuses(method, basis, driver, keywords, expected):
    with pytest.raises(MBEInputError) as info:
        TBLiteHarness().check_model(method, basis, driver, keywords)
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("basis", [None, "", "  "])
@pytest.mark.parametrize("driver", ["energy", "gradient"])
def test_check_model_accepts(basis, driver):
    keywords = {"accuracy": 0.1, "max-iter": 50, "electronic_temperature": 300, "verbosity": 0}
    TBLiteHarness().check_model("GFN1-xTB", basis, driver, keywords)


def test_check_elements_refuses_elements_beyond_radon():
    TBLiteHarness().check_elements("GFN2-xTB", None, ["H", "O", "Rn"], {})
    with pytest.raises(MBEInputError, match=r"tblite GFN1-xTB is parametrised for H to Rn .* not for U, Fr"):
        TBLiteHarness().check_elements("gfn1-xtb", None, ["H", "U", "Fr"], {})


def test_compute_refuses_hessian_and_basis():
    res = _run(_water(), driver="hessian")
    assert isinstance(res, FailedOperation)
    assert res.error.error_type == "input_error"
    assert "hessian" in res.error.error_message

    res = _run(_water(), basis="sto-3g")
    assert isinstance(res, FailedOperation)
    assert res.error.error_type == "input_error"
    assert "sto-3g" in res.error.error_message
