"""Unit conversion factors, written out or taken from QCElemental's plain constants.

Asking QCElemental for ``conversion_factor`` loads pint (~0.25 s of every start-up, on every
rank), so the factors mbe_mpi needs live here; a unit test checks them against ``conversion_factor``.
"""

from qcelemental import constants

#: conversion_factor("hartree", "kcal/mol") (``constants.hartree2kcalmol`` differs in the last digit)
HARTREE_TO_KCAL = 627.5094737775373

#: conversion_factor("bohr", "angstrom")
BOHR_TO_ANGSTROM = constants.bohr2angstroms

#: conversion_factor("angstrom", "bohr")
ANGSTROM_TO_BOHR = 1 / constants.bohr2angstroms
