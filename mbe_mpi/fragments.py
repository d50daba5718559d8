"""Build a task's fragment molecule and AtomicInput on the worker, exactly as QCManyBody does.

Every worker holds the full ManyBodyInput, so a TASK only needs the label (model chemistry, real
fragments, basis fragments). The molecule built here must equal the one
``ManyBodyCore.iterate_molecules`` yields for the same label -- same ``get_fragment`` call, same
``fix_com``/``fix_orientation``/``fix_symmetry`` updates, same embedding charges -- and the
AtomicInput must equal the one ``ManyBodyComputer.from_manybodyinput`` builds, or the numbers would
drift from sequential QCManyBody. ``tests/unit/test_fragments.py`` checks both, label for label.

:class:`FragmentBuilder` builds the same molecules faster: qcelemental validates every new
Molecule (a molparse round trip of ~3 ms, as long as a small xTB calculation), and the outcome
depends only on which fragments take part, ghosted or not, and what they are made of.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from qcelemental.models.v2 import AtomicInput, Molecule
from qcelemental.models.v2.molecule import GEOMETRY_NOISE, float_prep
from qcmanybody import ManyBodyCore


def build_fragment_molecule(core: ManyBodyCore, real: tuple[int, ...], basis: tuple[int, ...]) -> Molecule:
    """The molecule for label (real, basis), 1-based fragments, as ``iterate_molecules`` builds it."""
    mol = _validated_fragment(core, real, basis)
    _embed(core, mol, basis)
    return mol


def _validated_fragment(core: ManyBodyCore, real: tuple[int, ...], basis: tuple[int, ...]) -> Molecule:
    real_0, ghost_0 = _zero_based(real, basis)
    mol = core.molecule.get_fragment(real_0, ghost_0, orient=False, group_fragments=False)
    updates: dict[str, Any] = {"fix_com": True, "fix_orientation": True}
    if core.molecule.fix_symmetry == "c1":
        updates["fix_symmetry"] = "c1"
    return mol.model_copy(update=updates)


def _zero_based(real: tuple[int, ...], basis: tuple[int, ...]) -> tuple[list[int], list[int]]:
    # Same expression as QCManyBody (a set difference, then list): keeps the ghost order identical.
    ghost_atoms = list(set(basis) - set(real))
    return [x - 1 for x in real], [x - 1 for x in ghost_atoms]


def _embed(core: ManyBodyCore, mol: Molecule, basis: tuple[int, ...]) -> None:
    """Point charges for the fragments outside the basis, as QCManyBody adds them (in ``extras``)."""
    if core.embedding_charges:
        embedding_frags = list(set(range(1, core.nfragments + 1)) - set(basis))
        charges = []
        for ifr in embedding_frags:
            positions = core.molecule.get_fragment(ifr - 1).geometry.tolist()
            charges.extend([[chg, pos] for pos, chg in zip(positions, core.embedding_charges[ifr], strict=False)])
        mol.extras["embedding_charges"] = charges


class FragmentBuilder:
    """:func:`build_fragment_molecule`, validating each *kind* of fragment set once per worker.

    A kind is the sequence of fragments taking part, in the parent's order, each as (what it is
    made of -- symbols, masses, charge, multiplicity -- and whether it is real or a ghost). In a
    water cluster every trimer is the same kind. The first molecule of a kind is built by
    QCManyBody's own call (``get_fragment``, full validation); the others are copies of it with
    their own geometry, rounded as validation rounds it (``float_prep``), and their own name.
    Everything else validation produces (atomic numbers, labels, masses, fragment lists, total
    charge and multiplicity) depends on the kind alone. ``tests/unit/test_fragments.py`` checks
    the copies against ``iterate_molecules`` field for field. (qcelemental only accepts fragments
    that are contiguous runs of atoms, so a fragment's atoms are one slice of the parent's.)
    """

    max_kinds = 4096  # every label its own kind (all fragments different) must not grow without bound

    def __init__(self, core: ManyBodyCore):
        self.core = core
        parent = core.molecule
        self._atoms = [np.asarray(fragment, dtype=int) for fragment in parent.fragments]
        made_of: dict[tuple, int] = {}
        self._kind = [
            made_of.setdefault((tuple(parent.symbols[atoms]), tuple(parent.masses[atoms]),
                                float(parent.fragment_charges[i]), parent.fragment_multiplicities[i]), len(made_of))
            for i, atoms in enumerate(self._atoms)
        ]
        self._templates: dict[tuple, Molecule] = {}

    def molecule(self, real: tuple[int, ...], basis: tuple[int, ...]) -> Molecule:
        real_set = set(real)
        included = sorted(basis)  # group_fragments=False keeps the parent's fragment (and atom) order
        key = tuple((self._kind[f - 1], f in real_set) for f in included)
        template = self._templates.get(key)
        if template is None:
            mol = _validated_fragment(self.core, real, basis)
            if len(self._templates) < self.max_kinds:
                self._templates[key] = mol.model_copy(deep=True)
        else:
            parent = self.core.molecule
            real_0, ghost_0 = _zero_based(real, basis)
            atoms = np.concatenate([self._atoms[f - 1] for f in included])
            mol = template.model_copy(deep=True, update={
                "geometry": float_prep(parent.geometry[atoms], GEOMETRY_NOISE),
                "name": (parent.name if parent.name is not None else "") + " (" + str(real_0) + "," + str(ghost_0) + ")",
                "extras": {},
            })
        _embed(self.core, mol, basis)
        return mol


def build_atomic_input(molecule: Molecule, program: str, specification: dict[str, Any]) -> AtomicInput:
    """The AtomicInput QCManyBody's sequential computer would send to QCEngine for this molecule."""
    inp = AtomicInput(molecule=molecule, specification=copy.deepcopy(specification))
    if molecule.extras.get("embedding_charges"):
        if program != "psi4":
            # QCManyBody refuses the same way; input validation catches it before any QC work.
            raise RuntimeError(f"Don't know how to handle external charges in {program}")
        charges = molecule.extras["embedding_charges"]
        function_kwargs = inp.specification.keywords.get("function_kwargs", {})
        function_kwargs.update({"external_potentials": charges})
        inp.specification.keywords["function_kwargs"] = function_kwargs
    return inp
