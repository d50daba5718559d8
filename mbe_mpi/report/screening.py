"""The screening table of the summary: n-mers per level kept and skipped, QC tasks against the full expansion."""

from __future__ import annotations

from typing import Any


def _rules_text(rules: dict[str, Any]) -> str:
    parts = []
    for name, unit in (("distance", "Angstrom"), ("energy", "Eh")):
        if rules.get(name):
            parts.append(f"{name} " + ", ".join(f"{n}: {v:g}" for n, v in rules[name].items()) + f" {unit}")
    prescreen = rules.get("prescreen")
    if prescreen:
        model = prescreen["model"]
        name = f"{model['program']} {model['method']}" + (f"/{model['basis']}" if model.get("basis") else "")
        parts.append(f"prescreen {name} " + ", ".join(f"{n}: {v:g}" for n, v in prescreen["threshold"].items())
                     + " Eh")
    return "; ".join(parts)


def format_screening(report: dict[str, Any]) -> list[str]:
    """Per level: n-mers possible, skipped by distance / prescreen / energy, kept; tasks; what a prescreen left out."""
    lines = [f"  Screening: {_rules_text(report['rules'])}",
             f"  {'level':>5} {'n-mers':>9} {'distance':>9} {'prescreen':>10} {'energy':>8} {'kept':>8}"
             f" {'QC tasks':>9} {'of full':>9}"]
    per_level = report["tasks"]["per_level"]
    for level, row in report["levels"].items():
        tasks = per_level.get(level, {"needed": 0, "full": 0})
        lines.append(f"  {level:>5} {row['possible']:>9} {row['skipped_distance']:>9} {row['skipped_prescreen']:>10} "
                     f"{row['skipped_energy']:>8} {row['kept']:>8} {tasks['needed']:>9} {tasks['full']:>9}")
    tasks = report["tasks"]
    share = tasks["needed"] / tasks["full"] if tasks["full"] else 0.0
    computed = f"; {tasks['computed']} computed in this run" if "computed" in tasks else ""
    lines.append(f"  (skipped by each rule; kept n-mers need {tasks['needed']} of the full expansion's "
                 f"{tasks['full']} QC tasks, {share:.1%}{computed})")
    prescreen = report.get("prescreen")
    if prescreen:
        cheap = prescreen["tasks"]
        lines.append(f"  prescreen {prescreen['model']} ({prescreen['treatment']}): {cheap['needed']} of "
                     f"{cheap['full']} tasks, {cheap['computed']} computed, {prescreen['wall_time']:.1f} s")
        for level, left in prescreen["left_out"].items():
            lines.append(f"    level {level}: {left['n_mers']} n-mers left out, cheap estimate of their sum "
                         f"{left['eh']:.3e} Eh ({left['kcal_mol']:.4f} kcal/mol)")
    return lines
