"""Input files -> (ManyBodyInput, ExecutionOptions): both formats, and one clear sentence per mistake."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import qcengine
from qcelemental import constants
from qcelemental.models.v2 import Molecule
from qcengine.programs.model import ProgramHarness
from qcmanybody.models.v2 import ManyBodyInput

from mbe_mpi.errors import InputError
from mbe_mpi.inputs import load_input, parse_input, validate_manybody_input
from mbe_mpi.options import ExecutionOptions

DATA = Path(__file__).resolve().parents[1] / "data"
INPUTS = DATA / "inputs"
WATER3 = INPUTS / "water3.xyz"
WATER32 = DATA / "water32.xyz"

FAKE = "mbefake"  # a registered test program, so most tests need no QC program installed
FAKE2 = "mbefake2"
HE3 = "He 0 0 0\n--\nHe 0 0 3.0\n--\nHe 0 3.0 0\n"


class FakeHarness(ProgramHarness):
    """A QCEngine program that is always found and knows three methods; it never computes."""

    _defaults: ClassVar[dict[str, Any]] = {
        "name": FAKE,
        "scratch": False,
        "thread_safe": True,
        "thread_parallel": False,
        "node_parallel": False,
        "managed_memory": False,
    }

    @staticmethod
    def found(raise_error: bool = False) -> bool:
        return True

    def get_version(self) -> str:
        return "0.0"

    def compute(self, input_data, config):  # pragma: no cover - never run
        raise NotImplementedError

    def check_model(self, method, basis, driver, keywords) -> None:
        if method not in ("hf", "mp2", "ccsd"):
            raise InputError(f"{self.name} cannot do method {method!r}; available methods: hf, mp2, ccsd")


@pytest.fixture(scope="module", autouse=True)
def fake_programs():
    for name in (FAKE, FAKE2):
        qcengine.register_program(FakeHarness(name=name))
    yield
    for name in (FAKE, FAKE2):
        qcengine.unregister_program(name)


def fake(method: str = "hf", basis: str | None = "sto-3g", program: str = FAKE, **extra) -> dict:
    return {"program": program, "method": method, "basis": basis, **extra}


def he3_input(**top) -> dict:
    data = {"molecule": {"geometry": HE3}, "model": fake()}
    data.update(top)
    return data


def write(tmp_path: Path, name: str, content: Any) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif name.endswith(".json"):
        path.write_text(json.dumps(content))
    else:
        import yaml

        path.write_text(yaml.safe_dump(content))
    return path


def error_of(call, *args) -> str:
    with pytest.raises(InputError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def tblite_available() -> bool:
    return "tblite" in qcengine.list_all_programs() and qcengine.get_program("tblite", check=False).found()


# ====  valid inputs  ==========================================================


@pytest.mark.skipif(not tblite_available(), reason="tblite harness or tblite not available")
def test_xyz_file_and_inline_geometry_give_equal_inputs():
    from_xyz, options = load_input(INPUTS / "water3_tblite.yaml")
    inline, options_inline = load_input(INPUTS / "water3_tblite_inline.json")
    assert from_xyz == inline
    assert options == options_inline == ExecutionOptions(n_workers=2, threads_per_task=1)

    spec = from_xyz.specification
    assert spec.driver == "gradient"
    assert list(spec.specification) == ["(auto)"]  # QCManyBody's own label for a single model chemistry
    atomic = spec.specification["(auto)"]
    assert (atomic.program, atomic.model.method, atomic.model.basis) == ("tblite", "gfn2-xtb", None)
    assert spec.keywords.levels is None and spec.keywords.max_nbody == 2
    assert [b.value for b in spec.keywords.bsse_type] == ["nocp", "cp"]

    mol = from_xyz.molecule
    assert [list(f) for f in mol.fragments] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert list(mol.fragment_charges) == [0, 0, 0] and list(mol.fragment_multiplicities) == [1, 1, 1]
    assert mol.molecular_charge == 0 and mol.molecular_multiplicity == 1
    assert mol.fix_com and mol.fix_orientation
    angstrom = np.array([[float(x) for x in line.split()[1:]] for line in WATER3.read_text().splitlines()[2:]])
    np.testing.assert_allclose(mol.geometry, angstrom * constants.conversion_factor("angstrom", "bohr"), atol=1e-8)


def test_xyz_separators_equal_atoms_per_fragment_and_fragments(tmp_path):
    lines = WATER3.read_text().splitlines()
    with_separators = "\n".join([*lines[:5], "--", *lines[5:8], "--", *lines[8:]]) + "\n"
    write(tmp_path, "sep.xyz", with_separators)
    model = fake()
    a, _ = parse_input({"molecule": {"xyz": "sep.xyz"}, "model": model}, tmp_path, "a.yaml")
    b, _ = parse_input({"molecule": {"xyz": str(WATER3), "atoms_per_fragment": 3}, "model": model}, tmp_path)
    fragments = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    c, _ = parse_input({"molecule": {"xyz": str(WATER3), "fragments": fragments}, "model": model}, tmp_path)
    assert a == b == c


def test_geometry_is_kept_exactly_as_given_in_both_units():
    angstrom, _ = parse_input(he3_input(), INPUTS)
    bohr_text = "\n".join(
        f"He {x * constants.conversion_factor('angstrom', 'bohr')!r} {y * constants.conversion_factor('angstrom', 'bohr')!r} "
        f"{z * constants.conversion_factor('angstrom', 'bohr')!r}"
        if line != "--"
        else "--"
        for line in HE3.splitlines()
        for x, y, z in ([map(float, line.split()[1:])] if line != "--" else [(0, 0, 0)])
    )
    bohr, _ = parse_input(he3_input(molecule={"geometry": bohr_text, "units": "bohr"}), INPUTS)
    assert angstrom.molecule == bohr.molecule
    reference = Molecule.from_data(HE3 + "units angstrom\nno_com\nno_reorient\n")
    np.testing.assert_array_equal(angstrom.molecule.geometry, reference.geometry)


def test_default_multiplicities_follow_electron_count():
    geometry = "O 0 0 0\nH 0 0 0.97\n--\nH 3 0 0\n--\nHe 0 3 0\n--\nO 0 0 6\nH 0 0 6.97\n"
    mbi, _ = parse_input(
        {"molecule": {"geometry": geometry, "fragment_charges": [-1, 0, 0, 0]}, "model": fake()}, INPUTS
    )
    mol = mbi.molecule
    assert list(mol.fragment_multiplicities) == [1, 2, 1, 2]  # OH-, H, He, OH
    assert mol.molecular_charge == -1 and mol.molecular_multiplicity == 3  # high-spin sum, as get_fragment uses


def test_levels_are_merged_and_labelled():
    levels = {
        1: fake("mp2", "cc-pVDZ", keywords={"conv_tol": 1e-10}),
        2: fake("MP2", "cc-pvdz", keywords={"conv_tol": 1e-10}),
        3: fake("hf", "cc-pvdz"),
        "supersystem": fake("hf", "cc-pvdz"),
    }
    mbi, _ = parse_input(he3_input(model=None, levels=levels, bsse="vmfc"), INPUTS, "levels.yaml")
    keywords = mbi.specification.keywords
    assert keywords.levels == {2: "mp2/cc-pvdz", 3: "hf/cc-pvdz", "supersystem": "hf/cc-pvdz (supersystem)"}
    assert keywords.max_nbody == 3
    specs = mbi.specification.specification
    assert set(specs) == {"mp2/cc-pvdz", "hf/cc-pvdz", "hf/cc-pvdz (supersystem)"}
    assert specs["mp2/cc-pvdz"].keywords == {"conv_tol": 1e-10}
    assert specs["hf/cc-pvdz (supersystem)"].model == specs["hf/cc-pvdz"].model


def test_levels_labels_name_the_program_and_repeat_non_adjacent_levels():
    levels = {1: fake("mp2", "cc-pvdz"), 2: fake("mp2", "cc-pvdz", program=FAKE2), 3: fake("mp2", "cc-pvdz")}
    mbi, _ = parse_input(he3_input(model=None, levels=levels), INPUTS)
    assert mbi.specification.keywords.levels == {
        1: f"{FAKE}-mp2/cc-pvdz",
        2: f"{FAKE2}-mp2/cc-pvdz",
        3: f"{FAKE}-mp2/cc-pvdz (3-body)",
    }
    assert mbi.specification.specification[f"{FAKE}-mp2/cc-pvdz (3-body)"].program == FAKE


def test_friendly_options_reach_the_manybody_input():
    data = he3_input(
        bsse="CP",
        driver="Hessian",
        max_nbody=2,
        return_total_data=True,
        supersystem_ie_only=False,
        cluster_results="all",
        model=fake("hf", "sto-3g", keywords={"scf_type": "pk"}),
        execution={"n_workers": 3, "memory_per_task": 1.5, "plugins": []},
    )
    mbi, options = parse_input(data, INPUTS)
    spec = mbi.specification
    assert spec.driver == "hessian" and spec.protocols.cluster_results == "all"
    assert spec.keywords.return_total_data is True and spec.keywords.max_nbody == 2
    assert spec.specification["(auto)"].keywords == {"scf_type": "pk"}
    assert options == ExecutionOptions(n_workers=3, memory_per_task=1.5)


def test_yaml_reads_exponent_floats_as_numbers(tmp_path):
    path = write(
        tmp_path,
        "w.yaml",
        f"molecule:\n  xyz: {WATER3}\n  atoms_per_fragment: 3\n"
        f"model: {{program: {FAKE}, method: hf, basis: sto-3g, keywords: {{conv_tol: 1e-10, n: 1e3}}}}\n",
    )
    mbi, _ = load_input(path)
    assert mbi.specification.specification["(auto)"].keywords == {"conv_tol": 1e-10, "n": 1000.0}


def test_qcschema_round_trip(tmp_path):
    original, _ = parse_input(he3_input(bsse=["cp", "nocp"], max_nbody=2, driver="gradient"), INPUTS)
    path = write(tmp_path, "mbi.json", original.model_dump_json())
    loaded, options = load_input(path)
    assert loaded == original and options == ExecutionOptions()

    data = json.loads(original.model_dump_json())
    data["execution"] = {"n_workers": 5}
    loaded, options = load_input(write(tmp_path, "mbi_exec.yaml", json.dumps(data)))
    assert loaded == original and options == ExecutionOptions(n_workers=5)


def test_qcschema_without_schema_name_and_v1_are_recognised(tmp_path):
    original, _ = parse_input(he3_input(), INPUTS)
    data = json.loads(original.model_dump_json())
    del data["schema_name"]
    loaded, _ = load_input(write(tmp_path, "noname.json", data))
    assert loaded == original

    v1 = original.convert_v(1)
    loaded, _ = load_input(write(tmp_path, "v1.json", v1.json()))
    assert loaded.molecule == original.molecule
    assert loaded.specification.keywords == original.specification.keywords


def test_qcschema_molecule_without_charges_gets_qcelementals_answer_fast():
    symbols = ["O", "H", "H", "H", "He", "O", "H"]
    geometry = np.arange(21, dtype=float) * 1.3
    fragments = [[0, 1, 2], [3], [4], [5, 6]]
    base = json.loads(parse_input(he3_input(), INPUTS)[0].model_dump_json())
    base["molecule"] = {"symbols": symbols, "geometry": geometry.tolist(), "fragments": fragments}
    mbi, _ = parse_input(base, INPUTS)
    searched = Molecule(symbols=symbols, geometry=geometry, fragments=fragments)  # QCElemental's own search
    assert list(mbi.molecule.fragment_multiplicities) == list(searched.fragment_multiplicities) == [1, 2, 1, 2]
    assert list(mbi.molecule.fragment_charges) == list(searched.fragment_charges)
    assert mbi.molecule.molecular_multiplicity == searched.molecular_multiplicity
    assert mbi.molecule.molecular_charge == searched.molecular_charge


def _water64_xyz(tmp_path: Path) -> Path:
    atoms = [line for line in WATER32.read_text().splitlines()[2:] if line.strip()]
    shifted = []
    for line in atoms:
        symbol, x, y, z = line.split()
        shifted.append(f"{symbol} {float(x) + 30.0:.6f} {y} {z}")
    return write(tmp_path, "water64.xyz", f"{2 * len(atoms)}\n(H2O)64\n" + "\n".join(atoms + shifted) + "\n")


@pytest.mark.timeout(60)
def test_64_fragments_load_in_about_a_second(tmp_path):
    _water64_xyz(tmp_path)
    path = write(
        tmp_path,
        "water64.yaml",
        f"molecule: {{xyz: water64.xyz, atoms_per_fragment: 3}}\nmodel: {{program: {FAKE}, method: hf, basis: sto-3g}}\n"
        "max_nbody: 3\nbsse: [cp, nocp, vmfc]\n",
    )
    start = time.perf_counter()
    mbi, _ = load_input(path)
    elapsed = time.perf_counter() - start
    print(f"(H2O)64 friendly input loaded in {elapsed:.3f} s")
    assert len(mbi.molecule.fragments) == 64
    assert elapsed < 5.0

    # a hand-written QCSchema file with no charges/multiplicities at all (QCElemental alone: hours)
    data = json.loads(mbi.model_dump_json())
    molecule = data["molecule"]
    for key in ("validated", "molecular_charge", "fragment_charges", "molecular_multiplicity"):
        molecule.pop(key)
    molecule.pop("fragment_multiplicities")
    path = write(tmp_path, "water64_qcschema.json", data)
    start = time.perf_counter()
    loaded, _ = load_input(path)
    elapsed = time.perf_counter() - start
    print(f"(H2O)64 QCSchema input without charges loaded in {elapsed:.3f} s")
    assert loaded.molecule.fragment_multiplicities == mbi.molecule.fragment_multiplicities
    assert elapsed < 5.0


def test_plugins_are_imported_before_programs_are_checked(tmp_path, monkeypatch):
    plugin = tmp_path / "mbe_test_plugin_prog.py"
    plugin.write_text(
        "import qcengine\n"
        "from qcengine.programs.model import ProgramHarness\n\n\n"
        "class PluginHarness(ProgramHarness):\n"
        "    _defaults = {'name': 'pluginprog', 'scratch': False, 'thread_safe': True, 'thread_parallel': False,\n"
        "                 'node_parallel': False, 'managed_memory': False}\n\n"
        "    @staticmethod\n"
        "    def found(raise_error=False):\n"
        "        return True\n\n"
        "    def compute(self, input_data, config):\n"
        "        raise NotImplementedError\n\n\n"
        "qcengine.register_program(PluginHarness())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        data = he3_input(model=fake(program="pluginprog"), execution={"plugins": ["mbe_test_plugin_prog"]})
        mbi, options = parse_input(data, INPUTS)
        assert options.plugins == ("mbe_test_plugin_prog",)
        assert mbi.specification.specification["(auto)"].program == "pluginprog"
    finally:
        sys.modules.pop("mbe_test_plugin_prog", None)
        if "pluginprog" in qcengine.list_all_programs():
            qcengine.unregister_program("pluginprog")


# ====  mistakes: one sentence each  ===========================================

XYZ_BAD_COUNT = "4\ncomment\nHe 0 0 0\nHe 0 0 3\nHe 0 3 0\n"
XYZ_BAD_COORD = "3\ncomment\nHe 0 0 0\nHe 0 abc 3\nHe 0 3 0\n"


@pytest.mark.parametrize(
    "name, content, expected",
    [
        (
            "bad.json",
            '{\n  "molecule": {\n    "geometry": "He 0 0 0",,\n  }\n}\n',
            ["bad.json", "malformed JSON", "line 3"],
        ),
        ("bad.yaml", "molecule:\n  geometry: [1, 2\nmodel: x\n", ["bad.yaml", "malformed YAML", "line"]),
        ("list.yaml", "- molecule\n- model\n", ["list.yaml", "top level must be a mapping", "list"]),
        ("empty.yaml", "", ["empty.yaml", "empty"]),
        (
            "dup.yaml",
            "molecule: {geometry: 'He 0 0 0'}\nmodel: {program: x}\nmodel: {program: y}\n",
            ["'model'", "twice"],
        ),
        ("dup.json", '{"model": 1, "model": 2}', ["'model'", "twice"]),
    ],
)
def test_file_syntax_errors(tmp_path, name, content, expected):
    message = error_of(load_input, write(tmp_path, name, content))
    for text in expected:
        assert text in message, message


def test_missing_file(tmp_path):
    message = error_of(load_input, tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "no such file" in message


def test_xyz_file_missing(tmp_path):
    path = write(tmp_path, "in.yaml", {"molecule": {"xyz": "gone.xyz", "atoms_per_fragment": 1}, "model": fake()})
    message = error_of(load_input, path)
    assert message.startswith(f"{path}: ") and "gone.xyz" in message and "not found" in message


@pytest.mark.parametrize(
    "xyz, expected",
    [
        (XYZ_BAD_COUNT, ["line 1 says 4 atoms", "3 atom lines"]),
        ("three\ncomment\nHe 0 0 0\n", ["line 1 should be the number of atoms", "'three'"]),
        (XYZ_BAD_COORD, ["line 4", "coordinate 'abc' is not a number"]),
        ("2\ncomment\nHe 0 0 0\nHe 0 0\n", ["line 4", "expected 'Symbol x y z'"]),
    ],
)
def test_malformed_xyz(tmp_path, xyz, expected):
    write(tmp_path, "m.xyz", xyz)
    path = write(tmp_path, "in.yaml", {"molecule": {"xyz": "m.xyz", "atoms_per_fragment": 1}, "model": fake()})
    message = error_of(load_input, path)
    assert "m.xyz" in message
    for text in expected:
        assert text in message, message


W2 = "O 0 0 0\nH 0 0 0.97\nH 0.94 0 -0.24\nO 3 0 0\nH 3 0 0.97\nH 3.94 0 -0.24\n"


@pytest.mark.parametrize(
    "data, expected",
    [
        # top level and sections
        ({**he3_input(), "bsse_type": "cp"}, ["unknown key 'bsse_type'", "did you mean 'bsse'", "allowed keys"]),
        ({"model": fake()}, ["no molecule"]),
        (he3_input(execution={"n_worker": 2}), ["unknown option 'n_worker'", "execution"]),
        (he3_input(execution={"n_workers": 0}), ["execution.n_workers", "got 0"]),
        (he3_input(execution={"threads_per_task": "two"}), ["execution.threads_per_task", "'two'"]),
        (he3_input(execution=[1]), ["execution must be a mapping"]),
        (
            he3_input(execution={"plugins": ["no_such_plugin_module_xyz"]}),
            ["plugin module 'no_such_plugin_module_xyz'"],
        ),
        # molecule
        (he3_input(molecule={"geometry": HE3, "xyz": "a.xyz"}), ["both xyz and geometry"]),
        (he3_input(molecule={"fragments": [[0]]}), ["no atoms", "xyz", "geometry"]),
        (he3_input(molecule={"geometry": HE3, "charge": 1}), ["unknown key 'charge' in molecule", "fragment_charges"]),
        (he3_input(molecule={"geometry": HE3, "units": "nm"}), ["units 'nm'", "angstrom or bohr"]),
        (he3_input(molecule={"geometry": "Xx 0 0 0\n--\nHe 0 0 3"}), ["unknown element symbol 'Xx'", "line 1"]),
        (he3_input(molecule={"geometry": "He 0 0 0\nHe 0 0 3"}), ["no fragments", "atoms_per_fragment"]),
        (
            he3_input(molecule={"geometry": HE3, "atoms_per_fragment": 1}),
            ["'--' separator lines", "one way only"],
        ),
        (he3_input(molecule={"geometry": "--\n" + HE3}), ["empty fragment"]),
        (
            he3_input(molecule={"geometry": W2, "fragments": [[0, 1, 2], [2, 3, 4, 5]]}),
            ["fragment 2 contains atom 2, which is also in fragment 1", "exactly one fragment"],
        ),
        (
            he3_input(molecule={"geometry": W2, "fragments": [[0, 1, 2], [3, 4]]}),
            ["atom 5 is in no fragment", "exactly one fragment"],
        ),
        (
            he3_input(molecule={"geometry": W2, "fragments": [[0, 1, 2], [3, 4, 5, 6]]}),
            ["fragment 2 contains atom 6", "6 atoms", "0 to 5"],
        ),
        (
            he3_input(molecule={"geometry": W2, "fragments": [[0, 3, 4], [1, 2, 5]]}),
            ["fragment 1 is atoms [0, 3, 4]", "consecutive", "reorder the atoms"],
        ),
        (
            he3_input(molecule={"geometry": W2, "fragments": [[3, 4, 5], [0, 1, 2]]}),
            ["fragment 1", "reorder the atoms"],
        ),
        (he3_input(molecule={"geometry": W2, "fragments": [[0, 1.5]]}), ["list of lists of 0-based atom indices"]),
        (he3_input(molecule={"geometry": W2, "atoms_per_fragment": 4}), ["atoms_per_fragment 4", "6 atoms"]),
        (he3_input(molecule={"geometry": W2, "atoms_per_fragment": 0}), ["atoms_per_fragment", "at least 1"]),
        (
            he3_input(molecule={"geometry": HE3, "fragment_charges": [0, 0]}),
            ["fragment_charges", "one charge per fragment (3)"],
        ),
        (
            he3_input(molecule={"geometry": HE3, "fragment_multiplicities": [1, 1, 1, 1]}),
            ["fragment_multiplicities", "one multiplicity per fragment (3)"],
        ),
        (
            he3_input(molecule={"geometry": W2, "atoms_per_fragment": 3, "fragment_multiplicities": [1, 2]}),
            ["fragment 2 (OH2, charge 0) has 10 electrons", "must be odd", "not 2"],
        ),
        (
            he3_input(molecule={"geometry": HE3, "fragment_multiplicities": [1, 0, 1]}),
            ["fragment 2 (He) multiplicity", "at least 1", "got 0"],
        ),
        (
            he3_input(molecule={"geometry": HE3, "fragment_charges": [0, 3, 0]}),
            ["fragment 2 (He) has only 2 electrons", "cannot have charge 3"],
        ),
        (
            he3_input(molecule={"geometry": HE3, "fragment_multiplicities": [1, 1, 5]}),
            ["fragment 3 (He, charge 0) has 2 electrons, too few for multiplicity 5"],
        ),
        (he3_input(molecule={"geometry": HE3, "fragment_charges": [0, 0.5, 0]}), ["charge must be a whole number"]),
        # model chemistry
        (he3_input(model=None), ["neither model nor levels"]),
        (he3_input(levels={1: fake()}), ["both model and levels"]),
        (he3_input(model={"method": "hf"}), ["model has no program"]),
        (he3_input(model={"program": FAKE}), ["model has no method"]),
        (he3_input(model={**fake(), "basis_set": "x"}), ["unknown key 'basis_set' in model", "did you mean 'basis'"]),
        (he3_input(model=fake(program="pysf")), ["unknown program 'pysf'", "programs available here"]),
        (he3_input(model=fake(method="ccsdt")), [f"{FAKE} cannot do method 'ccsdt'", "available methods"]),
        (
            he3_input(model=None, levels={1: fake(), 3: fake("mp2")}),
            ["levels must be contiguous from 1", "2 is missing"],
        ),
        (he3_input(model=None, levels={2: fake(), 3: fake("mp2")}), ["level 1 is missing"]),
        (he3_input(model=None, levels={"two": fake()}), ["levels key 'two'"]),
        (he3_input(model=None, levels={1: fake(), 2: {"method": "mp2"}}), ["levels.2 has no program"]),
        (
            he3_input(model=None, levels={1: fake(), 2: fake("mp2")}, max_nbody=3),
            ["max_nbody 3 contradicts levels", "2-body"],
        ),
        (he3_input(model=None, levels={1: fake(), 4: fake()}), ["contiguous"]),
        # many-body keywords
        (he3_input(bsse=["cp", "cpp"]), ["unknown bsse type 'cpp'", "nocp, cp, vmfc"]),
        (he3_input(bsse=[]), ["bsse must be one of"]),
        (he3_input(driver="energie"), ["unknown driver 'energie'", "energy, gradient, hessian"]),
        (he3_input(driver="properties"), ["unknown driver 'properties'"]),
        (he3_input(max_nbody=4), ["max_nbody 4 is out of range for 3 fragments", "1 to 3"]),
        (he3_input(max_nbody=0), ["max_nbody 0 is out of range"]),
        (he3_input(max_nbody="2"), ["max_nbody must be a whole number"]),
        (he3_input(return_total_data="yes"), ["return_total_data must be true or false"]),
        (he3_input(cluster_results="some"), ["unknown cluster_results 'some'"]),
        (
            he3_input(embedding_charges={1: [0.0], 2: [0.0], 3: [0.0]}, return_total_data=True),
            ["embedding_charges work only with program psi4", f"'{FAKE}'"],
        ),
        (
            he3_input(supersystem_ie_only=True, max_nbody=2),
            ["QCManyBody refuses", "max_nbody=2 != nfragments=3"],
        ),
    ],
)
def test_friendly_mistakes(data, expected):
    data = {key: value for key, value in data.items() if value is not None}
    message = error_of(parse_input, data, INPUTS, "in.yaml")
    assert message.startswith("in.yaml: "), message
    for text in expected:
        assert text in message, message


# ----  QCSchema mistakes  -------------------------------------------------------


def _qcschema() -> dict:
    return json.loads(parse_input(he3_input(), INPUTS)[0].model_dump_json())


def _refragment(data: dict, fragments: list[list[int]]) -> None:
    n = len(fragments)
    data["molecule"].update(fragments=fragments, fragment_charges=[0] * n, fragment_multiplicities=[1] * n)


def _edit(change) -> dict:
    data = _qcschema()
    change(data)
    return data


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda d: d["specification"].update(driver="energie"),
            ["invalid QCSchema ManyBodyInput", "specification.driver", "'energie'"],
        ),
        (lambda d: d["specification"]["keywords"].update(bsse_type=["cpp"]), ["specification.keywords.bsse_type"]),
        (lambda d: d.update(extra_key=1), ["extra_key"]),
        (lambda d: d.update(execution={"n_workers": -1}), ["execution.n_workers"]),
        (lambda d: d.update(schema_name="qcschema_many_body_result"), ["is not a many-body input"]),
        (lambda d: d["specification"].update(driver="properties"), ["driver 'properties'"]),
        (lambda d: _refragment(d, [[0, 1, 2]]), ["only one fragment"]),
        (lambda d: _refragment(d, [[0, 2], [1]]), ["fragment 1 is atoms [0, 2]", "reorder the atoms"]),
        (lambda d: d["specification"]["keywords"].update(max_nbody=7), ["max_nbody 7 is out of range"]),
        (
            lambda d: d["specification"]["keywords"].update(levels={1: "(auto)", 2: "mp2"}, max_nbody=None),
            ["keywords.levels[2] names model chemistry 'mp2'", "'(auto)'"],
        ),
        (
            lambda d: d["specification"]["keywords"].update(levels={3: "(auto)"}, max_nbody=2),
            ["max_nbody 2 contradicts keywords.levels"],
        ),
        (
            lambda d: d["specification"].update(specification={"a": d["specification"]["specification"]["(auto)"]}),
            ["without keywords.levels", "'(auto)'", "'a'"],
        ),
        (
            lambda d: d["specification"]["specification"]["(auto)"]["model"].update(method="ccsdt"),
            ["model chemistry '(auto)'", "cannot do method 'ccsdt'"],
        ),
        (
            lambda d: d["specification"]["keywords"].update(embedding_charges={"1": [0.0], "2": [0.0], "3": [0.0]}),
            ["embedding_charges work only with program psi4"],
        ),
    ],
)
def test_qcschema_mistakes(tmp_path, change, expected):
    path = write(tmp_path, "mbi.json", _edit(change))
    message = error_of(load_input, path)
    assert message.startswith(f"{path}: "), message
    for text in expected:
        assert text in message, message


def test_validate_manybody_input_without_a_file_name():
    mbi, _ = parse_input(he3_input(), INPUTS)
    validate_manybody_input(mbi)
    bad = ManyBodyInput(**_edit(lambda d: d["specification"]["specification"]["(auto)"].update(program="pysf")))
    message = error_of(validate_manybody_input, bad)
    assert message.startswith("model chemistry '(auto)': unknown program 'pysf'"), message


@pytest.mark.skipif("pyscf" not in qcengine.list_all_programs(), reason="pyscf harness not registered")
def test_unknown_method_with_the_real_pyscf_harness():
    message = error_of(
        parse_input, he3_input(model={"program": "pyscf", "method": "nosuchmethod", "basis": "sto-3g"}), INPUTS
    )
    assert "nosuchmethod" in message, message
