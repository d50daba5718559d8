"""Which n-mers each n-body level keeps: distance cutoffs up front, then decisions level by level. Pure.

An n-mer is a sorted tuple of 1-based fragment numbers, as in QCManyBody labels. Every level is
built from the kept n-mers of the level below (each candidate is a kept (n-1)-mer plus one
higher-numbered fragment whose other (n-1)-body sub-clusters are kept too), so kept sets are
closed under subsets by construction and a level costs time in proportion to what the level below
kept, not to C(N, n).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np

Nmer = tuple[int, ...]


def sub_clusters(nmer: Nmer) -> Iterable[Nmer]:
    """The (n-1)-body sub-clusters of an n-mer."""
    return (nmer[:i] + nmer[i + 1 :] for i in range(len(nmer)))


def grow(kept_below: set[Nmer], nfragments: int, accept: Callable[[Nmer], bool]) -> set[Nmer]:
    """The n-mers all of whose (n-1)-body sub-clusters are in ``kept_below`` and that ``accept`` takes."""
    grown = set()
    for base in kept_below:
        for fragment in range(base[-1] + 1, nfragments + 1):
            nmer = (*base, fragment)
            # the sub-cluster without the new fragment is `base` itself
            if all(nmer[:i] + nmer[i + 1 :] in kept_below for i in range(len(base))) and accept(nmer):
                grown.add(nmer)
    return grown


def within_cutoff(contacts: np.ndarray, cutoff: float) -> Callable[[Nmer], bool]:
    """Whether every pair of the n-mer's fragments has its closest contact at most ``cutoff`` Angstrom."""
    close = (contacts <= cutoff).tolist()  # plain lists: ~10x faster than NumPy indexing per n-mer

    def accept(nmer: Nmer) -> bool:
        return all(close[a - 1][b - 1] for i, a in enumerate(nmer) for b in nmer[i + 1 :])

    return accept


def distance_levels(contacts: np.ndarray, max_nbody: int, cutoffs: Mapping[int, float]) -> dict[int, set[Nmer]]:
    """Per level, the n-mers the distance cutoffs keep (levels without a cutoff keep every candidate)."""
    nfragments = len(contacts)
    levels = {1: {(f,) for f in range(1, nfragments + 1)}}
    for n in range(2, max_nbody + 1):
        accept = within_cutoff(contacts, cutoffs[n]) if n in cutoffs else (lambda nmer: True)
        levels[n] = grow(levels[n - 1], nfragments, accept)
    return levels


class LevelDecisions:
    """The n-mers kept per level, decided in level order, within what distance (and a prescreen) allow.

    ``allowed`` (level -> n-mers; absent levels allow everything distance allows) is what a
    prescreen kept. :meth:`decide` takes the level's own rule as a predicate on candidates, which
    the caller builds from results (an energy threshold on the sub-clusters' increments).
    """

    def __init__(self, contacts: np.ndarray, max_nbody: int, cutoffs: Mapping[int, float],
                 allowed: Mapping[int, set[Nmer]] | None = None):
        self.nfragments = len(contacts)
        self.max_nbody = max_nbody
        self.within_distance = distance_levels(contacts, max_nbody, cutoffs)
        self.allowed = allowed or {}
        self.kept: dict[int, set[Nmer]] = {1: set(self.within_distance[1])}

    @property
    def decided(self) -> int:
        """The highest level decided so far."""
        return max(self.kept)

    def candidates(self, level: int) -> set[Nmer]:
        """The n-mers of ``level`` whose sub-clusters are all kept and that distance (and prescreen) allow."""
        within = self.within_distance[level]
        allowed = self.allowed.get(level)
        return grow(self.kept[level - 1], self.nfragments,
                    lambda nmer: nmer in within and (allowed is None or nmer in allowed))

    def decide(self, level: int, keep: Callable[[Nmer], bool] | None = None) -> set[Nmer]:
        """Decide ``level`` (the next undecided one): its candidates that ``keep`` takes (None: all)."""
        if level != self.decided + 1:
            raise RuntimeError(f"level {level} decided out of order (level {self.decided} is the last decided)")
        candidates = self.candidates(level)
        self.kept[level] = candidates if keep is None else {nmer for nmer in candidates if keep(nmer)}
        return self.kept[level]

    def counts(self, level: int) -> dict[str, int]:
        """n-mers possible, skipped by distance, by prescreen, by energy, and kept (so far decided)."""
        possible = math.comb(self.nfragments, level)
        within = len(self.within_distance[level])
        allowed = len(self.allowed[level]) if level in self.allowed else within
        kept = len(self.kept[level])
        return {"possible": possible, "skipped_distance": possible - within, "skipped_prescreen": within - allowed,
                "skipped_energy": allowed - kept, "kept": kept}

    def all_kept(self) -> set[Nmer]:
        """Every kept n-mer of every decided level."""
        return set().union(*self.kept.values())
