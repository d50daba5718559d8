"""Results -> ManyBodyResult, through QCManyBody's own ``analyze`` and ``get_results``.

Nothing of the many-body arithmetic is re-implemented here. Results are fed in
``iterate_molecules()`` order (``Plan.tasks`` order), exactly as the sequential computer gathers
them, so every floating-point sum is formed the same way whatever order the tasks completed in.

A screened expansion passes surrogate values for the tasks of skipped n-mers
(:mod:`mbe_mpi.screening.surrogates`): ``analyze`` gets them in place of results, and the result
lists only the tasks that were computed (``cluster_properties``, ``calcinfo_nmbe``). When one task
needs a different value for nocp than for cp (the whole cluster skipped), ``analyze`` runs once per
view and each treatment's properties come from its own view's analysis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qcelemental.models.v2 import AtomicResult
from qcmanybody import ManyBodyCore
from qcmanybody.models.v2 import ManyBodyResult

from .plan import Plan, keeps_cluster_results
from .protocol import ResultMessage
from .screening import Surrogates

#: how ManyBodyCore.analyze starts the stdout table of each BSSE treatment
_SECTION = "\n   ==> N-Body: "


def assemble(plan: Plan, results: Mapping[int, ResultMessage], surrogates: Surrogates | None = None) -> ManyBodyResult:
    """Assemble the task results (by task index) into QCManyBody's result model.

    Without ``surrogates`` every task must have a result; with them, every task has one or the other
    (a surrogate wins: a cached result of a skipped n-mer must not enter a screened expansion).
    """
    views = surrogates.views() if surrogates is not None else [(None, {})]
    labels = [plan.label(task) for task in plan.tasks]
    missing = [label for task, label in zip(plan.tasks, labels, strict=True)
               if task.index not in results and task.index not in views[0][1]]
    if missing:
        raise RuntimeError(f"cannot assemble: {len(missing)} task results missing, e.g. {missing[0]}")
    computed = [task for task in plan.tasks if task.index not in views[0][1]]
    analyses = []
    for treatments, values in views:
        component_properties = {
            label: values[task.index] if task.index in values else results[task.index].properties()
            for task, label in zip(plan.tasks, labels, strict=True)
        }
        analyses.append((treatments, plan.core.analyze(component_properties)))
    analyzed = _merged(plan.core, analyses)
    real = {labels[task.index] for task in computed}
    analyzed["component_properties"] = {label: value for label, value in analyzed["component_properties"].items()
                                        if label in real}
    analyzed["nbody_number"] = len(computed)
    component_results = {}
    if keeps_cluster_results(plan.computer.input_data):
        component_results = {labels[task.index]: AtomicResult.model_validate_json(results[task.index].atomic_result_json)
                             for task in computed}
    return plan.computer.get_results(external_results=analyzed, component_results=component_results)


def _merged(core: ManyBodyCore, analyses: list[tuple[frozenset[str] | None, dict[str, Any]]]) -> dict[str, Any]:
    """One analysis, or several: each treatment's properties and stdout table from the view made for it.

    Result properties are named ``{treatment}_corrected_...``; the return values come from the view
    of the returned (first) treatment. What ``get_results`` does not read (the body dicts) stays
    as that view has it.
    """
    if len(analyses) == 1:
        return analyses[0][1]
    returned = core.return_bsse_type.value
    merged = dict(next(analysis for treatments, analysis in analyses if returned in treatments))
    order = [bt.value for bt in core.bsse_type]
    properties: dict[str, Any] = {}
    sections = [""] * len(order)
    for treatments, analysis in analyses:
        properties.update({key: value for key, value in analysis["results"].items()
                           if key.split("_", 1)[0] in treatments})
        tables = analysis["stdout"].split(_SECTION)[1:]
        for i, treatment in enumerate(order):
            if treatment in treatments:
                sections[i] = _SECTION + tables[i]
    merged["results"] = properties
    merged["stdout"] = "".join(sections)
    return merged
