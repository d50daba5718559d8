"""Real chemistry: (H2O)6 MP2/cc-pVDZ counterpoise 3-body with PySCF, QCManyBody sequential vs mbe_mpi on 2 workers.

The cluster is water 3 of water32.xyz and its 5 nearest neighbours by O-O distance (as the tests'
``water_cluster_atoms(6)``), explicit neutral singlet fragments. QCManyBody's ``cp`` puts every task in the
full-cluster basis (6 x 24 = 144 basis functions), so there are 41 MP2 tasks: 6 monomers, 15 dimers, 20 trimers.

Three runs, each its own process, every one with ``OMP_NUM_THREADS=1``:

* ``sequential``: ``ManyBodyComputer.from_manybodyinput(mbi)`` after ``import mbe_mpi`` (the reference);
* ``local``: ``mbe_mpi.compute(mbi, n_workers=2)`` (local worker processes);
* ``mpi``: ``mpiexec -n 3 python bench_chemistry.py --run mbe_mpi`` (rank 0 master, 2 worker ranks).

Usage (from the repository root; ~6-8 minutes on 2 idle cores)::

    python benchmarks/bench_chemistry.py                 # the three runs once, then the table
    python benchmarks/bench_chemistry.py --repeats 2     # twice (the second pass in reverse order)
    python benchmarks/bench_chemistry.py --waters 3      # quick smoke run (7 tasks)
    python benchmarks/bench_chemistry.py --cluster-results   # also compare the 41 task energies one by one
    python benchmarks/bench_chemistry.py --order side-by-side sequential local mpi   # and the host's bound, measured
    python benchmarks/bench_chemistry.py --order sequential mpi mpi-no-barrier   # also with level_barrier false

Reported: the wall time of the ``from_manybodyinput`` / ``compute`` call (*call*; includes starting workers for
``local``) and of the whole command (*process*), the speedups over the sequential run, the largest absolute
difference of ``return_result`` and every numeric property from the sequential result (0 = bit-identical), the
per-level timing of ``result.extras["mbe_mpi"]["timing"]``, and how busy the machine was: the load average, and
from ``/proc/stat`` the CPU seconds the whole machine used during each run against those of our own processes
(``getrusage`` of the children), so that other users' load is visible.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
_SHARED = REPO.parent / "shared" / "data" / "water32.xyz"
WATER32 = _SHARED if _SHARED.exists() else REPO / "tests" / "data" / "water32.xyz"
ANGSTROM_TO_BOHR = 1.0 / 0.52917721067


def water_cluster(n: int, center: int = 3) -> list[list[tuple[str, tuple[float, float, float]]]]:
    """Water ``center`` (0-based) and its n-1 nearest neighbours by O-O distance (ties: file order)."""
    import numpy as np

    rows = [line.split() for line in WATER32.read_text().splitlines()[2:] if line.strip()]
    atoms = [(s, (float(x), float(y), float(z))) for s, x, y, z in rows]
    waters = [atoms[3 * i : 3 * i + 3] for i in range(len(atoms) // 3)]
    origin = np.array(waters[center][0][1])
    order = sorted(range(len(waters)), key=lambda i: (float(np.linalg.norm(np.array(waters[i][0][1]) - origin)), i))
    return [waters[i] for i in order[:n]]


def make_input(args: argparse.Namespace):
    import numpy as np
    from qcelemental.models.v2 import Molecule
    from qcmanybody.models.v2 import ManyBodyInput

    n = args.waters
    symbols, geometry, fragments = [], [], []
    for water in water_cluster(n):
        start = len(symbols)
        for sym, xyz in water:
            symbols.append(sym)
            geometry.append(np.array(xyz) * ANGSTROM_TO_BOHR)
        fragments.append(list(range(start, len(symbols))))
    molecule = Molecule(symbols=symbols, geometry=np.array(geometry), fragments=fragments,
                        fragment_charges=[0.0] * n, fragment_multiplicities=[1] * n,
                        molecular_charge=0.0, molecular_multiplicity=1)
    spec = {"program": "pyscf", "driver": "energy", "model": {"method": args.method, "basis": args.basis}}
    keywords = {"bsse_type": [args.bsse], "max_nbody": args.max_nbody}
    mb_spec: dict[str, Any] = {"driver": "energy", "keywords": keywords, "specification": spec}
    if args.cluster_results:  # keep every task's AtomicResult: per-task energies can then be compared
        mb_spec["protocols"] = {"cluster_results": "all"}
    return ManyBodyInput(specification=mb_spec, molecule=molecule)


def task_energies(result) -> dict[str, dict[str, Any]]:
    """Per task label (with --cluster-results): return_energy as float.hex, what PySCF really used, its wall time."""
    return {label: {"energy": float(atomic.properties.return_energy).hex(),
                    "resources": atomic.extras.get("pyscf_resources"), "wall": atomic.provenance.wall_time}
            for label, atomic in (result.cluster_results or {}).items()}


def numbers(result) -> dict[str, list[str]]:
    """return_result and every numeric property, as float.hex strings (exact through JSON)."""
    import numpy as np

    out = {"return_result": [float(x).hex() for x in np.ravel(result.return_result)]}
    for key, value in result.properties.model_dump().items():
        if isinstance(value, (int, float, list, np.ndarray)) and not isinstance(value, bool):
            out[key] = [float(x).hex() for x in np.ravel(np.asarray(value, dtype=float))]
    return out


def run_sequential(args: argparse.Namespace) -> dict[str, Any]:
    from qcmanybody.v2.computer import ManyBodyComputer

    import mbe_mpi  # noqa: F401  (registers the pyscf harness with QCEngine)

    mbi = make_input(args)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = ManyBodyComputer.from_manybodyinput(mbi)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"call_wall": wall, "call_cpu": cpu, "tasks": result.properties.calcinfo_nmbe,
            "return_energy": result.properties.return_energy, "numbers": numbers(result),
            "task_energies": task_energies(result)}


def run_probe(args: argparse.Namespace) -> dict[str, Any]:
    """``--probe-tasks`` of the input's own cp monomer tasks (an SCF in the full-cluster basis) through QCEngine."""
    import qcengine
    from qcelemental.models.v2 import AtomicInput

    import mbe_mpi  # noqa: F401  (registers the pyscf harness with QCEngine)

    mbi = make_input(args)
    molecule = mbi.molecule
    n = len(molecule.fragments)
    spec = {"program": "pyscf", "driver": "energy", "model": {"method": args.method, "basis": args.basis}}

    def task(i: int) -> None:
        ghosted = molecule.get_fragment(real=[i % n], ghost=[j for j in range(n) if j != i % n], orient=False,
                                        group_fragments=True)
        qcengine.compute(AtomicInput(molecule=ghosted, specification=spec), "pyscf", raise_error=True)

    task(0)  # warm-up, not timed: the first call imports PySCF's modules and builds QCEngine's config
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(args.probe_tasks):
        task(i)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"call_wall": wall, "call_cpu": cpu, "tasks": args.probe_tasks}


