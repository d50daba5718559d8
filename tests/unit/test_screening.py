"""Screening without processes: which n-mers levels keep, and surrogates that make QCManyBody's own
``analyze`` assemble exactly the truncated expansion.

The oracle (:mod:`tests.truncated`) takes every task value from a full QCManyBody run made in the
test and sums the increments of the kept n-mers, from the definitions. Here mbe_mpi's side gets
the same task values for the tasks its kept n-mers need (what workers would send) and nothing for
the rest, so these tests check the decisions, the task selection and the surrogates; the runs over
processes (tests/cli, tests/mpi) check the wiring.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from mbe_mpi.assemble import assemble
from mbe_mpi.plan import build_plan
from mbe_mpi.protocol import ResultMessage
from mbe_mpi.screening import (
    LevelDecisions,
    ScreenedExpansion,
    ScreeningRules,
    closest_contacts,
    distance_levels,
    surrogate_values,
)

from .. import truncated
from ..conftest import assert_same_result, cluster_molecule, manybody_input, sequential_reference


def synthetic(driver="energy", **keywords):
    spec = {"program": "synthetic", "driver": driver, "model": {"method": "synthetic", "basis": None}}
    if keywords:
        spec["keywords"] = keywords
    return spec


def _mbi(nfrag, bsse, driver="energy", max_nbody=None, levels=None, specification=None, **kw):
    return manybody_input(cluster_molecule(nfrag), driver=driver, bsse=bsse, max_nbody=max_nbody, levels=levels,
                          specification=specification or synthetic(driver), **kw)


# name -> (ManyBodyInput, distance, energy). Synthetic (non-additive, ghosts matter) unless said otherwise.
CASES = {
    "nocp-cp-vmfc-energy-rule": (_mbi(6, ["nocp", "cp", "vmfc"], max_nbody=3), {2: 6.0}, {3: 0.12}),
    "nocp-cp-vmfc-distance": (_mbi(6, ["nocp", "cp", "vmfc"], max_nbody=3), {2: 4.5, 3: 4.0}, {}),
    "vmfc-gradient": (_mbi(6, ["vmfc"], "gradient", max_nbody=3), {2: 4.5, 3: 4.0}, {3: 0.12}),
    "cp-hessian": (_mbi(5, ["cp"], "hessian", max_nbody=3), {2: 4.5, 3: 4.0}, {}),
    "cp-nocp-total-data": (_mbi(5, ["cp", "nocp"], max_nbody=3, return_total_data=True), {2: 5.0}, {3: 0.1}),
    # the whole cluster is an n-mer (max_nbody = 4 fragments) and is skipped: nocp and cp need two views
    "whole-cluster-nocp-cp-vmfc-gradient": (_mbi(4, ["nocp", "cp", "vmfc"], "gradient"), {2: 3.0}, {}),
    "whole-cluster-vmfc-nocp-hessian": (_mbi(4, ["vmfc", "nocp"], "hessian"), {2: 4.5, 3: 4.0}, {}),
    "whole-cluster-cp": (_mbi(4, ["cp"]), {3: 4.0}, {}),
    "whole-cluster-nocp-energy-rule": (_mbi(4, ["nocp"]), {}, {3: 5.0e-2, 4: 1.0}),
    "multilevel-vmfc-cp": (_mbi(5, ["vmfc", "cp"], levels={1: "a", 2: "b", 3: "c"}, specification={
        "a": synthetic(), "b": synthetic(seconds=0.0), "c": synthetic(exponent=1.0)}), {2: 4.5, 3: 4.0}, {3: 0.15}),
    # vmfc alone at two model chemistries: no nocp is added, the vmfc-only tasks of skipped n-mers are zeros
    "multilevel-vmfc-only-whole-cluster": (_mbi(4, ["vmfc"], levels={2: "a", 4: "b"}, specification={
        "a": synthetic(), "b": synthetic(seconds=0.0)}), {2: 3.0}, {}),
    "tblite-nocp-vmfc": (_mbi(7, ["nocp", "vmfc"], max_nbody=3, specification={
        "program": "tblite", "driver": "energy", "model": {"method": "gfn2-xtb", "basis": None}}),
        {2: 5.0, 3: 4.5}, {3: 5.0e-3}),
    "pyscf-cp-gradient": (_mbi(4, ["cp"], "gradient", max_nbody=3, specification={
        "program": "pyscf", "driver": "gradient", "model": {"method": "hf", "basis": "sto-3g"}}),
        {2: 3.5}, {3: 3.0e-3}),
    "multilevel-nocp-vmfc-gradient": (_mbi(4, ["nocp", "vmfc"], "gradient", levels={2: "a", 4: "b"}, specification={
        "a": synthetic("gradient"), "b": synthetic("gradient", seconds=0.0)}), {2: 3.0}, {}),
}


@functools.cache
def reference(name):
    return sequential_reference(CASES[name][0])


def task_values(plan, reference_result, task) -> ResultMessage:
    """What a worker would send for ``task``: the reference's values in the task's own basis."""
    props = reference_result.cluster_properties[plan.label(task)]
    gradient = hessian = None
    if props.return_gradient is not None:
        gradient = plan.core.resize_gradient(np.asarray(props.return_gradient), task.basis, reverse=True)
    if props.return_hessian is not None:
        hessian = plan.core.resize_hessian(np.asarray(props.return_hessian), task.basis, reverse=True)
    return ResultMessage(task.index, 1, 0.0, energy=float(props.return_energy), gradient=gradient, hessian=hessian)


def screened_result(mbi, reference_result, rules):
    """Decide level by level from the needed tasks' values only, then assemble with surrogates."""
    plan = build_plan(mbi)
    expansion = ScreenedExpansion(plan, rules)
    results = {}
    for level in range(1, expansion.max_nbody + 1):
        for task in expansion.decide(level):
            results[task.index] = task_values(plan, reference_result, task)
            expansion.record(task.index, results[task.index].energy)
    values = {index: message.properties() for index, message in results.items()}
    surrogates = surrogate_values(plan, results.keys(), values)
    return assemble(plan, results, surrogates), expansion, plan


