"""The worker-built molecule and AtomicInput equal what QCManyBody builds, for every label."""

from __future__ import annotations

import copy

import pytest
from qcelemental.models.v2 import AtomicInput
from qcmanybody import ManyBodyCore
from qcmanybody.utils import labeler

from mbe_mpi.fragments import FragmentBuilder, build_atomic_input, build_fragment_molecule
from mbe_mpi.plan import atomic_specifications, build_plan, iter_labels

from ..conftest import cluster_molecule, manybody_input

CASES = {
    "nocp-2body": dict(n=3, bsse=["nocp"], levels={1: "hf", 2: "hf"}),
    "cp-3body": dict(n=3, bsse=["cp"], levels={1: "hf", 2: "hf", 3: "hf"}),
    "vmfc-multi": dict(n=4, bsse=["vmfc", "cp"], levels={1: "mp2", 2: "hf"}),
    "all-supersystem": dict(n=4, bsse=["nocp", "cp", "vmfc"], levels={1: "mp2", 2: "hf", "supersystem": "b3lyp"}),
    "charged-c1": dict(n=3, bsse=["cp", "nocp"], levels={1: "hf", 2: "hf"}, hydroxide=True, fix_symmetry="c1"),
}


def _core(case, embedding=None):
    extra = {"fix_symmetry": case["fix_symmetry"]} if "fix_symmetry" in case else {}
    mol = cluster_molecule(case["n"], hydroxide=case.get("hydroxide", False), **extra)
    return ManyBodyCore(mol, case["bsse"], case["levels"], return_total_data=True, supersystem_ie_only=False,
                        embedding_charges=embedding or {})


@pytest.mark.parametrize("builder", ["validated", "FragmentBuilder"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_molecules_equal_iterate_molecules(name, builder):
    core = _core(CASES[name])
    fast = FragmentBuilder(core)
    build = fast.molecule if builder == "FragmentBuilder" else lambda real, basis: build_fragment_molecule(core, real, basis)
    reference = list(core.iterate_molecules())
    assert len(reference) > 3
    labels = [labeler(mc, real, basis) for mc, real, basis in iter_labels(core)]
    assert labels == [label for _, label, _ in reference]
    ghosts = 0
    for (mc, real, basis), (ref_mc, _, ref_mol) in zip(iter_labels(core), reference, strict=True):
        assert mc == ref_mc
        mol = build(real, basis)
        assert mol.model_dump_json() == ref_mol.model_dump_json()
        assert mol.model_fields_set == ref_mol.model_fields_set  # what exclude_unset dumps sees too
        assert mol == ref_mol  # qcelemental's own comparison (hash of geometry, symbols, charges ...)
        ghosts += not all(mol.real)
    if "cp" in CASES[name]["bsse"] or "vmfc" in CASES[name]["bsse"]:
        assert ghosts > 0  # the case really exercises counterpoise ghosts
    if builder == "FragmentBuilder":
        assert len(fast._templates) < len(reference)  # some molecules really were copies


def test_fragment_builder_copies_are_independent_and_cover_a_realistic_cluster():
    """Ten waters from water32.xyz, VMFC 3-body: 985 molecules of a few kinds, all equal to QCManyBody's."""
    core = ManyBodyCore(cluster_molecule(10), ["vmfc"], {1: "hf", 2: "hf", 3: "hf"}, return_total_data=True,
                        supersystem_ie_only=False, embedding_charges={})
    fast = FragmentBuilder(core)
    count = 0
    for (_, real, basis), (_, _, ref_mol) in zip(iter_labels(core), core.iterate_molecules(), strict=True):
        mol = fast.molecule(real, basis)
        assert mol.model_dump_json() == ref_mol.model_dump_json()
        mol.extras["touched"] = True  # a harness writing into one task's molecule ...
        mol.geometry[0, 0] += 1.0
        count += 1
    assert count == 985
    assert len(fast._templates) < 40
    for template in fast._templates.values():  # ... leaves the kept templates alone
        assert "touched" not in template.extras


def test_atomic_input_equals_sequential_computer():
    """AtomicInput as ManyBodyComputer.from_manybodyinput builds it (deep-copied specification)."""
    mbi = manybody_input(cluster_molecule(3), driver="gradient", bsse=["cp"],
                         specification={"program": "pyscf", "driver": "energy",
                                        "model": {"method": "hf", "basis": "sto-3g"},
                                        "keywords": {"conv_tol": 1e-10}})
    plan = build_plan(mbi)
    specs = atomic_specifications(plan.computer)
    fast = FragmentBuilder(plan.core)
    for (mc, label, mol), task in zip(plan.core.iterate_molecules(), plan.tasks, strict=True):
        assert plan.label(task) == label
        reference = AtomicInput(molecule=mol, specification=copy.deepcopy(specs[mc]["specification"]))
        for molecule in (build_fragment_molecule(plan.core, task.real, task.basis), fast.molecule(task.real, task.basis)):
            built = build_atomic_input(molecule, specs[mc]["program"], specs[mc]["specification"])
            assert built.model_dump_json() == reference.model_dump_json()
        assert built.specification.driver == "gradient"  # the many-body driver wins