def run_mbe_mpi(args: argparse.Namespace) -> dict[str, Any] | None:
    import mbe_mpi

    mbi = make_input(args)
    under_mpi = "PMI_RANK" in os.environ or "PMI_SIZE" in os.environ
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = mbe_mpi.compute(mbi, n_workers=None if under_mpi else args.n_workers,
                             level_barrier=not args.no_level_barrier)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if result is None:  # a worker rank
        return None
    stats = result.extras["mbe_mpi"]
    return {"call_wall": wall, "call_cpu": cpu, "tasks": result.properties.calcinfo_nmbe,
            "return_energy": result.properties.return_energy, "numbers": numbers(result),
            "task_energies": task_energies(result), "transport": stats["transport"], "n_workers": stats["n_workers"], "task_time": stats["task_time"],
            "timing": stats["timing"]}


# --------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / hz, steal / hz


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


SCRIPT = str(Path(__file__).resolve())


def command_for(name: str, args: argparse.Namespace, out: str) -> list[str]:
    """The command line of one run: ``sequential``, ``local``, ``mpi`` or ``probe``, writing its JSON to ``out``."""
    common = ["--waters", str(args.waters), "--method", args.method, "--basis", args.basis, "--bsse", args.bsse,
              "--max-nbody", str(args.max_nbody), *(["--cluster-results"] if args.cluster_results else [])]
    if name in ("sequential", "probe"):
        return [sys.executable, SCRIPT, "--run", name, *common, "--probe-tasks", str(args.probe_tasks), "--out", out]
    transport, _, variant = name.partition("-")
    if variant == "no-barrier":
        common.append("--no-level-barrier")
    if transport == "local":
        return [sys.executable, SCRIPT, "--run", "mbe_mpi", "--n-workers", str(args.n_workers), *common, "--out", out]
    return [shutil.which("mpiexec") or "mpiexec", "-n", str(args.n_workers + 1), sys.executable, SCRIPT,
            "--run", "mbe_mpi", *common, "--out", out]


