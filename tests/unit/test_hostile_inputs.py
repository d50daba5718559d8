"""Inputs a user (or a script gone wrong) may hand over: each is refused with one line, before any QC work.

QCSchema inputs get the same checks as friendly ones (charges, multiplicities, finite and sane
geometry); files are read within bounds (size, regular files, nesting depth, YAML alias expansion).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import mbe_mpi  # noqa: F401  (registers the synthetic program)
from mbe_mpi.errors import InputError
from mbe_mpi.harnesses import import_plugins
from mbe_mpi.inputs import load_input

from ..conftest import DATA, cluster_molecule, manybody_input, water_cluster_xyz

SYNTHETIC = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None}}


def _water4() -> dict:
    """A QCSchema water tetramer as ``model_dump_json`` writes it (``validated: true``: QCElemental checks nothing)."""
    return json.loads(manybody_input(cluster_molecule(4), specification=SYNTHETIC).model_dump_json())


def _refused(path: Path, *phrases: str) -> str:
    with pytest.raises(InputError) as refused:
        load_input(path)
    message = str(refused.value)
    assert "\n" not in message, message
    for phrase in phrases:
        assert phrase in message, message
    return message


@pytest.mark.parametrize("change, phrases", [
    ({"fragment_multiplicities": [2, 1, 1, 1]},
     ["fragment 1 (OH2, charge 0) has 10 electrons", "multiplicity must be odd", "not 2"]),
    ({"fragment_charges": [3, 0, 0, 0], "molecular_charge": 3},
     ["fragment 1 (OH2, charge 3) has 7 electrons", "not 1"]),
    ({"molecular_multiplicity": 2}, ["the whole molecule has 40 electrons", "multiplicity 2"]),
    ({"molecular_charge": 1}, ["molecular_charge 1 is not the sum of the fragment charges"]),
])
def test_qcschema_with_impossible_charge_or_multiplicity_is_refused(change, phrases, tmp_path):
    data = _water4()
    data["molecule"].update(change)
    path = tmp_path / "water4_bad.json"
    path.write_text(json.dumps(data))
    _refused(path, *phrases)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e300"])
def test_qcschema_with_non_finite_or_absurd_coordinates_is_refused(value, tmp_path):
    data = _water4()
    data["molecule"]["geometry"][4] = "@"
    path = tmp_path / "w4.json"
    path.write_text(json.dumps(data).replace('"@"', value))  # what json.dumps writes for nan and inf
    _refused(path, "atom 1 has coordinate", "not a finite position")


def test_friendly_yaml_with_huge_or_clashing_coordinates_is_refused(tmp_path):
    xyz = water_cluster_xyz(3).splitlines()
    huge = "\n".join([*xyz[:3], "H 1e300 0 0", *xyz[4:]])
    (tmp_path / "huge.xyz").write_text(huge + "\n")
    clash = "\n".join([*xyz[:3], xyz[2].replace("O", "H", 1), *xyz[4:]])
    (tmp_path / "clash.xyz").write_text(clash + "\n")
    for name, phrase in (("huge", "not a finite position"), ("clash", "Angstrom apart")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"molecule: {{xyz: {name}.xyz, atoms_per_fragment: 3}}\n"
                        "model: {program: synthetic, method: synthetic}\nbsse: nocp\n")
        _refused(path, phrase)


def _friendly(tmp_path: Path, keywords: str) -> Path:
    (tmp_path / "w3.xyz").write_text(water_cluster_xyz(3))
    path = tmp_path / "bomb.yaml"
    path.write_text("molecule: {xyz: w3.xyz, atoms_per_fragment: 3}\n"
                    f"model:\n  program: synthetic\n  method: synthetic\n  keywords:\n{keywords}bsse: nocp\n")
    return path


def test_yaml_alias_bomb_inside_keywords_is_refused_at_once(tmp_path):
    levels = ["    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"]
    for i in range(1, 10):
        levels.append(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n")
    started = time.monotonic()
    _refused(_friendly(tmp_path, "".join(levels)), "expands to more than")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_absurdly_deep_nesting_is_one_line_not_a_recursion_error(suffix, tmp_path):
    path = tmp_path / f"deep{suffix}"
    depth = 100_000
    path.write_text('{"molecule": ' + "[" * depth + "]" * depth + "}")
    _refused(path, "nested more than")


def test_xyz_that_is_a_device_or_huge_is_refused_without_reading_it(tmp_path):
    for target, phrase in (("/dev/zero", "not a regular file"), (str(tmp_path / "huge.xyz"), "MB, more than")):
        if target.endswith("huge.xyz"):
            with open(target, "wb") as sparse:
                sparse.truncate(300 * 1024**2)  # a sparse file: no disk used, and never read
        path = tmp_path / "big.yaml"
        path.write_text(f"molecule: {{xyz: {target}, atoms_per_fragment: 3}}\n"
                        "model: {program: synthetic, method: synthetic}\n")
        _refused(path, phrase)
    fifo = tmp_path / "pipe.xyz"
    os.mkfifo(fifo)
    path = tmp_path / "fifo.yaml"
    path.write_text(f"molecule: {{xyz: {fifo}, atoms_per_fragment: 3}}\nmodel: {{program: synthetic, method: synthetic}}\n")
    _refused(path, "not a regular file")


def test_a_plugin_may_be_given_as_a_path(tmp_path, monkeypatch):
    site = tmp_path / "site.py"  # the name of a standard-library module, on purpose
    site.write_text((DATA / "plugins" / "site_harness.py").read_text().replace("sitepair", "sitepathpair"))
    monkeypatch.chdir(tmp_path)
    import_plugins(["./site.py"])
    import_plugins([str(site)])  # the same file again: imported once
    import qcengine

    assert "sitepathpair" in qcengine.list_all_programs()
    with pytest.raises(InputError, match="is not a file; give the path of a .py file, or a module name"):
        import_plugins(["./no_such_site.py"])
