"""Screened MBE: what each screening setting computes, what it costs in accuracy, and how long it takes.

Water clusters cut from water32.xyz (water 3, 0-based, and its n-1 nearest neighbours by O-O distance;
n = 32 is the whole file), GFN2-xTB (tblite) nocp at 3 and 4 bodies, and one PySCF case, (H2O)10
HF/6-31G cp 3-body with a GFN2-xTB prescreen. For every case the full expansion runs first, then each
screening setting, all on one 2-worker ``mbe_mpi.Session`` (workers started once; no checkpoint, no
cache, so every task of every run is computed), ``OMP_NUM_THREADS=1``.

Reported per setting: the n-mers kept of those possible and the QC tasks computed (the prescreen's
cheap tasks separately) as fractions of the full expansion's; the error of the total energy against
the full result, in kcal/mol and per monomer (screening leaves every monomer in, so that is the error
of the interaction energy); the wall time of the run (a prescreen included) and its speed-up over the
full run; for a prescreen, its own estimate of what was left out. The issue's target: the (H2O)32
4-body expansion within 0.1 kcal/mol per monomer of the full 4-body result, computing at most 25% of
its QC tasks.

Usage (from the repository root)::

    python benchmarks/bench_screening.py --waters 20 --max-nbody 3      # one case, every setting
    python benchmarks/bench_screening.py --waters 32 --max-nbody 4 --json results.jsonl
    python benchmarks/bench_screening.py --pyscf                         # (H2O)10 HF/6-31G cp 3-body
    python benchmarks/bench_screening.py --waters 32 --max-nbody 4 --json results.jsonl --reuse-full \\
        --settings energy                                                # one more setting, same full run
    python benchmarks/bench_screening.py --table results.jsonl           # the tables of saved runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_chemistry import WATER32, water_cluster  # noqa: E402

HARTREE_TO_KCAL = 627.5094737775373  # QCElemental's conversion_factor("hartree", "kcal/mol")
GFN1 = {"program": "tblite", "method": "gfn1-xtb"}
GFN2 = {"program": "tblite", "method": "gfn2-xtb"}

#: setting -> screening section (rules above the case's max_nbody are dropped); None: the full expansion
XTB_SETTINGS: dict[str, dict[str, Any] | None] = {
    "full": None,
    "distance": {"distance": {2: 8.0, 3: 6.0, 4: 4.5}},
    "distance, tight": {"distance": {2: 5.0, 3: 4.0, 4: 3.0}},
    "energy": {"energy": {3: 1.0e-3, 4: 2.0e-4}},
    "energy, tight": {"energy": {3: 2.0e-3, 4: 5.0e-4}},
    "energy, loose": {"energy": {3: 1.0e-4, 4: 5.0e-5}},
    "distance + energy": {"distance": {2: 8.0}, "energy": {3: 5.0e-4, 4: 2.0e-4}},
    "GFN1 prescreen": {"distance": {2: 8.0, 3: 6.0, 4: 5.0},
                       "prescreen": {"model": GFN1, "threshold": {2: 1.0e-5, 3: 5.0e-5, 4: 5.0e-5}}},
    "GFN1 prescreen, tight": {"distance": {2: 8.0},
                              "prescreen": {"model": GFN1, "threshold": {2: 1.0e-4, 3: 1.0e-4, 4: 2.0e-5}}},
}
PYSCF_SETTINGS: dict[str, dict[str, Any] | None] = {
    "full": None,
    "distance": {"distance": {2: 5.0, 3: 4.0}},
    "GFN2 prescreen": {"prescreen": {"model": GFN2, "threshold": {2: 1.0e-4, 3: 1.0e-4}}},
    "GFN2 prescreen, tight": {"prescreen": {"model": GFN2, "threshold": {2: 3.0e-4, 3: 3.0e-4}}},
    "GFN2 prescreen, loose": {"prescreen": {"model": GFN2, "threshold": {2: 3.0e-5, 3: 3.0e-5}}},
}


def friendly_input(waters: int, max_nbody: int, model: dict[str, Any], bsse: str) -> dict[str, Any]:
    lines = [f"{symbol} {x!r} {y!r} {z!r}" for water in water_cluster(waters) for symbol, (x, y, z) in water]
    return {"molecule": {"geometry": "\n".join(lines), "atoms_per_fragment": 3, "units": "angstrom"},
            "model": model, "bsse": bsse, "max_nbody": max_nbody, "driver": "energy"}


def within(screening: dict[str, Any] | None, max_nbody: int) -> dict[str, Any] | None:
    """The setting's rules for levels up to ``max_nbody`` (validation refuses rules above it)."""
    if screening is None:
        return None
    out: dict[str, Any] = {}
    for name in ("distance", "energy"):
        if screening.get(name):
            out[name] = {n: v for n, v in screening[name].items() if n <= max_nbody}
    if "prescreen" in screening:
        threshold = {n: v for n, v in screening["prescreen"]["threshold"].items() if n <= max_nbody}
        out["prescreen"] = {**screening["prescreen"], "threshold": threshold}
    return out