def run_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    """What this host gives two processes at once, measured now with the benchmark's own kind of task.

    ``--probe-tasks`` of the input's cp monomer tasks (each an SCF in the full-cluster basis, the size of
    every task of a cp run) computed one after another through QCEngine, once alone and then as
    ``n_workers`` copies at the same time. If each copy is slower than the one alone (shared caches, memory bandwidth, a
    hypervisor's neighbours), no scheduler can reach ``n_workers``x on this host; the bound is
    ``n_workers * alone / together``, and it varies from one hour to the next on a shared host.
    """
    with tempfile.TemporaryDirectory(prefix="bench_chemistry_") as tmp:
        def start(i: int) -> subprocess.Popen:
            return subprocess.Popen(command_for("probe", args, str(Path(tmp) / f"{i}.json")),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                    env=run_env())

        def finish(procs: list[subprocess.Popen]) -> list[float]:
            for proc in procs:
                _, err = proc.communicate(timeout=args.timeout)
                if proc.returncode != 0:
                    raise RuntimeError(f"side-by-side probe failed ({proc.returncode}):\n{err[-4000:]}")
            return [json.loads((Path(tmp) / f"{i}.json").read_text())["call_wall"] for i in range(len(procs))]

        alone = finish([start(0)])[0]
        together = finish([start(i) for i in range(args.n_workers)])
    slowdown = statistics.mean(together) / alone
    return {"tasks": args.probe_tasks, "alone": alone, "together": together, "slowdown": slowdown,
            "bound": args.n_workers / slowdown}


def launch(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_chemistry_") as tmp:
        out = str(Path(tmp) / "out.json")
        command = command_for(name, args, out)
        env = run_env()
        load_before = os.getloadavg()
        busy0, steal0 = machine_cpu_seconds()
        ours0 = children_cpu_seconds()
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=args.timeout)
        process_wall = time.perf_counter() - t0
        busy1, steal1 = machine_cpu_seconds()
        ours = children_cpu_seconds() - ours0
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}): {' '.join(command)}\n{proc.stderr[-4000:]}")
        data = json.loads(Path(out).read_text())
    shown = " ".join("python" if p == sys.executable else "benchmarks/bench_chemistry.py" if p == SCRIPT
                     else "mpiexec" if p.endswith("/mpiexec") else p for p in command if p != out and p != "--out")
    data.update(name=name, process_wall=process_wall, load_before=load_before, load_after=os.getloadavg(),
                machine_cpu=busy1 - busy0, steal_cpu=steal1 - steal0, our_cpu=ours, command=shown)
    return data


def longest_first(times: list[float], n_workers: int) -> float:
    """Makespan of ``times`` dealt longest first, each to the worker that is free first."""
    loads = [0.0] * n_workers
    for t in sorted(times, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads)


