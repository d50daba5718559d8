"""Results -> ManyBodyResult, through QCManyBody's own ``analyze`` and ``get_results``.

Nothing of the many-body arithmetic is re-implemented here. Results are fed in
``iterate_molecules()`` order (``Plan.tasks`` order), exactly as the sequential computer gathers
them, so every floating-point sum is formed the same way whatever order the tasks completed in.
"""

from __future__ import annotations

from collections.abc import Mapping

from qcelemental.models.v2 import AtomicResult
from qcmanybody.models.v2 import ManyBodyResult

from .plan import Plan, keeps_cluster_results
from .protocol import ResultMessage


def assemble(plan: Plan, results: Mapping[int, ResultMessage]) -> ManyBodyResult:
    """Assemble a complete set of task results (by task index) into QCManyBody's result model."""
    missing = [plan.label(t) for t in plan.tasks if t.index not in results]
    if missing:
        raise RuntimeError(f"cannot assemble: {len(missing)} task results missing, e.g. {missing[0]}")
    keep_cluster_results = keeps_cluster_results(plan.computer.input_data)
    component_properties = {}
    component_results = {}
    for task in plan.tasks:
        label = plan.label(task)
        message = results[task.index]
        component_properties[label] = message.properties()
        if keep_cluster_results:
            component_results[label] = AtomicResult.model_validate_json(message.atomic_result_json)
    analyzed = plan.core.analyze(component_properties)
    analyzed["nbody_number"] = len(component_properties)
    return plan.computer.get_results(external_results=analyzed, component_results=component_results)
