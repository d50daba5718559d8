"""Screened runs end to end: the command line, a prescreen, stop and resume, the cache, sessions, ASE.

Every screened result is compared with the truncated expansion that :mod:`tests.truncated` sums from
a full QCManyBody run made in the same test (never with pasted numbers). ``synthetic`` is a stand-in
program with non-additive energies and a chosen cost (not chemistry); tblite's GFN2-xTB is the
realistic prescreen.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from qcmanybody.models.v2 import ManyBodyResult

import mbe_mpi

from .. import truncated
from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference
from .helpers import run_cli
from .test_restart import _journaled, _start, _wait_for_results

pytestmark = pytest.mark.timeout(300)


def _synthetic(n_waters, bsse, driver="energy", max_nbody=3, **keywords):
    spec = {"program": "synthetic", "driver": driver, "model": {"method": "synthetic", "basis": None},
            "keywords": keywords}
    return manybody_input(cluster_molecule(n_waters), driver=driver, bsse=list(bsse), max_nbody=max_nbody,
                          specification=spec)


def _props(mbi):
    return {"energy": ("energy",), "gradient": ("energy", "gradient"),
            "hessian": ("energy", "gradient", "hessian")}[mbi.specification.driver.value]


def _multilevel_hessian():
    """Three model chemistries (one per level: the synthetic cost keywords make them distinct), Hessians."""
    def spec(**keywords):
        return {"program": "synthetic", "driver": "hessian", "model": {"method": "synthetic", "basis": None},
                "keywords": keywords}
    return manybody_input(cluster_molecule(5), driver="hessian", bsse=["vmfc", "nocp"], levels={1: "a", 2: "b", 3: "c"},
                          specification={"a": spec(), "b": spec(seconds=0.0), "c": spec(exponent=1.0)})


def _case(tmp_path, mbi, screening, name="case.json", execution=None):
    """A QCSchema ManyBodyInput file with the screening section beside it (as a user would add it)."""
    data = {**json.loads(mbi.model_dump_json()), "screening": screening}
    if execution:
        data["execution"] = execution
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _check(result, mbi, reference, kept):
    """The result is the truncated expansion, and it computed exactly the tasks its kept n-mers need."""
    assert truncated.assert_truncated(result, mbi, reference, kept, 1e-12, _props(mbi)) >= 2
    needed = truncated.needed_labels(mbi, reference, kept)
    assert set(result.cluster_properties) == needed
    assert result.properties.calcinfo_nmbe == len(needed)
    return needed


CLI_CASES = {
    # distance at both levels and an energy rule that skips trimers, three treatments at once
    "energy-nocp-cp-vmfc": (_synthetic(7, ["nocp", "cp", "vmfc"]), {"distance": {2: 4.5, 3: 4.0}, "energy": {3: 0.18}}),
    "gradient-cp-vmfc": (_synthetic(6, ["cp", "vmfc"], "gradient"), {"distance": {2: 4.5}, "energy": {3: 0.12}}),
    "hessian-multilevel-vmfc-nocp": (_multilevel_hessian(), {"distance": {2: 4.5, 3: 4.0}, "energy": {3: 0.15}}),
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_command_line_run_is_the_truncated_expansion_and_reports_it(name, tmp_path):
    mbi, screening = CLI_CASES[name]
    out, report = tmp_path / "out.json", tmp_path / "report.json"
    proc = run_cli([str(_case(tmp_path, mbi, screening)), "-o", str(out), "--n-workers", "2", "--report",
                    str(report)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = ManyBodyResult.model_validate_json(out.read_text())
    reference = sequential_reference(mbi)
    kept = truncated.kept_nmers(mbi, reference, screening["distance"], screening["energy"])
    needed = _check(result, mbi, reference, kept)
    stats = result.extras["mbe_mpi"]
    assert stats["computed"] == len(needed)
    screened = stats["screening"]
    assert screened["tasks"]["needed"] == len(needed) and screened["tasks"]["full"] == len(reference.cluster_properties)
    for level in (2, 3):
        row = screened["levels"][str(level)]
        assert row["kept"] == sum(len(nmer) == level for nmer in kept)
        assert row["possible"] == row["skipped_distance"] + row["skipped_prescreen"] + row["skipped_energy"] + row["kept"]
    assert screened["levels"]["3"]["skipped_energy"] > 0  # the energy rule decided something
    assert "Screening: distance" in proc.stdout and f"kept n-mers need {len(needed)} of" in proc.stdout
    assert json.loads(report.read_text())["screening"] == screened


def test_plan_shows_the_distance_screened_counts(tmp_path):
    mbi, screening = CLI_CASES["energy-nocp-cp-vmfc"]
    proc = run_cli(["plan", str(_case(tmp_path, mbi, screening)), "--ranks", "3"])
    assert proc.returncode == 0, proc.stderr
    reference = sequential_reference(mbi)
    within = truncated.kept_nmers(mbi, reference, screening["distance"])
    needed = truncated.needed_labels(mbi, reference, within)
    assert f"{len(needed)} QC tasks in 3 levels" in proc.stdout
    assert "(screened)" in proc.stdout and "the most it can take" in proc.stdout
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()
            if line.split()[:1] in (["2"], ["3"]) and len(line.split()) == 8}
    for level in (2, 3):
        assert int(rows[str(level)][5]) == sum(len(nmer) == level for nmer in within)
    assert not (tmp_path / "case.result.json").exists()


def test_gfn2_prescreen_decides_and_estimates_what_it_left_out(tmp_path):
    """The requested expansion keeps the n-mers whose own GFN2-xTB increment reaches the threshold."""
    pytest.importorskip("tblite")
    mbi = _synthetic(6, ["cp", "nocp"])
    threshold = {2: 2.0e-3, 3: 2.0e-4}
    screening = {"distance": {2: 5.0}, "energy": {3: 0.12},
                 "prescreen": {"model": {"program": "tblite", "method": "gfn2-xtb"}, "threshold": threshold}}
    result = mbe_mpi.compute(json.loads(_case(tmp_path, mbi, screening).read_text()), n_workers=2,
                             checkpoint=False)
    reference = sequential_reference(mbi)
    cheap = sequential_reference(truncated.cheap_input(mbi, "tblite", "gfn2-xtb"))
    kept = truncated.kept_nmers(mbi, reference, screening["distance"], screening["energy"], threshold, cheap)
    needed = _check(result, mbi, reference, kept)
    screened = result.extras["mbe_mpi"]["screening"]
    assert screened["tasks"]["computed"] == len(needed)
    assert all(screened["levels"][str(n)]["skipped_prescreen"] > 0 for n in (2, 3))
    within = truncated.kept_nmers(mbi, reference, screening["distance"])
    prescreen = screened["prescreen"]
    assert prescreen["model"] == "tblite gfn2-xtb" and prescreen["treatment"] == "cp"
    assert prescreen["tasks"]["computed"] == len(truncated.needed_labels(mbi, cheap, within))
    for level in (2, 3):
        want = truncated.left_out(mbi, cheap, within, kept, level)
        assert prescreen["left_out"][str(level)]["eh"] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("ranks, prescreen", [(None, False), (None, True), (3, True)],
                         ids=["local-energy-rule", "local-prescreen", "mpi-3-prescreen"])
def test_stopped_screened_run_resumes_with_the_same_decisions(ranks, prescreen, tmp_path):
    mbi = _synthetic(6, ["nocp", "vmfc"], seconds=0.03)
    screening = {"distance": {2: 5.0, 3: 4.5}, "energy": {3: 0.12}}
    if prescreen:  # the same synthetic energies (other tasks: another cost), so own increments decide
        screening["prescreen"] = {"model": {"program": "synthetic", "method": "synthetic",
                                            "keywords": {"seconds": 0.02}}, "threshold": {2: 0.01, 3: 1.0e-3}}
    case = _case(tmp_path, mbi, screening)
    args = [str(case), "-o", "out.json", "--n-workers", "2"]
    checkpoint = tmp_path / "out.checkpoint.sqlite"
    proc = _start(args, ranks, tmp_path)
    _wait_for_results(proc, checkpoint, 8)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 4, stderr
    assert "rerun the same command to resume" in stderr
    saved = _journaled(checkpoint)

    again = run_cli(args, ranks=ranks, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming from checkpoint" in again.stderr
    result = ManyBodyResult.model_validate_json((tmp_path / "out.json").read_text())
    reference = sequential_reference(_synthetic(6, ["nocp", "vmfc"]))  # the same values, without the sleeps
    own = cheap = None
    if prescreen:
        own, cheap = screening["prescreen"]["threshold"], reference
    kept = truncated.kept_nmers(mbi, reference, screening["distance"], screening["energy"], own, cheap)
    needed = _check(result, mbi, reference, kept)
    stats = result.extras["mbe_mpi"]
    assert stats["computed"] + stats["from_checkpoint"] == len(needed)
    cheap_reused = 0
    if prescreen:  # the cheap results saved before the stop were not computed again
        cheap = stats["screening"]["prescreen"]["tasks"]
        cheap_reused = cheap["needed"] - cheap["computed"]
    assert 0 < stats["from_checkpoint"] + cheap_reused <= saved
    assert not checkpoint.exists()


def test_changing_thresholds_reuses_every_cached_result_cheap_and_requested(tmp_path):
    mbi = _synthetic(6, ["cp"])
    cheap_model = {"program": "synthetic", "method": "synthetic", "keywords": {"seconds": 0.0}}
    reference = sequential_reference(mbi)
    needed = {}
    for run, (own, energy) in enumerate([({2: 0.02, 3: 2e-3}, {3: 0.12}), ({2: 0.005, 3: 1e-3}, {3: 0.1})]):
        screening = {"distance": {2: 5.0}, "energy": energy, "prescreen": {"model": cheap_model, "threshold": own}}
        result = mbe_mpi.compute(mbi, n_workers=2, screening=screening, checkpoint=False, cache_dir=str(tmp_path))
        kept = truncated.kept_nmers(mbi, reference, screening["distance"], energy, own, reference)
        needed[run] = _check(result, mbi, reference, kept)
    stats = result.extras["mbe_mpi"]
    assert needed[1] - needed[0], "the second thresholds must need new tasks"
    assert stats["computed"] == len(needed[1] - needed[0])
    assert stats["from_cache"] == len(needed[1] & needed[0])
    assert stats["screening"]["prescreen"]["tasks"]["computed"] == 0  # the cheap expansion came from the cache


def test_a_session_runs_screened_and_full_expansions_and_ase_takes_screening_in_its_template():
    pytest.importorskip("ase")
    pytest.importorskip("tblite")
    from ase.units import Bohr, Hartree

    from mbe_mpi.ase import ManyBodyCalculator
    from mbe_mpi.inputs import parse_input

    from ..ase_reference import water_atoms

    synthetic = _synthetic(5, ["nocp"], "gradient")
    screening = {"distance": {2: 3.5, 3: 3.0}}
    template = {"molecule": {"atoms_per_fragment": 3}, "model": {"program": "tblite", "method": "gfn2-xtb"},
                "bsse": "nocp", "max_nbody": 3, "screening": screening}
    with mbe_mpi.Session(n_workers=2) as session:
        screened = session.compute(synthetic, screening=screening)
        full = session.compute(synthetic)
        nothing_skipped = session.compute(synthetic, screening={"distance": {2: 100.0}, "energy": {3: 0.0}})
        atoms = water_atoms(5)
        atoms.calc = ManyBodyCalculator(template, session=session)
        forces, energy = atoms.get_forces(), atoms.get_potential_energy()
    reference = sequential_reference(synthetic)
    _check(screened, synthetic, reference, truncated.kept_nmers(synthetic, reference, screening["distance"]))
    assert_same_result(full, reference)
    assert_same_result(nothing_skipped, reference)  # rules that skip nothing: bit for bit QCManyBody's
    assert nothing_skipped.extras["mbe_mpi"]["screening"]["tasks"]["computed"] == len(reference.cluster_properties)
    # the calculator's numbers are the screened nocp total energy and its gradient, through 3 bodies
    data = atoms.calc.manybody_input(atoms, "gradient")
    mbi, _ = parse_input({key: value for key, value in data.items() if key != "screening"})
    xtb = sequential_reference(mbi)
    kept = truncated.kept_nmers(mbi, xtb, screening["distance"])
    assert len(kept) < len(xtb.cluster_properties)
    assert energy == pytest.approx(truncated.truncated_total(mbi, xtb, kept, "nocp", 3) * Hartree, abs=1e-9)
    gradient = truncated.truncated_total(mbi, xtb, kept, "nocp", 3, "gradient")
    np.testing.assert_allclose(forces, -np.reshape(gradient, (-1, 3)) * Hartree / Bohr, rtol=0, atol=1e-9)
