"""The oracle of screened runs, written from the definitions and independently of mbe_mpi.screening.

From a full QCManyBody run (``ManyBodyComputer.from_manybodyinput``, every task computed), this
decides which n-mers the rules keep and sums the increments of the kept n-mers only -- the
truncated expansion a screened run must equal:

* nocp increment of S: sum over subsets U of S of (-1)**(|S|-|U|) E(U in U's basis);
* cp: the same with every U in the full cluster's basis; vmfc: every U in S's basis;
* the interaction property through n bodies: the sum over kept n-mers S with 2 <= |S| <= n of the
  increment of S at the model chemistry of level |S|.

Task values are read from the reference's ``cluster_properties`` (QCManyBody stores gradients and
Hessians there padded to the whole cluster, so increments add up directly).
"""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np

BOHR_TO_ANGSTROM = 0.52917721067


def _label(mc: str, real, basis) -> str:
    return json.dumps([mc, list(real), list(basis)])


def level_models(mbi) -> dict[int, str]:
    """n-body level -> the model chemistry label whose increments make up that level."""
    keywords = mbi.specification.keywords
    nfrag = len(mbi.molecule.fragments)
    levels = keywords.levels or {keywords.max_nbody or nfrag: "(auto)"}
    numeric = sorted(k for k in levels if k != "supersystem")
    return {n: levels[min(k for k in numeric if k >= n)] for n in range(1, numeric[-1] + 1)}


def task_value(reference, mc: str, real, basis, prop: str = "energy"):
    props = reference.cluster_properties[_label(mc, real, basis)]
    value = getattr(props, f"return_{prop}")
    return np.asarray(value, dtype=float) if prop != "energy" else float(value)


def nmer_increment(reference, mc: str, treatment: str, nmer: tuple, nfrag: int, prop: str = "energy"):
    everything = tuple(range(1, nfrag + 1))
    total = 0.0
    for size in range(1, len(nmer) + 1):
        for sub in combinations(nmer, size):
            basis = {"nocp": sub, "cp": everything, "vmfc": nmer}[treatment]
            total = total + (-1) ** (len(nmer) - size) * task_value(reference, mc, sub, basis, prop)
    return total


def contacts(molecule) -> np.ndarray:
    xyz = np.asarray(molecule.geometry).reshape(-1, 3) * BOHR_TO_ANGSTROM
    frags = [list(f) for f in molecule.fragments]
    n = len(frags)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, j] = min(np.linalg.norm(xyz[a] - xyz[b]) for a in frags[i] for b in frags[j])
    return out


def kept_nmers(mbi, reference, distance=None, energy=None, own=None, cheap=None, cheap_mc="(auto)") -> set[tuple]:
    """The n-mers the rules keep: distance cutoffs, energy thresholds on (n-1)-body sub-clusters, and
    (``own`` thresholds with a ``cheap`` full reference) a prescreen on the n-mer's own cheap increment."""
    distance, energy, own = distance or {}, energy or {}, own or {}
    nfrag = len(mbi.molecule.fragments)
    max_nbody = max(level_models(mbi))
    first = mbi.specification.keywords.bsse_type[0].value
    models = level_models(mbi)
    closest = contacts(mbi.molecule)
    kept = {(i,) for i in range(1, nfrag + 1)}
    for n in range(2, max_nbody + 1):
        for nmer in combinations(range(1, nfrag + 1), n):
            subs = list(combinations(nmer, n - 1))
            if not all(s in kept for s in subs):
                continue
            if n in distance and max(closest[a - 1, b - 1] for a, b in combinations(nmer, 2)) > distance[n]:
                continue
            if n in own and abs(nmer_increment(cheap, cheap_mc, first, nmer, nfrag)) < own[n]:
                continue
            if n in energy and max(abs(nmer_increment(reference, models[n - 1], first, s, nfrag))
                                   for s in subs) < energy[n]:
                continue
            kept.add(nmer)
    return kept


def truncated_interaction(mbi, reference, kept: set[tuple], treatment: str, through: int, prop: str = "energy"):
    """The interaction property through ``through`` bodies of the truncated expansion."""
    nfrag = len(mbi.molecule.fragments)
    models = level_models(mbi)
    total = 0.0
    for nmer in sorted(kept, key=lambda s: (len(s), s)):
        if 2 <= len(nmer) <= through:
            total = total + nmer_increment(reference, models[len(nmer)], treatment, nmer, nfrag, prop)
    return total