def record(name: str, outcome, full: dict[str, Any] | None, waters: int) -> dict[str, Any]:
    """One setting's figures; ``full`` is the full run's record (None: this is it)."""
    result = outcome.result
    stats = result.extras["mbe_mpi"]
    energy = float(result.properties.return_energy)
    row: dict[str, Any] = {"setting": name, "energy": energy, "wall": stats["wall_time"],
                           "computed": stats["computed"], "tasks": result.properties.calcinfo_nmbe}
    screened = stats.get("screening")
    if screened is not None:
        row["rules"] = screened["rules"]
        row["full_tasks"] = screened["tasks"]["full"]
        row["levels"] = screened["levels"]
        cheap = screened.get("prescreen")
        if cheap is not None:
            row["cheap_tasks"] = cheap["tasks"]["computed"]
            row["cheap_wall"] = cheap["wall_time"]
            row["left_out_kcal"] = sum(level["kcal_mol"] for level in cheap["left_out"].values())
    if full is not None:
        error = (energy - full["energy"]) * HARTREE_TO_KCAL
        row.update(error_kcal=error, error_per_monomer=error / waters, speedup=full["wall"] / row["wall"])
    return row


def case_of(waters: int, max_nbody: int, model: dict[str, Any], bsse: str) -> dict[str, Any]:
    name = f"{model['program']} {model['method']}" + (f"/{model['basis']}" if model.get("basis") else "")
    return {"waters": waters, "max_nbody": max_nbody, "model": name, "bsse": bsse}


def run_case(case: dict[str, Any], model: dict[str, Any], settings: dict[str, dict[str, Any] | None],
             only: list[str] | None, full: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every setting of one case on one session; ``full``: the full run's record from an earlier run."""
    import mbe_mpi

    data = friendly_input(case["waters"], case["max_nbody"], model, case["bsse"])
    rows: list[dict[str, Any]] = [] if full is None else [full]
    waters, max_nbody = case["waters"], case["max_nbody"]
    with mbe_mpi.Session(n_workers=2, checkpoint=False) as session:
        for name, screening in settings.items():
            if (only and name not in only and name != "full") or (full is not None and name == "full"):
                continue
            load = os.getloadavg()[0]
            outcome = session.run(data, screening=within(screening, max_nbody))
            row = {**case, **record(name, outcome, rows[0] if rows else None, waters), "load_before": load,
                   "load_after": os.getloadavg()[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows if full is None else rows[1:]


def saved_full(path: Path | None, case: dict[str, Any]) -> dict[str, Any] | None:
    """The latest full run of ``case`` recorded in ``path`` (JSON lines), if any."""
    if path is None or not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    fulls = [row for row in rows if row["setting"] == "full" and all(row[key] == case[key] for key in case)]
    return fulls[-1] if fulls else None


def _levels_text(row: dict[str, Any], max_nbody: int) -> str:
    if "levels" not in row:
        return "all"
    return ", ".join(f"{row['levels'][str(n)]['kept']}/{row['levels'][str(n)]['possible']}"
                     for n in range(2, max_nbody + 1))


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown, one table per case."""
    out = []
    cases: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        cases.setdefault((row["waters"], row["max_nbody"], row["model"], row["bsse"]), []).append(row)
    for (waters, max_nbody, model, bsse), group in cases.items():
        full = group[0]
        out += ["", f"(H2O){waters} {model} {bsse} {max_nbody}-body: full expansion {full['tasks']} QC tasks, "
                f"{full['wall']:.1f} s", "",
                "| setting | n-mers kept (2-body, 3-body, ...) | QC tasks (of full) | cheap tasks | error (kcal/mol) "
                "| per monomer | wall (s) | speed-up | prescreen's left-out estimate (kcal/mol) |",
                "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
        for row in group:
            share = row["computed"] / full["tasks"]
            cheap = f"{row['cheap_tasks']}" if "cheap_tasks" in row else ""
            left = f"{row['left_out_kcal']:+.3f}" if "left_out_kcal" in row else ""
            error = f"{row['error_kcal']:+.3f}" if "error_kcal" in row else "0"
            per = f"{row['error_per_monomer']:+.4f}" if "error_per_monomer" in row else "0"
            speed = f"{row['speedup']:.2f}" if "speedup" in row else "1"
            out.append(f"| {row['setting']} | {_levels_text(row, max_nbody)} | {row['computed']} ({share:.1%}) | "
                       f"{cheap} | {error} | {per} | {row['wall']:.1f} | {speed} | {left} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waters", type=int, default=20)
    parser.add_argument("--max-nbody", type=int, default=3)
    parser.add_argument("--pyscf", action="store_true", help="the PySCF case: (H2O)10 HF/6-31G cp 3-body")
    parser.add_argument("--settings", nargs="*", help="only these settings (and the full run)")
    parser.add_argument("--json", type=Path, help="append every setting's record to this file (JSON lines)")
    parser.add_argument("--table", type=Path, help="print the tables of the records in this file, run nothing")
    parser.add_argument("--reuse-full", action="store_true",
                        help="take the full run from --json (recorded earlier) instead of running it again")
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {WATER32}", flush=True)
    if args.pyscf:
        model = {"program": "pyscf", "method": "hf", "basis": "6-31g", "keywords": {"conv_tol": 1e-10}}
        case, settings = case_of(10, 3, model, "cp"), PYSCF_SETTINGS
    else:
        model, case, settings = GFN2, case_of(args.waters, args.max_nbody, GFN2, "nocp"), XTB_SETTINGS
    full = saved_full(args.json, case) if args.reuse_full else None
    rows = run_case(case, model, settings, args.settings, full)
    if args.json:
        with args.json.open("a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    print(table(([full] if full else []) + rows))


if __name__ == "__main__":
    main()
