"""Build a task's fragment molecule and AtomicInput on the worker, exactly as QCManyBody does.

Every worker holds the full ManyBodyInput, so a TASK only needs the label (model chemistry, real
fragments, basis fragments). The molecule built here must equal the one
``ManyBodyCore.iterate_molecules`` yields for the same label -- same ``get_fragment`` call, same
``fix_com``/``fix_orientation``/``fix_symmetry`` updates, same embedding charges -- and the
AtomicInput must equal the one ``ManyBodyComputer.from_manybodyinput`` builds, or the numbers would
drift from sequential QCManyBody. ``tests/unit/test_fragments.py`` checks both, label for label.
"""

from __future__ import annotations

import copy
from typing import Any

from qcelemental.models.v2 import AtomicInput, Molecule
from qcmanybody import ManyBodyCore


def build_fragment_molecule(core: ManyBodyCore, real: tuple[int, ...], basis: tuple[int, ...]) -> Molecule:
    """The molecule for label (real, basis), 1-based fragments, as ``iterate_molecules`` builds it."""
    # Same expression as QCManyBody (a set difference, then list): keeps the ghost order identical.
    ghost_atoms = list(set(basis) - set(real))
    real_0 = [x - 1 for x in real]
    ghost_0 = [x - 1 for x in ghost_atoms]
    mol = core.molecule.get_fragment(real_0, ghost_0, orient=False, group_fragments=False)
    updates: dict[str, Any] = {"fix_com": True, "fix_orientation": True}
    if core.molecule.fix_symmetry == "c1":
        updates["fix_symmetry"] = "c1"
    mol = mol.model_copy(update=updates)

    if core.embedding_charges:
        embedding_frags = list(set(range(1, core.nfragments + 1)) - set(basis))
        charges = []
        for ifr in embedding_frags:
            positions = core.molecule.get_fragment(ifr - 1).geometry.tolist()
            charges.extend([[chg, pos] for pos, chg in zip(positions, core.embedding_charges[ifr], strict=False)])
        mol.extras["embedding_charges"] = charges
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
