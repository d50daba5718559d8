"""The ``screening`` section: both formats, stored in the input, and one readable line for every bad rule."""

from __future__ import annotations

import json

import pytest

import mbe_mpi
from mbe_mpi.errors import InputError
from mbe_mpi.inputs import parse_input
from mbe_mpi.screening import ScreeningRules, screening_of, with_screening

from ..conftest import cluster_molecule, manybody_input, water_cluster_xyz

SYNTHETIC = {"program": "synthetic", "method": "synthetic"}


def friendly(screening, **extra):
    return {"molecule": {"geometry": water_cluster_xyz(5).split("\n", 2)[2], "atoms_per_fragment": 3},
            "model": SYNTHETIC, "bsse": ["nocp", "cp"], "max_nbody": 3, "screening": screening, **extra}


def test_friendly_section_is_stored_in_the_input_and_reads_back():
    mbi, _ = parse_input(friendly({"distance": {2: 8.0, "3": 6.0}, "energy": {3: 1e-5},
                                   "prescreen": {"model": {"program": "tblite", "method": "GFN2-xTB"},
                                                 "threshold": {2: 1e-5, 3: 1e-6}}}))
    rules = screening_of(mbi)
    assert rules.distance == {2: 8.0, 3: 6.0} and rules.energy == {3: 1e-5}
    assert (rules.prescreen.program, rules.prescreen.method, rules.prescreen.basis) == ("tblite", "gfn2-xtb", None)
    assert rules.prescreen.threshold == {2: 1e-5, 3: 1e-6}
    # the input travels as JSON (JOB message, checkpoint, result.input_data): the rules with it
    again = type(mbi).model_validate_json(mbi.model_dump_json())
    assert screening_of(again) == rules
    assert mbi.specification.extras["mbe_mpi"]["screening"] == rules.to_dict()


def test_qcschema_takes_a_top_level_screening_key_beside_execution():
    mbi = manybody_input(cluster_molecule(4), bsse=["cp"], max_nbody=3,
                         specification={"program": "synthetic", "driver": "energy",
                                        "model": {"method": "synthetic", "basis": None}})
    data = {**json.loads(mbi.model_dump_json()), "screening": {"distance": {"2": 4.0}}, "execution": {"n_workers": 1}}
    parsed, options = parse_input(data)
    assert screening_of(parsed) == ScreeningRules(distance={2: 4.0})
    assert options.n_workers == 1
    assert screening_of(mbi) is None  # an input without rules has none


def test_empty_section_means_the_full_expansion():
    mbi, _ = parse_input(friendly({}))
    assert screening_of(mbi) is None and "mbe_mpi" not in (mbi.specification.extras or {})
    assert screening_of(with_screening(mbi, {"distance": {}, "energy": {}})) is None


@pytest.mark.parametrize("screening, message", [
    ({"distance": {2: -1.0}}, r"screening.distance\[2\] must be a finite number of Angstrom \(0 or more\), got -1.0"),
    ({"energy": {3: -1e-5}}, r"screening.energy\[3\] must be a finite number of Eh"),
    ({"distance": {2: "far"}}, r"screening.distance\[2\] must be a finite number"),
    ({"distance": {2: float("nan")}}, r"screening.distance\[2\] must be a finite number"),
    ({"distance": {4: 5.0}}, r"screening.distance has a rule for level 4, above max_nbody 3"),
    ({"prescreen": {"model": {"program": "tblite", "method": "gfn2-xtb"}, "threshold": {5: 1e-5}}},
     r"screening.prescreen.threshold has a rule for level 5, above max_nbody 3"),
    ({"distance": {1: 5.0}}, r"screening.distance has a rule for level 1, but monomers are always kept"),
    ({"distance": {"two": 5.0}}, r"screening.distance key 'two' is not an n-body level"),
    ({"energy": {2: 1e-5}}, r"screening.energy has a rule for level 2, but dimers have no \(n-1\)-body sub-clusters"
                            r".*screening.prescreen"),
    ({"energy": {2: 1e-5}, "prescreen": {"model": {"program": "tblite", "method": "gfn2-xtb"},
                                         "threshold": {3: 1e-5}}},
     r"screening.energy has a rule for level 2.*screening.prescreen.threshold instead"),
    ({"prescreen": {"model": {"program": "psi4", "method": "hf", "basis": "sto-3g"}, "threshold": {2: 1e-5}}},
     r"screening.prescreen.model: program 'psi4' is known to QCEngine but not installed here"),
    ({"prescreen": {"model": {"program": "nonesuch", "method": "hf"}, "threshold": {2: 1e-5}}},
     r"screening.prescreen.model: unknown program 'nonesuch'"),
    ({"prescreen": {"model": {"program": "tblite", "method": "gfn2-xtb"}}}, r"screening.prescreen has no threshold"),
    ({"prescreen": {"threshold": {2: 1e-5}}}, r"screening.prescreen has no model"),
    ({"cutoff": {2: 5.0}}, r"unknown key 'cutoff' in screening"),
    ({"prescreen": {"model": {"program": "tblite", "method": "gfn2-xtb"}, "threshold": {2: 1e-5}, "basis": "x"}},
     r"unknown key 'basis' in screening.prescreen"),
    ([2, 5.0], r"screening must be a mapping"),
    ({"distance": [5.0]}, r"screening.distance must be a mapping of n-body level to Angstrom"),
])
def test_bad_rules_are_refused_with_one_line(screening, message):
    with pytest.raises(InputError, match=message) as error:
        parse_input(friendly(screening))
    assert "\n" not in str(error.value)


def test_screening_with_a_supersystem_is_refused():
    levels = {1: SYNTHETIC, 2: SYNTHETIC, "supersystem": {"program": "synthetic", "method": "synthetic",
                                                           "keywords": {"seconds": 0.0}}}
    data = friendly({"distance": {2: 5.0}}, levels=levels)
    del data["model"], data["max_nbody"]
    with pytest.raises(InputError, match="screening cannot be combined with a supersystem level"):
        parse_input(data)


def test_rules_stored_by_hand_in_a_manybodyinput_are_checked_too():
    mbi = manybody_input(cluster_molecule(3), bsse=["nocp"], max_nbody=2,
                         specification={"program": "synthetic", "driver": "energy",
                                        "model": {"method": "synthetic", "basis": None}})
    bad = with_screening(mbi, {"distance": {"3": 5.0}})
    with pytest.raises(InputError, match="level 3, above max_nbody 2"):
        mbe_mpi.compute(bad, n_workers=1)
    with pytest.raises(InputError, match=r"compute\(\): screening.distance\[2\] must be"):
        mbe_mpi.compute(mbi, n_workers=1, screening={"distance": {2: -3}})
    with pytest.raises(InputError, match="screening is given twice"):
        mbe_mpi.compute({**json.loads(mbi.model_dump_json()), "screening": {}}, screening={"distance": {2: 1}})
