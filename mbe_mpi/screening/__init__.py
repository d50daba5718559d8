"""Screened many-body expansions, pure: which n-mers each level keeps, and values for the skipped ones.

A full MBE grows as C(N, n), and most n-mers (fragments far apart) contribute nothing measurable.
A screened expansion computes only the n-mers its rules keep (:mod:`.rules`: distance cutoffs,
energy thresholds on the sub-clusters' increments, a cheap prescreen), decided level by level as
results come in (:mod:`.levels`, :mod:`.expansion`), and gives every task of a skipped n-mer a
value that makes that n-mer's increment exactly zero (:mod:`.surrogates`), so that QCManyBody's own
``analyze`` assembles the truncated expansion -- the sum over kept n-mers of their increments.
Nothing here runs QC or talks to processes; the run wires it in.
"""

from .contacts import closest_contacts
from .expansion import ScreenedExpansion, left_out, level_model_chemistries, prescreen_input, prescreened
from .levels import LevelDecisions, Nmer, distance_levels, grow, sub_clusters
from .owners import increment, task_owners
from .rules import EXTRAS_KEY, Prescreen, ScreeningRules, screening_of, with_screening
from .surrogates import Surrogates, surrogate_values

__all__ = ["EXTRAS_KEY", "LevelDecisions", "Nmer", "Prescreen", "ScreenedExpansion", "ScreeningRules", "Surrogates",
           "closest_contacts", "distance_levels", "grow", "increment", "left_out", "level_model_chemistries",
           "prescreen_input", "prescreened", "screening_of", "sub_clusters", "surrogate_values", "task_owners",
           "with_screening"]