def needed_labels(mbi, reference, kept: set[tuple]) -> set[str]:
    """The labels of the full expansion that some kept n-mer's increment (or cp's monomer sum) reads.

    A kept n-mer S reads, at the model chemistry of level |S| only: nocp (U)@(U), cp (U)@(all) and
    vmfc (U)@(S), for every U in S; cp total energies also read each monomer in its own basis.
    """
    nfrag = len(mbi.molecule.fragments)
    everything = tuple(range(1, nfrag + 1))
    models = level_models(mbi)
    # the treatments QCManyBody assembled (single-model vmfc brings nocp, and cp for the whole cluster, along)
    treatments = {t for t in ("nocp", "cp", "vmfc") if any(
        key.startswith(f"{t}_corrected_") and value is not None for key, value in reference.properties.model_dump().items())}
    read = set()
    for nmer in kept:
        mc = models[len(nmer)]
        for size in range(1, len(nmer) + 1):
            for sub in combinations(nmer, size):
                if "nocp" in treatments or ("cp" in treatments and len(nmer) == 1):
                    read.add(_label(mc, sub, sub))
                if "cp" in treatments:
                    read.add(_label(mc, sub, everything))
                if "vmfc" in treatments:
                    read.add(_label(mc, sub, nmer))
    return read & set(reference.cluster_properties)


def assert_truncated(result, mbi, reference, kept: set[tuple], tol: float, props=("energy",)) -> int:
    """Every *_corrected_interaction_{prop}_through_{n}_body equals the truncated expansion; how many compared."""
    got = result.properties.model_dump()
    compared = 0
    max_nbody = max(level_models(mbi))
    for prop in props:
        for treatment in ("nocp", "cp", "vmfc"):
            for n in range(2, max_nbody + 1):
                key = f"{treatment}_corrected_interaction_{prop}_through_{n}_body"
                if got.get(key) is None:
                    continue
                want = truncated_interaction(mbi, reference, kept, treatment, n, prop)
                np.testing.assert_allclose(np.ravel(got[key]), np.ravel(want), rtol=0, atol=tol, err_msg=key)
                compared += 1
    return compared


def truncated_total(mbi, reference, kept: set[tuple], treatment: str, through: int, prop: str = "energy"):
    """The total property through ``through`` bodies of the truncated expansion (monomers' increments included).

    That is QCManyBody's total for nocp (for cp and vmfc its totals add the monomers differently).
    """
    monomers = [nmer for nmer in kept if len(nmer) == 1]
    total = truncated_interaction(mbi, reference, kept, treatment, through, prop)
    models = level_models(mbi)
    nfrag = len(mbi.molecule.fragments)
    for nmer in sorted(monomers):
        total = total + nmer_increment(reference, models[1], treatment, nmer, nfrag, prop)
    return total


def left_out(mbi, cheap, within: set[tuple], kept: set[tuple], level: int, cheap_mc: str = "(auto)") -> float:
    """The cheap estimate of what screening left out at ``level``: the sum of the cheap increments of the
    n-mers within the distance cutoffs that the requested expansion did not compute."""
    nfrag = len(mbi.molecule.fragments)
    first = mbi.specification.keywords.bsse_type[0].value
    skipped = sorted(nmer for nmer in within - kept if len(nmer) == level)
    return sum(nmer_increment(cheap, cheap_mc, first, nmer, nfrag) for nmer in skipped)


def cheap_input(mbi, program: str, method: str, keywords: dict | None = None):
    """The prescreen's expansion as a QCManyBody user would write it: same molecule and levels, energies,
    the first BSSE treatment only."""
    from qcmanybody.models.v2 import ManyBodyInput

    first = mbi.specification.keywords.bsse_type[0].value
    spec = {"program": program, "driver": "energy", "model": {"method": method, "basis": None},
            "keywords": keywords or {}}
    return ManyBodyInput(specification={"driver": "energy", "specification": spec, "keywords": {
        "bsse_type": [first], "max_nbody": max(level_models(mbi))}}, molecule=mbi.molecule)
