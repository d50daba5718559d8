"""The result store, content hashes and the journal: bit-exact, crash-safe, refusing foreign checkpoints."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from mbe_mpi.checkpoint import Journal, ResultStore
from mbe_mpi.errors import InputError
from mbe_mpi.fragments import build_atomic_input, build_fragment_molecule
from mbe_mpi.hashing import input_hash, task_hashes
from mbe_mpi.plan import atomic_specifications, build_plan
from mbe_mpi.protocol import ResultMessage

from ..conftest import cluster_molecule, manybody_input

SYNTHETIC = {"program": "synthetic", "driver": "gradient", "model": {"method": "synthetic", "basis": None}}


def _message(rng, i, natom=6):
    return ResultMessage(i, 1, 0.5, energy=float(rng.standard_normal()) * 76.0,
                         gradient=rng.standard_normal((natom, 3)), hessian=rng.standard_normal((3 * natom,) * 2))


def test_store_round_trips_bit_for_bit(tmp_path):
    rng = np.random.default_rng(3)
    store = ResultStore(tmp_path / "c.sqlite")
    messages = {f"h{i}": _message(rng, i) for i in range(5)}
    for key, message in messages.items():
        store.put(key, f"label {key}", message)
    store.close()
    again = ResultStore(tmp_path / "c.sqlite")
    found = again.get_many(["h0", "h3", "missing"])
    assert set(found) == {"h0", "h3"}
    for key in found:
        assert found[key].energy == messages[key].energy
        assert found[key].gradient.tobytes() == messages[key].gradient.tobytes()
        assert found[key].gradient.shape == (6, 3)
        assert found[key].hessian.tobytes() == messages[key].hessian.tobytes()
    assert len(again) == 5


def test_energy_only_results_and_atomic_result_requirement(tmp_path):
    store = ResultStore(tmp_path / "c.sqlite")
    store.put("a", "A", ResultMessage(0, 1, 0.1, energy=-1.25))
    store.put("b", "B", ResultMessage(1, 1, 0.1, energy=-2.5, atomic_result_json='{"x": 1}'))
    got = store.get_many(["a", "b"])
    assert got["a"].properties() == {"energy": -1.25}
    assert set(store.get_many(["a", "b"], need_atomic_result=True)) == {"b"}


def test_foreign_checkpoint_is_refused(tmp_path):
    store = ResultStore(tmp_path / "c.sqlite")
    store.claim("input-one")
    store.claim("input-one")  # the same input may resume
    store.close()
    with pytest.raises(InputError, match="different input.*--fresh"):
        ResultStore(tmp_path / "c.sqlite").claim("input-two")


def test_not_a_database_is_a_clear_error(tmp_path):
    (tmp_path / "c.sqlite").write_text("this is not SQLite")
    with pytest.raises(InputError, match="cannot be used"):
        ResultStore(tmp_path / "c.sqlite")


def test_torn_last_record_is_ignored(tmp_path):
    """A crash while the last result is written: the file opens, earlier results are intact."""
    rng = np.random.default_rng(5)
    live = tmp_path / "live.sqlite"
    store = ResultStore(live)
    messages = [_message(rng, i, natom=30) for i in range(8)]
    for i, message in enumerate(messages):
        store.put(f"h{i}", f"L{i}", message)
    # Snapshot the files as a killed process would leave them (connection never closed) ...
    crashed = tmp_path / "crashed.sqlite"
    shutil.copy(live, crashed)
    wal = live.with_name(live.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0
    data = wal.read_bytes()
    # ... with the last transaction only partly written.
    crashed.with_name(crashed.name + "-wal").write_bytes(data[: len(data) - 3000])
    store.close()
    recovered = ResultStore(crashed)
    found = recovered.get_many([f"h{i}" for i in range(8)])
    assert 0 < len(found) < 8  # the torn tail is gone, the rest is there
    for key, message in found.items():
        original = messages[int(key[1:])]
        assert message.energy == original.energy
        assert message.hessian.tobytes() == original.hessian.tobytes()
    assert sqlite3.connect(crashed).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_equal_hashes_mean_equal_qc_inputs():
    """Within a counterpoise/multilevel plan, and across plans that share fragments."""
    specs = {"g": SYNTHETIC, "e": {**SYNTHETIC, "keywords": {"seconds": 0.0}}}
    plan3 = build_plan(manybody_input(cluster_molecule(3), driver="gradient", bsse=["cp", "vmfc"],
                                      levels={1: "g", 2: "e"}, specification=specs))
    plan4 = build_plan(manybody_input(cluster_molecule(4), driver="gradient", bsse=["cp", "vmfc"],
                                      levels={1: "g", 2: "e"}, specification=specs))
    seen: dict[str, str] = {}
    for plan in (plan3, plan4):
        specifications = atomic_specifications(plan.computer)
        for task, key in zip(plan.tasks, task_hashes(plan), strict=True):
            mc = plan.model_chemistries[task.mc_index]
            molecule = build_fragment_molecule(plan.core, task.real, task.basis)
            content = build_atomic_input(molecule.model_copy(update={"name": "x"}), specifications[mc]["program"],
                                         specifications[mc]["specification"]).model_dump_json()
            assert seen.setdefault(key, content) == content
    shared = set(task_hashes(plan3)) & set(task_hashes(plan4))
    assert len(shared) >= 3  # fragments of the trimer are reused by the tetramer run


def test_hash_changes_with_geometry_keywords_and_driver():
    base = manybody_input(cluster_molecule(2), driver="gradient", bsse=["nocp"], specification=SYNTHETIC)
    keys = set(task_hashes(build_plan(base)))
    moved = cluster_molecule(2)
    moved = moved.model_copy(update={"geometry": moved.geometry + 1e-9})
    assert keys.isdisjoint(task_hashes(build_plan(manybody_input(moved, driver="gradient", bsse=["nocp"],
                                                                 specification=SYNTHETIC))))
    with_kw = {**SYNTHETIC, "keywords": {"exponent": 1.0}}
    assert keys.isdisjoint(task_hashes(build_plan(manybody_input(cluster_molecule(2), driver="gradient",
                                                                 bsse=["nocp"], specification=with_kw))))
    energy = {**SYNTHETIC, "driver": "energy"}
    assert keys.isdisjoint(task_hashes(build_plan(manybody_input(cluster_molecule(2), bsse=["nocp"],
                                                                 specification=energy))))


def test_journal_records_reuses_and_removes_when_complete(tmp_path):
    mbi = manybody_input(cluster_molecule(3), driver="gradient", bsse=["cp"], specification=SYNTHETIC)
    plan = build_plan(mbi)
    rng = np.random.default_rng(1)
    journal = Journal(plan, mbi.model_dump_json(), checkpoint=str(tmp_path / "run.sqlite"),
                      cache_dir=str(tmp_path / "cache"))
    assert journal.reusable() == {}
    for task in plan.tasks[:4]:
        journal.record(task, _message(rng, task.index))
    journal.close(completed=False)

    again = Journal(plan, mbi.model_dump_json(), checkpoint=str(tmp_path / "run.sqlite"), cache_dir=None)
    assert sorted(again.reusable()) == [t.index for t in plan.tasks[:4]]
    assert again.from_checkpoint == 4
    again.close(completed=True)
    assert not (tmp_path / "run.sqlite").exists()

    other = manybody_input(cluster_molecule(3), driver="gradient", bsse=["nocp"], specification=SYNTHETIC)
    assert input_hash(other.model_dump_json()) != input_hash(mbi.model_dump_json())
    cached = Journal(build_plan(other), other.model_dump_json(), checkpoint=None,
                     cache_dir=str(tmp_path / "cache"))
    cached.reusable()
    assert cached.from_cache >= 3  # monomers in their own basis are shared between cp and nocp


def test_journal_without_checkpoint_or_cache_does_nothing():
    mbi = manybody_input(cluster_molecule(2), driver="gradient", bsse=["nocp"], specification=SYNTHETIC)
    plan = build_plan(mbi)
    journal = Journal(plan, mbi.model_dump_json(), checkpoint=None, cache_dir=None)
    assert journal.reusable() == {}
    journal.record(plan.tasks[0], _message(np.random.default_rng(0), 0))
    journal.close(completed=True)
