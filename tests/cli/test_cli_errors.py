"""User mistakes: one readable line on stderr, exit code 2, on every rank, within seconds, no QC work.

And a QC task that fails: exit code 1 with a message naming label, model chemistry and error.
"""

from __future__ import annotations

import json
import time

import pytest

from ..cases import case_inputs
from ..conftest import DATA, water_cluster_xyz
from .helpers import run_cli

GOOD_MOLECULE = {"xyz": "w3.xyz", "atoms_per_fragment": 3}
GOOD_MODEL = {"program": "tblite", "method": "gfn2-xtb"}


def _yaml_like(**changes):
    data = {"molecule": GOOD_MOLECULE, "model": GOOD_MODEL, "bsse": "nocp", "max_nbody": 2}
    data.update(changes)
    return json.dumps(data)


def _qcschema_water4(**molecule) -> str:
    """The issue's water4_bad_mult.json kind of file: a QCSchema ManyBodyInput as model_dump_json writes it."""
    from ..conftest import cluster_molecule, manybody_input

    data = json.loads(manybody_input(cluster_molecule(4), specification={
        "program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None}}).model_dump_json())
    data["molecule"].update(molecule)
    return json.dumps(data).replace('"@NaN"', "NaN")


# name -> (file name, file text, flags, expected substring of the one-line message)
BAD_INPUTS = {
    "missing-file": ("absent.yaml", None, [], "no such file"),
    "malformed-json": ("bad.json", '{"molecule": {"xyz": "w3.xyz",}', [], "line 1"),
    "malformed-yaml": ("bad.yaml", "molecule: [unclosed\nmodel: x\n", [], "YAML"),
    "unknown-key": ("k.json", _yaml_like(max_nbodies=2), [], "max_nbodies"),
    "overlapping-fragments": ("o.json", _yaml_like(molecule={"xyz": "w3.xyz",
                              "fragments": [[0, 1, 2], [2, 3, 4, 5], [6, 7, 8]]}), [], "atom 2"),
    "missing-atoms": ("m.json", _yaml_like(molecule={"xyz": "w3.xyz", "fragments": [[0, 1, 2], [3, 4, 5]]}), [],
                      "atom"),
    "index-out-of-range": ("r.json", _yaml_like(molecule={"xyz": "w3.xyz",
                           "fragments": [[0, 1, 2], [3, 4, 5], [6, 7, 8, 42]]}), [], "42"),
    "impossible-multiplicity": ("s.json", _yaml_like(molecule={**GOOD_MOLECULE,
                                "fragment_multiplicities": [2, 1, 1]}), [], "multiplicity"),
    "unknown-program": ("p.json", _yaml_like(model={"program": "gaussiann", "method": "hf", "basis": "sto-3g"}), [],
                        "gaussiann"),
    "unknown-method": ("u.json", _yaml_like(model={"program": "pyscf", "method": "ccsdtq", "basis": "sto-3g"}), [],
                       "ccsdtq"),
    "unknown-basis": ("b.json", _yaml_like(model={"program": "pyscf", "method": "hf", "basis": "cc-pvxz"}), [],
                      "cc-pvxz"),
    "max-nbody-too-large": ("n.json", _yaml_like(max_nbody=5), [], "max_nbody"),
    "unknown-bsse": ("t.json", _yaml_like(bsse="cpp"), [], "cpp"),
    "nonsense-execution": ("e.json", _yaml_like(execution={"n_workers": 0}), [], "n_workers"),
    "unknown-execution-option": ("x.json", _yaml_like(execution={"n_worker": 2}), [], "n_worker"),
    "nonsense-flag": ("ok.json", _yaml_like(), ["--threads-per-task", "0"], "threads_per_task"),
    "qcschema-impossible-multiplicity": ("water4_bad_mult.json", _qcschema_water4(fragment_multiplicities=[2, 1, 1, 1]),
                                         [], "multiplicity must be odd"),
    "qcschema-nan-coordinate": ("water4_nan.json", _qcschema_water4(geometry=["@NaN"] + [0.0] * 35), [],
                                "not a finite position"),
    "plugin-path-missing": ("ok.json", _yaml_like(), ["--plugin", "./no_such_site.py"], "is not a file"),
    "output-is-a-directory": ("ok.json", _yaml_like(), ["-o", "."], "is a directory"),
    "flag-value-not-a-number": ("ok.json", _yaml_like(), ["--n-workers", "two"], "--n-workers: invalid int value"),
    "basis-lacks-an-element": ("hi.json", _yaml_like(
        molecule={"geometry": "I 0 0 0\nH 0 0 1.61\n--\nO 0 0 4\nH 0 0.76 4.6\nH 0 -0.76 4.6", "units": "angstrom"},
        model={"program": "pyscf", "method": "hf", "basis": "cc-pvdz"}), [], "'cc-pvdz' has no functions for I"),
    "unknown-flag": ("ok.json", _yaml_like(), ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
}


def _write_case(tmp_path, name):
    file_name, text, flags, expected = BAD_INPUTS[name]
    (tmp_path / "w3.xyz").write_text(water_cluster_xyz(3))
    if text is not None:
        (tmp_path / file_name).write_text(text)
    return file_name, flags, expected


def _assert_one_line_error(proc, expected, elapsed):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one message, once (not once per rank), no traceback
    assert lines[0].startswith("mbe_mpi: error: ")
    assert expected.lower() in lines[0].lower()
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert elapsed < 60


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_local(name, tmp_path):
    file_name, flags, expected = _write_case(tmp_path, name)
    start = time.perf_counter()
    proc = run_cli([file_name, *flags], cwd=tmp_path, timeout=120)
    _assert_one_line_error(proc, expected, time.perf_counter() - start)


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_under_mpiexec(name, tmp_path):
    file_name, flags, expected = _write_case(tmp_path, name)
    start = time.perf_counter()
    proc = run_cli([file_name, *flags], ranks=3, cwd=tmp_path, timeout=120)
    _assert_one_line_error(proc, expected, time.perf_counter() - start)
    assert not list(tmp_path.glob("*.result.json"))  # nothing was computed


def _failing_case(tmp_path):
    """A real PySCF failure: one SCF iteration cannot converge to 1e-14."""
    mbi = case_inputs()["hessian-nocp"]
    spec = mbi.specification.specification["(auto)"].model_copy(update={"keywords": {"max_cycle": 1,
                                                                                       "conv_tol": 1e-14}})
    bad = mbi.model_copy(update={"specification": mbi.specification.model_copy(update={
        "specification": {"(auto)": spec}})})
    path = tmp_path / "fails.json"
    path.write_text(bad.model_dump_json())
    return path


@pytest.mark.parametrize("ranks", [None, 3])
def test_failed_qc_task_exits_1_naming_the_task(ranks, tmp_path):
    proc = run_cli([str(_failing_case(tmp_path)), "--n-workers", "2"], ranks=ranks, timeout=240)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith("mbe_mpi: error:")]
    assert len(start) == 1, proc.stderr
    assert lines[start[0]] == "mbe_mpi: error: 3 QC tasks failed:"  # every other task was finished first
    failed = lines[start[0] + 1:start[0] + 4]
    for message in failed:
        assert message.startswith("QC task [")  # names the label ...
        assert "(auto)" in message and "pyscf hf/sto-3g" in message  # ... the model chemistry ...
        assert "after 3 attempts" in message  # ... the attempts ...
        assert "converge" in message.lower()  # ... and the program's error
    assert not (tmp_path / "fails.result.json").exists()


@pytest.mark.parametrize("how", ["flag", "execution"])
def test_plugin_program_runs_on_every_rank(how, tmp_path):
    """A site's harness registered by a plugin module works across MPI ranks and equals sequential."""
    from qcmanybody.models.v2 import ManyBodyResult

    from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference

    spec = {"program": "sitepair", "driver": "energy", "model": {"method": "pairs", "basis": None}}
    mbi = manybody_input(cluster_molecule(3), bsse=["cp", "nocp"], specification=spec)
    data = json.loads(mbi.model_dump_json())
    flags = ["--plugin", "site_harness"]
    if how == "execution":
        data["execution"] = {"plugins": ["site_harness"]}
        flags = []
    path = tmp_path / "plugin.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "out.json"
    env = {"PYTHONPATH": str(DATA / "plugins")}
    proc = run_cli([str(path), "-o", str(out), *flags], ranks=3, env=env)
    assert proc.returncode == 0, proc.stderr

    import sys
    sys.path.insert(0, str(DATA / "plugins"))
    try:
        import site_harness  # noqa: F401  (registers sitepair here too, for the reference)
    finally:
        sys.path.pop(0)
    assert_same_result(ManyBodyResult.model_validate_json(out.read_text()), sequential_reference(mbi))


def test_unknown_plugin_is_an_input_error(tmp_path):
    (tmp_path / "w3.xyz").write_text(water_cluster_xyz(3))
    (tmp_path / "ok.json").write_text(_yaml_like())
    proc = run_cli(["ok.json", "--plugin", "no_such_site_module"], ranks=3, cwd=tmp_path)
    _assert_one_line_error(proc, "no_such_site_module", 0)


def test_plugin_given_as_a_path_runs_on_every_rank(tmp_path):
    from qcmanybody.models.v2 import ManyBodyResult

    from ..conftest import cluster_molecule, manybody_input

    (tmp_path / "site.py").write_text((DATA / "plugins" / "site_harness.py").read_text())
    spec = {"program": "sitepair", "driver": "energy", "model": {"method": "pairs", "basis": None}}
    path = tmp_path / "plugin.json"
    path.write_text(manybody_input(cluster_molecule(3), bsse=["nocp"], specification=spec).model_dump_json())
    proc = run_cli([str(path), "-o", "out.json", "--plugin", "./site.py"], ranks=3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ManyBodyResult.model_validate_json((tmp_path / "out.json").read_text()).success


def test_a_qc_program_returning_nan_fails_the_task_and_never_the_result(tmp_path):
    from ..conftest import cluster_molecule, manybody_input

    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": {"fault": {"kind": "nan", "when_natoms_real": 6}}}
    path = tmp_path / "nan.json"
    path.write_text(manybody_input(cluster_molecule(3), bsse=["nocp"], specification=spec).model_dump_json())
    proc = run_cli([str(path), "-o", "out.json", "--n-workers", "2"], cwd=tmp_path, env={})
    assert proc.returncode == 1, proc.stderr
    assert "[nonfinite_result] the QC program returned a non-finite energy" in proc.stderr
    assert not (tmp_path / "out.json").exists()
