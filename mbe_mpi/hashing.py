"""Content hashes of QC tasks, computed on the master from labels (no Molecule is built).

A task's hash covers everything that determines its QC input -- the fragment molecule's atoms in
order (symbol, mass, geometry bytes, real or ghost), fragment charges and multiplicities, symmetry
handling, embedding charges, and the program, its version, method, basis, keywords and driver --
but not fragment *indices*: the same dimer cut from two different clusters hashes the same, and so
does a monomer needed by a 2-body and a 3-body run. It mirrors what
``Molecule.get_fragment(real, ghost, group_fragments=False)`` puts in the fragment molecule (atoms in
parent order; ghost fragments neutral singlets), so equal hashes mean equal QC inputs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import qcengine

from .plan import Plan, atomic_specifications

HASH_VERSION = b"mbe_mpi task hash v1\0"


def program_version(program: str) -> str:
    """The program's version as QCEngine reports it ('' if it cannot tell)."""
    try:
        return str(qcengine.get_program(program, check=False).get_version() or "")
    except Exception:  # a harness that cannot report its version still hashes consistently
        return ""


def _fragment_blobs(plan: Plan) -> tuple[list[bytes], list[bytes]]:
    """Per fragment (0-based): the bytes it contributes as a real fragment and as a ghost fragment."""
    mol = plan.core.molecule
    geometry = np.ascontiguousarray(mol.geometry, dtype="<f8").reshape(-1, 3)
    masses = np.asarray(mol.masses, dtype="<f8")
    real_blobs, ghost_blobs = [], []
    for ifr, atoms in enumerate(mol.fragments):
        atoms = [int(a) for a in atoms]
        symbols = ",".join(mol.symbols[a] for a in atoms).encode()
        atom_bytes = symbols + b"|" + masses[atoms].tobytes() + geometry[atoms].tobytes()
        charge = float(mol.fragment_charges[ifr])
        multiplicity = int(mol.fragment_multiplicities[ifr])
        real_blobs.append(b"R" + repr((charge, multiplicity)).encode() + atom_bytes)
        ghost_blobs.append(b"G" + atom_bytes)
    return real_blobs, ghost_blobs


def _specification_prefixes(plan: Plan) -> list[bytes]:
    """Per model chemistry (by mc_index): the hashed description of how the task is computed."""
    specs = atomic_specifications(plan.computer)
    versions: dict[str, str] = {}
    prefixes = []
    for mc in plan.model_chemistries:
        program = specs[mc]["program"]
        if program not in versions:
            versions[program] = program_version(program)
        description: dict[str, Any] = {
            "program": program,
            "version": versions[program],
            "specification": specs[mc]["specification"],
            "c1": plan.core.molecule.fix_symmetry == "c1",
        }
        prefixes.append(HASH_VERSION + json.dumps(description, sort_keys=True, default=str).encode())
    return prefixes


class TaskHasher:
    """The content hash of one task at a time: a checkpoint that is new needs no hash before a result arrives."""

    def __init__(self, plan: Plan):
        self.real_blobs, self.ghost_blobs = _fragment_blobs(plan)
        self.prefixes = _specification_prefixes(plan)
        self.nfragments = plan.core.nfragments
        self.embedding = plan.core.embedding_charges or {}

    def __call__(self, task: Any) -> str:
        real = set(task.real)
        real_blobs, ghost_blobs = self.real_blobs, self.ghost_blobs
        # parent order, as get_fragment(group_fragments=False) keeps it; one update of the joined
        # bytes hashes exactly what one update per fragment would
        parts = [real_blobs[ifr - 1] if ifr in real else ghost_blobs[ifr - 1] for ifr in sorted(task.basis)]
        if self.embedding:
            basis = set(task.basis)
            parts += [b"E" + real_blobs[ifr - 1] + repr(list(self.embedding[ifr])).encode()
                      for ifr in range(1, self.nfragments + 1) if ifr not in basis]
        digest = hashlib.sha256(self.prefixes[task.mc_index])
        digest.update(b"".join(parts))
        return digest.hexdigest()


def task_hashes(plan: Plan) -> list[str]:
    """The content hash of every task, by ``Task.index``."""
    hasher = TaskHasher(plan)
    return [hasher(task) for task in plan.tasks]


def input_hash(input_json: str) -> str:
    """Identity of a whole run's input, to recognise a checkpoint that belongs to another input."""
    data = json.loads(input_json)
    data.pop("provenance", None)  # which qcmanybody version stamped it does not change the run
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
