"""Start-up: the quick-start example as a user meets it, whole process, against QCManyBody sequential.

The workload is ``examples/water3_gfn2.yaml`` (GFN2-xTB water trimer, nocp 3-body: 7 tblite tasks of
a few ms each), so what is measured is nearly all start-up: Python, imports, workers, QC children.
Every variant is its own process, timed from the launcher (``time.perf_counter`` around
``subprocess.run``), with ``OMP_NUM_THREADS=1``; variants are interleaved run by run so that a change
in the machine's load hits all of them alike. Variants:

* ``sequential``: QCManyBody's ``ManyBodyComputer.from_manybodyinput`` on the same input as a QCSchema
  ``ManyBodyInput`` JSON (converted once, before timing), in one process (``import mbe_mpi`` for the
  tblite harness, as a QCManyBody user of our harnesses would);
* ``local``: ``python -m mbe_mpi examples/water3_gfn2.yaml`` (local worker processes, one per core);
* ``mpi``: ``mpiexec -n 3 python -m mbe_mpi examples/water3_gfn2.yaml``;
* ``mpi-nothing``: ``mpiexec -n 3 python -c 'from mpi4py import MPI; MPI.COMM_WORLD.Barrier()'``, what
  MPI start-up alone costs;
* ``python-nothing``: ``python -c pass``.

Also reported from each mbe_mpi run's ``extras["mbe_mpi"]["timing"]["startup"]``: when the last worker
reported READY, in seconds after the run started (local: after the master started its workers;
MPI: after the ranks' own imports, which every rank does at the same time).

Usage (from the repository root; ~1 minute)::

    python benchmarks/bench_startup.py              # 7 runs of each variant, medians
    python benchmarks/bench_startup.py --runs 5 --only local sequential
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "examples" / "water3_gfn2.yaml"
VARIANTS = ("sequential", "local", "mpi", "mpi-nothing", "python-nothing")
SEQUENTIAL = """
import sys
from qcmanybody.models.v2 import ManyBodyInput
from qcmanybody.v2.computer import ManyBodyComputer
import mbe_mpi  # registers the tblite harness with QCEngine
result = ManyBodyComputer.from_manybodyinput(ManyBodyInput.model_validate_json(open(sys.argv[1]).read()))
print(repr(result.return_result))
"""


def _commands(work: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "sequential": [py, "-c", SEQUENTIAL, str(work / "input.json")],
        "local": [py, "-m", "mbe_mpi", str(EXAMPLE), "-o", str(work / "local.json"), "--no-checkpoint"],
        "mpi": ["mpiexec", "-n", "3", py, "-m", "mbe_mpi", str(EXAMPLE), "-o", str(work / "mpi.json"),
                "--no-checkpoint"],
        "mpi-nothing": ["mpiexec", "-n", "3", py, "-c", "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"],
        "python-nothing": [py, "-c", "pass"],
    }


def _convert(work: Path) -> None:
    """The example as a QCSchema ManyBodyInput (what the sequential baseline reads), before any timing."""
    from mbe_mpi.inputs import load_input

    mbi, _ = load_input(EXAMPLE)
    (work / "input.json").write_text(mbi.model_dump_json())


def _run(name: str, command: list[str], work: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    record = {"wall": wall}
    output = work / f"{name}.json"
    if output.exists():
        extras = json.loads(output.read_text())["extras"]["mbe_mpi"]
        record["ready"] = extras["timing"]["startup"]
        record["energy"] = json.loads(output.read_text())["return_result"]
        output.unlink()
    elif name == "sequential":
        record["energy"] = float(proc.stdout.strip().splitlines()[-1])
    return record


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def _table(runs: dict[str, list[dict]]) -> list[str]:
    base = statistics.median(r["wall"] for r in runs["sequential"]) if "sequential" in runs else None
    lines = ["| variant | whole process [s], median (range) | / QCManyBody sequential | workers ready [s] | energy |",
             "|---|--:|--:|--:|--:|"]
    for name, records in runs.items():
        walls = [r["wall"] for r in records]
        ratio = f"{statistics.median(walls) / base:.2f}" if base else "—"
        ready = [r["ready"] for r in records if "ready" in r]
        energies = {r["energy"] for r in records if "energy" in r}
        energy = f"{energies.pop():.12f}" if len(energies) == 1 else ("—" if not energies else "DIFFER")
        lines.append(f"| {name} | {_median(walls)} | {ratio} | {_median(ready) if ready else '—'} | {energy} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _convert(work)
        commands = _commands(work)
        runs: dict[str, list[dict]] = {name: [] for name in args.only}
        for name in args.only:  # one untimed warm-up each: the page cache holds the modules afterwards
            _run(name, commands[name], work)
        for _ in range(args.runs):
            for name in args.only:
                runs[name].append(_run(name, commands[name], work))
    load = os.getloadavg()
    print(f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.runs} runs each")
    print("\n".join(_table(runs)))
    energies = {r["energy"] for records in runs.values() for r in records if "energy" in r}
    if len(energies) > 1:
        raise SystemExit(f"the variants disagree on the energy: {sorted(energies)}")


if __name__ == "__main__":
    main()
