"""The summary rank 0 prints after a run: energies per BSSE treatment and n-body level, tasks, time."""

from __future__ import annotations

from qcmanybody.models.v2 import ManyBodyResult

from ..units import HARTREE_TO_KCAL
from .screening import format_screening
from .timing import format_timing

__all__ = ["HARTREE_TO_KCAL", "summary"]


def _fmt(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def summary(result: ManyBodyResult, output_path: str | None = None) -> str:
    """Per BSSE treatment and n-body level: total and interaction energy (Eh, kcal/mol); tasks; wall time."""
    keywords = result.input_data.specification.keywords
    nfrag = len(result.molecule.fragments)
    max_nbody = keywords.max_nbody or nfrag
    stats = result.extras.get("mbe_mpi", {})
    lines = [
        f"Many-body expansion: {nfrag} fragments, {len(result.molecule.symbols)} atoms, "
        f"driver {result.input_data.specification.driver.value}, max n-body {max_nbody}",
        "",
        *_energy_table(result, max_nbody),
        "",
        *_tasks(result, stats),
    ]
    if stats.get("screening"):
        lines.append("")
        lines.extend(format_screening(stats["screening"]))
    if stats.get("lost_workers"):
        lines.append(f"  workers lost during the run: {', '.join(map(str, stats['lost_workers']))} "
                     "(their tasks ran on the others)")
    if stats.get("timing", {}).get("levels"):
        lines.append("")
        lines.extend(format_timing(stats["timing"]))
    lines.append(f"  return_energy = {result.properties.return_energy:.12f} Eh")
    if output_path:
        lines.append(f"  result written to {output_path}")
    return "\n".join(lines)


def _energy_table(result: ManyBodyResult, max_nbody: int) -> list[str]:
    props = result.properties.model_dump()
    keywords = result.input_data.specification.keywords
    bsse_types = [bt.value if hasattr(bt, "value") else str(bt) for bt in keywords.bsse_type]
    for extra in ("nocp", "cp"):  # QCManyBody may add these for free with vmfc
        if extra not in bsse_types and any(k.startswith(f"{extra}_corrected_") for k in props):
            bsse_types.append(extra)
    lines = [f"  {'BSSE':<5} {'n-body':>6} {'total energy [Eh]':>20} {'interaction [Eh]':>18} {'[kcal/mol]':>12}"]
    for bt in bsse_types:
        for n in range(1, max_nbody + 1):
            total = props.get(f"{bt}_corrected_total_energy_through_{n}_body")
            interaction = props.get(f"{bt}_corrected_interaction_energy_through_{n}_body")
            if total is None and interaction is None:
                continue
            kcal = interaction * HARTREE_TO_KCAL if interaction is not None else None
            lines.append(
                f"  {bt:<5} {n:>6} {_fmt(total, 20, 10)} {_fmt(interaction, 18, 10)} {_fmt(kcal, 12, 4)}"
            )
    return lines


def _tasks(result: ManyBodyResult, stats: dict) -> list[str]:
    if not stats:
        return [f"  QC tasks: {result.properties.calcinfo_nmbe}"]
    per_level = ", ".join(f"{level}-body {count}" for level, count in sorted(stats["tasks_per_level"].items()))
    lines = [f"  QC tasks: {result.properties.calcinfo_nmbe} ({per_level})"]
    reused = stats.get("from_checkpoint", 0) + stats.get("from_cache", 0)
    if reused:
        lines.append(f"  computed {stats['computed']}, reused {reused} "
                     f"({stats['from_checkpoint']} from the checkpoint, {stats['from_cache']} cache hits)")
    lines.append(
        f"  wall time {stats['wall_time']:.2f} s on {stats['n_workers']} {stats['transport']} workers; "
        f"QC time {stats['task_time']:.2f} s"
    )
    return lines