def schedule_floor(run: dict[str, Any], barrier: bool) -> float | None:
    """The wall time of the best-informed schedule of this run's own task times (``--cluster-results``).

    Longest first with the measured times known in advance, level by level where the run kept the
    barrier, with no start-up and no cost between tasks. What the run took beyond it is start-up, the
    cost per task, and not knowing beforehand which of the equal-sized tasks the host would slow down.
    """
    levels: dict[int, list[float]] = {}
    for label, entry in (run.get("task_energies") or {}).items():
        levels.setdefault(len(json.loads(label)[1]), []).append(entry["wall"])
    if not levels or not run.get("n_workers"):
        return None
    if not barrier:
        return longest_first([t for times in levels.values() for t in times], run["n_workers"])
    return sum(longest_first(times, run["n_workers"]) for times in levels.values())


def max_abs_diff(a: dict[str, list[str]], b: dict[str, list[str]]) -> tuple[float, int, int]:
    """(largest |a-b| over all numbers, numbers compared, numbers not bit-identical)."""
    if set(a) != set(b):
        raise AssertionError(f"different properties: {sorted(set(a) ^ set(b))}")
    worst, count, differ = 0.0, 0, 0
    for key in a:
        if len(a[key]) != len(b[key]):
            raise AssertionError(f"{key}: different lengths")
        for x, y in zip(a[key], b[key], strict=True):
            fx, fy = float.fromhex(x), float.fromhex(y)
            count += 1
            differ += x != y
            worst = max(worst, abs(fx - fy))
    return worst, count, differ


def describe_machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}"
                         for p in ("pyscf", "qcengine", "qcmanybody", "qcelemental", "mpi4py", "mpich", "numpy"))
    return f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}; Python " \
           f"{platform.python_version()}, {versions}"


