"""Closest contacts between fragments: what distance cutoffs compare against."""

from __future__ import annotations

import numpy as np

from ..units import BOHR_TO_ANGSTROM


def closest_contacts(geometry_bohr: np.ndarray, fragments: list[list[int]]) -> np.ndarray:
    """The smallest atom-atom distance (Angstrom) between each pair of fragments; 0 on the diagonal.

    Plain distances between nuclei, no van der Waals radii: ``[i, j]`` is the closest contact
    of fragment ``i + 1`` and fragment ``j + 1`` (QCManyBody numbers fragments from 1). One row
    of atoms at a time, so memory stays linear in the number of atoms.
    """
    xyz = np.asarray(geometry_bohr, dtype=float).reshape(-1, 3) * BOHR_TO_ANGSTROM
    starts = np.array([fragment[0] for fragment in fragments])
    n = len(fragments)
    contacts = np.zeros((n, n))
    for i, fragment in enumerate(fragments):
        atoms = xyz[fragment]
        # for every atom of the molecule, its distance to the nearest atom of fragment i
        nearest = np.sqrt(((xyz[:, None, :] - atoms[None, :, :]) ** 2).sum(axis=-1)).min(axis=1)
        contacts[i] = np.minimum.reduceat(nearest, starts)  # fragments are runs of consecutive atoms
        contacts[i, i] = 0.0
    return contacts