def _props(mbi):
    driver = mbi.specification.driver.value
    return {"energy": ("energy",), "gradient": ("energy", "gradient"), "hessian": ("energy", "gradient", "hessian")
            }[driver]


@pytest.mark.parametrize("name", sorted(CASES))
def test_screened_result_is_the_truncated_expansion(name):
    mbi, distance, energy = CASES[name]
    ref = reference(name)
    result, expansion, plan = screened_result(mbi, ref, ScreeningRules(distance=distance, energy=energy))
    kept = truncated.kept_nmers(mbi, ref, distance, energy)
    assert expansion.kept == kept
    assert len(kept) < sum(1 for _ in ref.cluster_properties)  # something was skipped
    computed = {plan.label(task) for task in expansion.needed()}
    assert computed == truncated.needed_labels(mbi, ref, kept)  # no more tasks than kept n-mers need
    assert result.properties.calcinfo_nmbe == len(computed) == len(result.cluster_properties)
    assert truncated.assert_truncated(result, mbi, ref, kept, 1e-12, _props(mbi)) >= 2
    # and the test can fail: the truncated expansion is measurably not the full one
    full = ref.properties.model_dump()
    got = result.properties.model_dump()
    differs = [key for key, value in full.items() if "interaction_energy_through" in key and value is not None
               and abs(got[key] - value) > 1e-6]
    assert differs, "the rules skipped nothing that matters; this case would not test the surrogates"
    if energy:
        assert any(row["skipped_energy"] for row in expansion.report()["levels"].values()), "energy rule unused"


@pytest.mark.parametrize("name", ["nocp-cp-vmfc-distance", "whole-cluster-vmfc-nocp-hessian", "multilevel-vmfc-cp"])
def test_rules_that_skip_nothing_are_bit_identical_to_qcmanybody(name):
    mbi, _, _ = CASES[name]
    ref = reference(name)
    result, expansion, _ = screened_result(mbi, ref, ScreeningRules(distance={2: 100.0}, energy={3: 0.0}))
    assert expansion.report()["tasks"]["needed"] == expansion.report()["tasks"]["full"]
    assert_same_result(result, ref, tol=0.0)


def test_closest_contacts_are_plain_atom_atom_distances():
    mol = cluster_molecule(6)
    got = closest_contacts(np.asarray(mol.geometry), [list(f) for f in mol.fragments])
    np.testing.assert_allclose(got, truncated.contacts(mol), rtol=0, atol=1e-12)
    assert got[0, 0] == 0.0 and np.array_equal(got, got.T)


def test_distance_levels_are_every_cutoff_and_closed_under_subsets():
    mol = cluster_molecule(8)
    contacts = truncated.contacts(mol)
    cutoffs = {2: 4.0, 3: 5.0, 4: 3.5}  # looser at 3 than at 2: closure still excludes trimers of far pairs
    levels = distance_levels(contacts, 4, cutoffs)
    kept = {(i,) for i in range(1, 9)}
    for n in range(2, 5):
        want = {s for s in itertools.combinations(range(1, 9), n)
                if all(t in kept for t in itertools.combinations(s, n - 1))
                and all(contacts[a - 1, b - 1] <= cutoffs[n] for a, b in itertools.combinations(s, 2))}
        assert levels[n] == want
        kept |= want
    assert any(len(s) == 3 for s in kept) and any(len(s) == 4 for s in kept)


def test_levels_are_decided_in_order_and_counted():
    mol = cluster_molecule(5)
    decisions = LevelDecisions(truncated.contacts(mol), 3, {2: 4.5})
    with pytest.raises(RuntimeError, match="out of order"):
        decisions.decide(3)
    kept = decisions.decide(2)
    counts = decisions.counts(2)
    assert counts["possible"] == 10 and counts["kept"] == len(kept)
    assert counts["skipped_distance"] + counts["skipped_prescreen"] + counts["skipped_energy"] + counts["kept"] == 10
    decisions.decide(3, keep=lambda nmer: False)
    assert decisions.counts(3)["kept"] == 0 and decisions.counts(3)["skipped_energy"] > 0