def drive(args: argparse.Namespace) -> None:
    print(f"# bench_chemistry  {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    print(f"# machine: {describe_machine()}")
    print(f"# (H2O){args.waters} {args.method.upper()}/{args.basis} {args.bsse} {args.max_nbody}-body, "
          f"OMP_NUM_THREADS=1, {args.n_workers} workers")
    runs: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    order = list(args.order)
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            if name == "side-by-side":
                probe = side_by_side(args)
                probes.append(probe)
                print(f"[{repeat + 1}] side-by-side {probe['tasks']} tasks: alone {probe['alone']:.1f} s, "
                      f"{args.n_workers} at once {' / '.join(f'{t:.1f}' for t in probe['together'])} s: "
                      f"each {probe['slowdown']:.3f}x slower; this host's bound {probe['bound']:.2f}x", flush=True)
                continue
            run = launch(name, args)
            runs.append(run)
            print(f"[{repeat + 1}] {name:10s} {run['tasks']} tasks, call {run['call_wall']:.1f} s, process "
                  f"{run['process_wall']:.1f} s; load {run['load_before'][0]:.2f} -> {run['load_after'][0]:.2f}; "
                  f"machine CPU {run['machine_cpu']:.0f} s, ours {run['our_cpu']:.0f} s, steal {run['steal_cpu']:.0f} s",
                  flush=True)
    sequential = [r for r in runs if r["name"] == "sequential"]
    ref = sequential[0] if sequential else None
    seq_call = statistics.median(r["call_wall"] for r in sequential) if sequential else None
    seq_proc = statistics.median(r["process_wall"] for r in sequential) if sequential else None
    print("\n| run | call wall (s) | process wall (s) | speedup (call) | speedup (process) | max abs diff vs sequential "
          "(Eh) | not bit-identical | load avg 1 min before→after | machine CPU s (ours) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in runs:
        diff = "—"
        if ref is not None and r is not ref:
            worst, count, differ = max_abs_diff(r["numbers"], ref["numbers"])
            diff = f"{worst:.1e} | {differ} of {count}"
        else:
            diff = "(reference) | —"
        speed_call = f"{seq_call / r['call_wall']:.2f}" if seq_call else "—"
        speed_proc = f"{seq_proc / r['process_wall']:.2f}" if seq_proc else "—"
        print(f"| {r['name']} | {r['call_wall']:.1f} | {r['process_wall']:.1f} | {speed_call} | {speed_proc} | {diff} | "
              f"{r['load_before'][0]:.2f}→{r['load_after'][0]:.2f} | {r['machine_cpu']:.0f} ({r['our_cpu']:.0f}) |")
    if probes and seq_call:
        bound = statistics.mean(p["bound"] for p in probes)
        each = ", ".join(f"{p['bound']:.2f}" for p in probes)
        shares = ", ".join(f"{r['name']} {seq_call / r['call_wall'] / bound:.0%}" for r in runs if r is not ref)
        print(f"\nthis host's bound for {args.n_workers} workers, measured side by side: {bound:.2f}x ({each}); "
              f"speedup (call) as a share of it: {shares}")
    for r in runs:
        timing = r.get("timing")
        if not timing:
            continue
        print(f"\n{r['name']} ({r['transport']}, {r['n_workers']} workers): workers ready after {timing['startup']:.2f} s,"
              f" master CPU {timing['master_cpu_time']:.3f} s, overall utilisation {timing['utilisation']:.0%},"
              f" summed task time {timing['task_time_sum']:.1f} s")
        floor = schedule_floor(r, barrier=not r["name"].endswith("no-barrier"))
        if floor is not None:
            print(f"best schedule of these task times (longest first, times known): {floor:.1f} s; this run "
                  f"{timing['wall_time']:.1f} s, of which start-up {timing['startup']:.2f} s, the rest "
                  f"{timing['wall_time'] - floor - timing['startup']:.1f} s")
        print("| level | tasks | wall (s) | mean task (s) | max task (s) | utilisation | barrier idle (worker-s) |")
        print("|--:|--:|--:|--:|--:|--:|--:|")
        for level, row in timing["levels"].items():
            print(f"| {level} | {row['tasks']} | {row['wall_time']:.1f} | {row['task_time_mean']:.2f} | "
                  f"{row['task_time_max']:.2f} | {row['utilisation']:.0%} | {row['barrier_idle']:.1f} |")
    if ref is not None:
        print(f"\nsequential return_energy {ref['return_energy']!r} Eh; sequential CPU {ref['call_cpu']:.1f} s")
        for r in runs:
            if r is ref or not r.get("task_energies") or not ref.get("task_energies"):
                continue
            differ = [(label, float.fromhex(e["energy"]) - float.fromhex(ref["task_energies"][label]["energy"]),
                       e["resources"], ref["task_energies"][label]["resources"])
                      for label, e in r["task_energies"].items()
                      if e["energy"] != ref["task_energies"][label]["energy"]]
            print(f"{r['name']}: {len(differ)} of {len(r['task_energies'])} task energies differ from the sequential ones")
            for label, diff, used, ref_used in differ:
                print(f"  {label}: {diff:+.3e} Eh; PySCF used {used}, sequential {ref_used}")
    print("\ncommands:")
    for name in order:
        match = next((r for r in runs if r["name"] == name), None)
        if match:
            print(f"  {match['command']}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", choices=("sequential", "mbe_mpi", "probe"), help="one run in this process (used by the driver)")
    parser.add_argument("--order", nargs="+", default=["sequential", "local", "mpi"],
                        choices=("sequential", "local", "mpi", "local-no-barrier", "mpi-no-barrier", "side-by-side"),
                        help="runs, in this order; *-no-barrier: with execution.level_barrier false; "
                             "side-by-side: the host's parallel bound, measured (see side_by_side)")
    parser.add_argument("--no-level-barrier", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help="passes over the runs (alternating order)")
    parser.add_argument("--waters", type=int, default=6)
    parser.add_argument("--method", default="mp2")
    parser.add_argument("--basis", default="cc-pvdz")
    parser.add_argument("--bsse", default="cp")
    parser.add_argument("--max-nbody", type=int, default=3)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--cluster-results", action="store_true",
                        help="keep every task's AtomicResult and compare the task energies one by one")
    parser.add_argument("--probe-tasks", type=int, default=3, help="tasks per copy in the side-by-side probe")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", help="also write every run (with the numbers) to this JSON file")
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is None:
        drive(args)
        return
    run = {"sequential": run_sequential, "mbe_mpi": run_mbe_mpi, "probe": run_probe}[args.run]
    out = run(args)
    if out is not None and args.out:
        Path(args.out).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
