"""Tests of the synthetic QCEngine program (mbe_mpi/harnesses/synthetic.py).

The derivatives are checked against central finite differences of the model itself; the many-body
behaviour through QCManyBody's own sequential computer. Faults are only exercised for the kinds
"raise" (in-process) and "exit" (in a subprocess); segfault, hang and oom are never run here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import qcengine
from qcelemental.models.v2 import AtomicInput, AtomicResult, FailedOperation

import mbe_mpi  # noqa: F401  (registers the "synthetic" program)
from mbe_mpi.errors import InputError
from mbe_mpi.harnesses import check_model_chemistry
from mbe_mpi.harnesses.synthetic import CHARGE_C, SyntheticHarness, synthetic_model

from ..conftest import cluster_molecule, manybody_input, sequential_reference

REPO = Path(__file__).resolve().parents[2]
SPEC = {"program": "synthetic", "model": {"method": "synthetic", "basis": None}}


def _run(mol, driver="energy", keywords=None, method="synthetic", basis=None):
    inp = AtomicInput(
        molecule=mol,
        specification={"driver": driver, "model": {"method": method, "basis": basis}, "keywords": keywords or {}},
    )
    return qcengine.compute(inp, "synthetic", task_config={"ncores": 1}, raise_error=False)


def _ok(result) -> AtomicResult:
    assert isinstance(result, AtomicResult), getattr(result, "error", result)
    assert result.success
    return result


def _ghosted(n=3, real_fragments=(0,), **kwargs):
    """The n-water cluster with only ``real_fragments`` real (the others ghosts), as QCManyBody builds it."""
    mol = cluster_molecule(n, **kwargs)
    ghost = [i for i in range(n) if i not in real_fragments]
    return mol.get_fragment(list(real_fragments), ghost, orient=False, group_fragments=False)  # 0-based


def _arrays(mol):
    return (
        np.asarray(mol.geometry, dtype=float).reshape(-1, 3),
        np.asarray(mol.atomic_numbers),
        np.asarray(mol.real, dtype=bool),
        float(mol.molecular_charge),
    )


# ------------------------------------------------------------------------------------ registration


def test_registered_by_import_of_mbe_mpi():
    harness = qcengine.get_program("synthetic")
    assert (type(harness).__module__, type(harness).__qualname__) == ("mbe_mpi.harnesses.synthetic", "SyntheticHarness")
    assert "synthetic" in qcengine.list_available_programs()
    doc = sys.modules["mbe_mpi.harnesses.synthetic"].__doc__
    assert "SYNTHETIC" in doc and "not chemistry" in doc


@pytest.mark.parametrize("driver", ["energy", "gradient", "hessian"])
def test_result_fields(driver):
    mol = _ghosted(3, (0, 1))
    res = _ok(_run(mol, driver))
    natom = 9
    assert res.stdout is None
    assert res.provenance.creator == "mbe_mpi-synthetic"
    assert res.properties.calcinfo_natom == natom
    energy, gradient, hessian = synthetic_model(*_arrays(mol), order=2)
    assert res.properties.return_energy == energy
    if driver == "energy":
        assert res.return_result == energy
        assert res.properties.return_gradient is None
    if driver in ("gradient", "hessian"):
        assert np.asarray(res.properties.return_gradient).shape == (natom, 3)
        assert np.array_equal(np.asarray(res.properties.return_gradient), gradient)
    if driver == "gradient":
        assert np.array_equal(np.asarray(res.return_result), gradient)
        assert res.properties.return_hessian is None
    if driver == "hessian":
        assert np.asarray(res.return_result).shape == (3 * natom, 3 * natom)
        assert np.array_equal(np.asarray(res.properties.return_hessian), hessian)
        assert np.array_equal(np.asarray(res.return_result), hessian)


def test_deterministic_bit_for_bit():
    mol = _ghosted(3, (0, 2), hydroxide=True)
    first, second = _ok(_run(mol, "hessian")), _ok(_run(mol, "hessian"))
    assert first.properties.return_energy == second.properties.return_energy
    assert np.asarray(first.return_result).tobytes() == np.asarray(second.return_result).tobytes()
    assert (
        np.asarray(first.properties.return_gradient).tobytes()
        == np.asarray(second.properties.return_gradient).tobytes()
    )


# ------------------------------------------------------------------------------------ derivatives


@pytest.mark.parametrize("real_fragments", [(0, 1), (1,), (0, 1, 2)])
def test_gradient_and_hessian_match_finite_differences(real_fragments):
    geom, numbers, real, _ = _arrays(_ghosted(3, real_fragments))
    charge = -1.0
    _, grad, hess = synthetic_model(geom, numbers, real, charge, order=2)
    step = 1e-4
    flat = geom.ravel()
    fd_grad = np.zeros(flat.size)
    fd_hess = np.zeros((flat.size, flat.size))
    for k in range(flat.size):
        plus, minus = flat.copy(), flat.copy()
        plus[k] += step
        minus[k] -= step
        e_p, g_p, _ = synthetic_model(plus, numbers, real, charge, order=1)
        e_m, g_m, _ = synthetic_model(minus, numbers, real, charge, order=1)
        fd_grad[k] = (e_p - e_m) / (2 * step)
        fd_hess[:, k] = (g_p - g_m).ravel() / (2 * step)
    np.testing.assert_allclose(grad.ravel(), fd_grad, rtol=0, atol=1e-7)
    np.testing.assert_allclose(hess, fd_hess, rtol=0, atol=1e-7)
    assert np.array_equal(hess, hess.T)
    assert np.abs(grad).max() > 1e-3 and np.abs(hess).max() > 1e-3  # not trivially zero
    # translational invariance: gradient rows (ghosts included) sum to zero
    np.testing.assert_allclose(grad.sum(axis=0), 0.0, atol=1e-12)
    if not real.all():
        assert np.abs(grad[~real]).max() > 1e-6  # ghosts have gradient rows of their own


# ------------------------------------------------------------------------------------ the model


def test_ghost_atoms_change_the_energy():
    alone = cluster_molecule(1)
    with_ghosts = _ghosted(3, (0,))
    assert with_ghosts.symbols[:3].tolist() == alone.symbols.tolist()
    e_alone = _ok(_run(alone)).return_result
    e_ghosted = _ok(_run(with_ghosts)).return_result
    assert abs(e_ghosted - e_alone) > 1e-4


def test_molecular_charge_changes_the_energy_only():
    neutral = cluster_molecule(2)
    charged = neutral.model_copy(update={"molecular_charge": -1.0, "fragment_charges": [-1.0, 0.0]})
    g0 = _ok(_run(neutral, "gradient"))
    g1 = _ok(_run(charged, "gradient"))
    assert g1.properties.return_energy - g0.properties.return_energy == pytest.approx(CHARGE_C, abs=1e-12)
    assert np.array_equal(np.asarray(g0.return_result), np.asarray(g1.return_result))


@pytest.mark.parametrize("driver", ["energy", "gradient", "hessian"])
def test_bsse_treatments_differ_through_qcmanybody(driver):
    results = {}
    for bsse in ("nocp", "cp", "vmfc"):
        mbi = manybody_input(cluster_molecule(3), driver=driver, bsse=(bsse,), specification={**SPEC, "driver": driver})
        results[bsse] = np.ravel(np.asarray(sequential_reference(mbi).return_result, dtype=float))
    for a, b in (("nocp", "cp"), ("nocp", "vmfc"), ("cp", "vmfc")):
        assert np.abs(results[a] - results[b]).max() > 1e-6, (a, b)


def test_not_pairwise_additive():
    mbi = manybody_input(cluster_molecule(3), bsse=("nocp", "cp"), specification={**SPEC, "driver": "energy"})
    props = sequential_reference(mbi).properties
    assert abs(props.nocp_corrected_3_body_contribution_to_energy) > 1e-4
    assert abs(props.cp_corrected_3_body_contribution_to_energy) > 1e-4


def test_charged_fragment_through_qcmanybody():
    spec = {**SPEC, "driver": "energy"}
    neutral = sequential_reference(manybody_input(cluster_molecule(3), specification=spec, return_total_data=True))
    charged = sequential_reference(
        manybody_input(cluster_molecule(3, hydroxide=True), specification=spec, return_total_data=True)
    )
    assert abs(neutral.return_result - charged.return_result) > 1e-3


# ------------------------------------------------------------------------------------ cost


def _elapsed(mol, keywords, driver="energy"):
    start = time.perf_counter()
    _ok(_run(mol, driver, keywords))
    return time.perf_counter() - start


def test_cost_seconds_sleeps():
    elapsed = _elapsed(cluster_molecule(1), {"seconds": 0.05, "exponent": 0})
    assert 0.05 <= elapsed < 1.0


def test_cost_exponent_counts_all_atoms_ghosts_included():
    keywords = {"seconds": 0.002, "exponent": 2}  # 3 atoms: 0.018 s, 9 atoms: 0.162 s
    small = _elapsed(cluster_molecule(1), keywords)
    ghosted = _elapsed(_ghosted(3, (0,)), keywords)  # 3 real + 6 ghost atoms
    trimer = _elapsed(cluster_molecule(3), keywords)
    assert small >= 0.018
    assert ghosted >= 0.162 and trimer >= 0.162
    assert small < ghosted and small < trimer


def test_spin_mode_uses_cpu_and_sleep_does_not():
    mol = cluster_molecule(1)
    _ok(_run(mol))  # warm up
    cpu = {}
    for mode in ("sleep", "spin"):
        start_cpu, start = time.process_time(), time.perf_counter()
        _ok(_run(mol, keywords={"seconds": 0.3, "mode": mode}))
        assert time.perf_counter() - start >= 0.3
        cpu[mode] = time.process_time() - start_cpu
    assert cpu["spin"] >= 0.1
    assert cpu["sleep"] < 0.1


# ------------------------------------------------------------------------------------ faults


def test_fault_raise_gives_failed_operation():
    res = _run(cluster_molecule(1), keywords={"fault": {"kind": "raise"}})
    assert isinstance(res, FailedOperation)
    assert not res.success
    assert "synthetic fault" in res.error.error_message


def test_fault_selection_by_atom_counts_and_hash():
    fault = {"kind": "raise", "when_natoms_real": [6], "when_natoms_ghost": 0}
    assert _ok(_run(cluster_molecule(1), keywords={"fault": fault}))
    assert _ok(_run(_ghosted(3, (0, 1)), keywords={"fault": fault}))  # 6 real, but 3 ghosts
    assert not _run(cluster_molecule(2), keywords={"fault": fault}).success

    target = _ghosted(3, (1,))
    by_hash = {"kind": "raise", "when_hash": target.get_hash()}
    assert not _run(target, keywords={"fault": by_hash}).success
    assert _ok(_run(_ghosted(3, (2,)), keywords={"fault": by_hash}))


def test_fault_selects_tasks_inside_qcmanybody():
    fault = {"kind": "raise", "when_natoms_real": 9}  # only the trimer task
    spec = {**SPEC, "driver": "energy", "keywords": {"fault": fault}}
    with pytest.raises(RuntimeError, match="synthetic fault"):
        sequential_reference(manybody_input(cluster_molecule(3), specification=spec))
    dimers = manybody_input(cluster_molecule(3), max_nbody=2, specification=spec)
    assert sequential_reference(dimers).success


def test_transient_fault_with_state_dir(tmp_path):
    state = tmp_path / "faults"  # created by the harness
    mol = cluster_molecule(2)
    keywords = {"fault": {"kind": "raise", "attempts": 2}, "state_dir": str(state)}
    for _ in range(2):
        res = _run(mol, keywords=keywords)
        assert not res.success and "synthetic fault" in res.error.error_message
    _ok(_run(mol, keywords=keywords))
    _ok(_run(mol, keywords=keywords))
    assert sorted(p.name for p in state.iterdir()) == [f"{mol.get_hash()}.1", f"{mol.get_hash()}.2"]
    # another molecule has its own count
    assert not _run(cluster_molecule(1), keywords=keywords).success


def test_fault_without_state_dir_always_fires():
    keywords = {"fault": {"kind": "raise", "attempts": 1}}
    for _ in range(2):
        assert not _run(cluster_molecule(1), keywords=keywords).success


_CHILD = """
import sys
import qcengine
from qcelemental.models.v2 import AtomicInput
import mbe_mpi  # noqa: F401
res = qcengine.compute(AtomicInput.model_validate_json(sys.stdin.read()), "synthetic", task_config={"ncores": 1})
print(res.success)
"""


def test_fault_exit_in_subprocess_is_transient_across_processes(tmp_path):
    mol = cluster_molecule(1)
    keywords = {"fault": {"kind": "exit", "attempts": 1}, "state_dir": str(tmp_path)}
    inp = AtomicInput(
        molecule=mol,
        specification={"driver": "energy", "model": {"method": "synthetic", "basis": None}, "keywords": keywords},
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], input=inp.model_dump_json(), capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""
    assert (tmp_path / f"{mol.get_hash()}.1").exists()
    # the firing was counted by the dead process: this run is not faulted
    _ok(qcengine.compute(inp, "synthetic", task_config={"ncores": 1}))


# ------------------------------------------------------------------------------------ model checks


@pytest.mark.parametrize(
    "method, basis, driver, keywords, message",
    [
        ("hf", None, "energy", {}, "cannot do method 'hf'"),
        ("synthetic", "sto-3g", "energy", {}, "has no basis"),
        ("synthetic", None, "properties", {}, "cannot do driver 'properties'"),
        ("synthetic", None, "energy", {"secnds": 1}, "unknown synthetic keyword 'secnds'"),
        ("synthetic", None, "energy", {"seconds": -1}, "'seconds' must be a number >= 0"),
        ("synthetic", None, "energy", {"seconds": "1"}, "'seconds' must be a number >= 0"),
        ("synthetic", None, "energy", {"seconds": float("nan")}, "'seconds' must be a number >= 0"),
        ("synthetic", None, "energy", {"exponent": "x"}, "'exponent' must be a finite number"),
        ("synthetic", None, "energy", {"mode": "nap"}, "'mode' must be one of sleep, spin"),
        ("synthetic", None, "energy", {"state_dir": 3}, "'state_dir' must be a directory path"),
        ("synthetic", None, "energy", {"fault": "raise"}, "'fault' must be a mapping"),
        ("synthetic", None, "energy", {"fault": {}}, "needs a 'kind'"),
        ("synthetic", None, "energy", {"fault": {"kind": "explode"}}, "needs a 'kind', one of raise, exit"),
        ("synthetic", None, "energy", {"fault": {"kind": "raise", "colour": 1}}, "unknown key 'colour'"),
        (
            "synthetic",
            None,
            "energy",
            {"fault": {"kind": "raise", "attempts": 0}},
            "'attempts' must be an integer >= 1",
        ),
        ("synthetic", None, "energy", {"fault": {"kind": "raise", "when_natoms_real": "6"}}, "'when_natoms_real'"),
        ("synthetic", None, "energy", {"fault": {"kind": "raise", "when_natoms_ghost": [-1]}}, "'when_natoms_ghost'"),
        ("synthetic", None, "energy", {"fault": {"kind": "raise", "when_hash": 5}}, "'when_hash'"),
        ("synthetic", None, "energy", {"fault": {"kind": "oom", "oom_gib": 0}}, "'oom_gib' must be a number > 0"),
    ],
)
def test_check_model_refuses(method, basis, driver, keywords, message):
    with pytest.raises(InputError) as info:
        SyntheticHarness().check_model(method, basis, driver, keywords)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError):
        check_model_chemistry("synthetic", method, basis, driver, keywords)
    # and inside QCEngine, the same sentence as an input_error
    if driver != "properties":
        res = _run(cluster_molecule(1), driver, keywords, method=method, basis=basis)
        assert isinstance(res, FailedOperation)
        assert res.error.error_type == "input_error"
        assert message in res.error.error_message


_FULL_KEYWORDS = {
    "seconds": 2,
    "exponent": 3,
    "mode": "SPIN",
    "fault": {
        "kind": "raise",
        "when_natoms_real": [3, 6],
        "when_natoms_ghost": 0,
        "when_hash": ["ab12"],
        "attempts": 2,
    },
    "state-dir": "/nonexistent/yet",
}


@pytest.mark.parametrize(
    "method, basis, driver, keywords",
    [
        ("synthetic", None, "energy", None),
        ("SYNTHETIC", "", "hessian", {}),
        ("Synthetic", "  ", "gradient", {"seconds": 0, "exponent": -1.5, "mode": "sleep"}),
        ("synthetic", None, "energy", _FULL_KEYWORDS),
    ]
    + [
        ("synthetic", None, "energy", {"fault": {"kind": k, "oom_gib": 1.5}})
        for k in ("exit", "segfault", "hang", "oom")
    ],
)
def test_check_model_accepts(method, basis, driver, keywords):
    SyntheticHarness().check_model(method, basis, driver, keywords)
    check_model_chemistry("synthetic", method, basis, driver, keywords)
