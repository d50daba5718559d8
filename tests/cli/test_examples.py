"""The files in ``examples/`` load, say what they are, and (GFN2-xTB, cheaply) run to QCManyBody's numbers.

The GFN2-xTB example runs through the command line from the repository root, as its header says
(so the xyz path must be found relative to the input file, not the current directory), and must
equal QCManyBody's sequential computer bit for bit; its QCSchema JSON twin must be the same
ManyBodyInput. The MP2 example (~10 s of QC, run from inside ``examples/``) runs only with
``MBE_MPI_SLOW=1``.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from qcmanybody.models.v2 import ManyBodyResult

from mbe_mpi.screening import ScreeningRules, screening_of

from .. import truncated
from ..conftest import assert_same_result, sequential_reference, water_cluster_atoms
from .helpers import REPO, run_cli

EXAMPLES = REPO / "examples"

# example file -> (program, what its ManyBodyInput must be)
EXPECTED = {
    "water3_gfn2.yaml": ("tblite", dict(driver="energy", bsse=["nocp"], max_nbody=3, methods={"gfn2-xtb"})),
    "water3_qcschema.json": ("tblite", dict(driver="energy", bsse=["nocp"], max_nbody=3, methods={"gfn2-xtb"})),
    "water3_mp2_cp.yaml": ("pyscf", dict(driver="energy", bsse=["cp"], max_nbody=3, methods={"mp2"})),
    "water3_gradient.yaml": ("pyscf", dict(driver="gradient", bsse=["cp"], max_nbody=2, methods={"hf"})),
    "water3_multilevel.yaml": ("pyscf", dict(driver="energy", bsse=["cp"], max_nbody=3, methods={"mp2", "hf"})),
    "water12_screened.yaml": ("tblite", dict(driver="energy", bsse=["nocp"], max_nbody=3, methods={"gfn2-xtb"},
                                             fragments=12, screening={"distance": {2: 6.0}, "energy": {3: 2.0e-3}})),
}


def _load(name: str):
    pytest.importorskip(EXPECTED[name][0])
    from mbe_mpi.inputs import load_input

    return load_input(EXAMPLES / name)


def test_every_example_input_is_listed_here():
    inputs = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml", ".json")}
    inputs = {name for name in inputs if not name.endswith(".result.json")}
    assert inputs == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_loads_and_validates(name):
    mbi, options = _load(name)
    want = EXPECTED[name][1]
    spec = mbi.specification
    assert spec.driver.value == want["driver"]
    assert [bt.value for bt in spec.keywords.bsse_type] == want["bsse"]
    assert spec.keywords.max_nbody == want["max_nbody"]
    assert {atomic.model.method for atomic in spec.specification.values()} == want["methods"]
    assert {atomic.program for atomic in spec.specification.values()} == {EXPECTED[name][0]}
    assert len(mbi.molecule.fragments) == want.get("fragments", 3)
    assert options.threads_per_task == 1
    rules = screening_of(mbi)
    assert (rules.to_dict() if rules else None) == (ScreeningRules(**want["screening"]).to_dict()
                                                    if "screening" in want else None)


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.endswith(".yaml")))
def test_yaml_header_tells_how_to_run(name):
    lines = (EXAMPLES / name).read_text().splitlines()
    assert lines[0].startswith("# ")
    header = "\n".join(line for line in lines[: next(i for i, x in enumerate(lines) if x and x[0] != "#")])
    assert f"python -m mbe_mpi examples/{name}" in header
    assert f"mpiexec -n 3 python -m mbe_mpi examples/{name}" in header
    assert f"{name.removesuffix('.yaml')}.result.json" in header
    assert "run time" in header


@pytest.mark.parametrize("n", [3, 6, 12])
def test_xyz_is_the_water_and_its_nearest_neighbours(n):
    lines = (EXAMPLES / f"water{n}.xyz").read_text().splitlines()
    assert int(lines[0]) == 3 * n
    atoms = [line.split() for line in lines[2:] if line.strip()]
    want = [(sym, xyz) for fragment in water_cluster_atoms(n) for sym, xyz in fragment]
    assert [a[0] for a in atoms] == [sym for sym, _ in want]
    np.testing.assert_allclose([[float(x) for x in a[1:]] for a in atoms], [xyz for _, xyz in want], atol=1e-6)


def test_qcschema_json_is_the_gfn2_yaml():
    from_yaml, _ = _load("water3_gfn2.yaml")
    from_json, _ = _load("water3_qcschema.json")
    assert json.loads(from_json.model_dump_json()) == json.loads(from_yaml.model_dump_json())
    raw = json.loads((EXAMPLES / "water3_qcschema.json").read_text())
    assert raw["schema_name"] == "qcschema_many_body_input" and raw["schema_version"] == 2


def test_multilevel_merges_levels_into_two_model_chemistries():
    mbi, _ = _load("water3_multilevel.yaml")
    spec = mbi.specification
    assert len(spec.specification) == 2
    levels = spec.keywords.levels
    assert sorted(levels) == [2, 3]
    mp2, hf = spec.specification[levels[2]], spec.specification[levels[3]]
    assert (mp2.program, mp2.model.method, mp2.model.basis) == ("pyscf", "mp2", "cc-pvdz")
    assert (hf.program, hf.model.method, hf.model.basis) == ("pyscf", "hf", "cc-pvdz")


def _check_summary(stdout: str, bsse: str, max_nbody: int) -> None:
    for n in range(1, max_nbody + 1):
        assert re.search(rf"^\s+{bsse}\s+{n}\s+\S+\s+-?\d+\.\d+\s+-?\d+\.\d+$", stdout, re.M), (n, stdout)
    assert stdout.count("return_energy") == 1


def test_gfn2_example_runs_from_the_repository_root(tmp_path):
    out = tmp_path / "out.json"
    proc = run_cli(["examples/water3_gfn2.yaml", "-o", str(out), "--n-workers", "2"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    _check_summary(proc.stdout, "nocp", 3)
    mbi, _ = _load("water3_gfn2.yaml")
    assert_same_result(ManyBodyResult.model_validate_json(out.read_text()), sequential_reference(mbi))


def test_screened_example_runs_to_the_truncated_expansion(tmp_path):
    out = tmp_path / "out.json"
    proc = run_cli(["examples/water12_screened.yaml", "-o", str(out), "--n-workers", "2"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    _check_summary(proc.stdout, "nocp", 3)
    assert "Screening: distance 2: 6 Angstrom; energy 3: 0.002 Eh" in proc.stdout
    mbi, _ = _load("water12_screened.yaml")
    rules = screening_of(mbi)
    reference = sequential_reference(mbi)  # QCManyBody ignores the rules: the full expansion
    kept = truncated.kept_nmers(mbi, reference, rules.distance, rules.energy)
    result = ManyBodyResult.model_validate_json(out.read_text())
    truncated.assert_truncated(result, mbi, reference, kept, 1e-12)
    assert set(result.cluster_properties) == truncated.needed_labels(mbi, reference, kept)
    assert len(result.cluster_properties) < 0.6 * len(reference.cluster_properties)


def test_xyz_path_is_relative_to_the_input_file_not_the_current_directory(tmp_path, monkeypatch):
    pytest.importorskip("tblite")
    from mbe_mpi.inputs import load_input

    dumps = []
    for cwd in (REPO, EXAMPLES, tmp_path):  # tmp_path: neither the repository root nor examples/
        monkeypatch.chdir(cwd)
        mbi, _ = load_input(os.path.relpath(EXAMPLES / "water3_gfn2.yaml", cwd))
        dumps.append(json.loads(mbi.model_dump_json()))
    assert dumps[0] == dumps[1] == dumps[2]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MBE_MPI_SLOW") != "1", reason="MP2 example takes ~10 s; set MBE_MPI_SLOW=1")
def test_mp2_cp_example_runs_from_inside_examples(tmp_path):
    mbi, _ = _load("water3_mp2_cp.yaml")
    out = tmp_path / "out.json"
    proc = run_cli(["water3_mp2_cp.yaml", "-o", str(out), "--n-workers", "2"], cwd=EXAMPLES)
    assert proc.returncode == 0, proc.stderr
    _check_summary(proc.stdout, "cp", 3)
    assert_same_result(ManyBodyResult.model_validate_json(out.read_text()), sequential_reference(mbi))


@pytest.mark.parametrize("script, args, expected", [
    ("ase_optimize_water6.py", ["--steps", "3"], "not converged: E = "),
    ("ase_md_water3.py", ["--steps", "5"], "step   5  E_pot"),
])
def test_ase_examples_run_as_they_are(script, args, expected, tmp_path):
    """The ASE examples (an optimisation on a session, a short MD) run from any folder."""
    pytest.importorskip("ase")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    assert "Traceback" not in proc.stderr
