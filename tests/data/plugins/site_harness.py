"""A site's own QCEngine harness, as a user would ship it in a plugin module (used by the tests).

Program ``sitepair`` is a SYNTHETIC stand-in for a real QC program: energy = sum over pairs of real
atoms of -Z_i Z_j / (1 + r_ij) (bohr), plus 0.01 per ghost atom so that counterpoise differs from
no-counterpoise. Registering it on import is all ``--plugin site_harness`` needs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import qcengine
from qcelemental.models.v2 import AtomicInput, AtomicResult, Provenance
from qcengine.programs.model import ProgramHarness


class SitePairHarness(ProgramHarness):
    _defaults: ClassVar[dict[str, Any]] = {
        "name": "sitepair", "scratch": False, "thread_safe": True, "thread_parallel": False,
        "node_parallel": False, "managed_memory": False,
    }

    @staticmethod
    def found(raise_error: bool = False) -> bool:
        return True

    def get_version(self) -> str:
        return "1.0"

    def compute(self, input_data: AtomicInput, config) -> AtomicResult:
        mol = input_data.molecule
        real = np.array(mol.real, dtype=bool)
        z = np.array(mol.atomic_numbers, dtype=float) * real
        xyz = np.asarray(mol.geometry).reshape(-1, 3)
        energy = 0.01 * float(np.sum(~real))
        for i in range(len(z)):
            for j in range(i):
                energy -= z[i] * z[j] / (1.0 + np.linalg.norm(xyz[i] - xyz[j]))
        return AtomicResult(
            input_data=input_data, molecule=mol, properties={"return_energy": energy}, return_result=energy,
            success=True, provenance=Provenance(creator="sitepair", version="1.0", routine="site_harness"),
        )


if "sitepair" not in qcengine.list_all_programs():
    qcengine.register_program(SitePairHarness())
