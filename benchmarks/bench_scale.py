"""(d) Scale by simulation: ~1,000,000 tasks on 4,096 ranks, planned for real, scheduled on a virtual clock.

The task list is real: QCManyBody's labels for a 3-body, no-counterpoise expansion of 182
single-atom fragments (a random He cluster: 182 + 16,471 + 988,260 = 1,004,913 tasks), planned by
mbe_mpi's own ``build_plan`` (timed, with the master's memory). Durations: the synthetic cost
model, ``base * natoms**3`` (1, 8 and 27 units for monomers, dimers and trimers), times a
deterministic log-normal jitter (sigma 0.3) the cost model cannot foresee. The scheduler is the
real one (prefetch, stealing, batching, level barrier), driven by :mod:`mbe_mpi.scheduling.simulate` with
per-message master costs taken from the throughput benchmark. Reported: predicted efficiency,
makespan / lower bound, simulated master time per task, and the master's planning time and peak
memory (measured, not simulated).

    python benchmarks/bench_scale.py [--fragments 182] [--ranks 4096] [--base 0.1]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fragments", type=int, default=182)
    parser.add_argument("--ranks", type=int, default=4096)
    parser.add_argument("--base", type=float, default=0.1, help="seconds of a monomer task")
    parser.add_argument("--master-seconds", type=float, default=20e-6, help="master cost per message sent/received")
    parser.add_argument("--result-seconds", type=float, default=5e-6, help="master cost per result filed")
    args = parser.parse_args()

    import numpy as np
    from qcelemental.models.v2 import Molecule

    import mbe_mpi  # noqa: F401
    from mbe_mpi.plan import build_plan
    from mbe_mpi.scheduling import SchedulePolicy
    from mbe_mpi.scheduling.simulate import simulate
    from tests.conftest import manybody_input

    n = args.fragments
    rng = np.random.default_rng(0)
    molecule = Molecule(symbols=["He"] * n, geometry=rng.uniform(0, 60, size=(n, 3)), fragments=[[i] for i in range(n)],
                        fragment_charges=[0] * n, fragment_multiplicities=[1] * n, molecular_charge=0,
                        molecular_multiplicity=1)
    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None}}
    mbi = manybody_input(molecule, bsse=["nocp"], max_nbody=3, specification=spec)

    started = time.perf_counter()
    plan = build_plan(mbi)
    by_level = plan.by_level()
    planning = time.perf_counter() - started
    rss_plan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB (ru_maxrss is KiB)
    print(f"planned {len(plan.tasks):,} tasks in {planning:.1f} s; peak RSS {rss_plan:.2f} GiB", flush=True)

    def duration(task) -> float:
        # deterministic jitter from the task index: the same task always takes the same time
        jitter = math.exp(0.3 * math.sqrt(-2 * math.log((task.index * 0.6180339887 % 1) or 0.5))
                          * math.cos(2 * math.pi * (task.index * 0.7548776662 % 1)))
        return args.base * len(task.basis) ** 3 * jitter

    workers = args.ranks - 1
    rows = []
    for name, policy in (("level barrier", SchedulePolicy()), ("no level barrier", SchedulePolicy(level_barrier=False))):
        started = time.perf_counter()
        result = simulate(by_level, workers, duration, policy, master_seconds=args.master_seconds,
                          result_seconds=args.result_seconds)
        simulated = time.perf_counter() - started
        bound = result.bound_barrier if policy.level_barrier else result.bound_global
        rows.append((name, result, bound, simulated))
        print(f"  {name}: simulated in {simulated:.0f} s", flush=True)
    rss_total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print()
    print(f"{len(plan.tasks):,} tasks, {args.ranks} ranks ({workers} workers); planning {planning:.1f} s, "
          f"master peak RSS {rss_plan:.2f} GiB after planning, {rss_total:.2f} GiB with the scheduler's state")
    print()
    print("| schedule | predicted makespan (s) | lower bound (s) | makespan / bound | efficiency "
          "| master busy (s) | master time per task (us) | messages | steals |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, result, bound, _ in rows:
        print(f"| {name} | {result.makespan:.1f} | {bound:.1f} | {result.makespan / bound:.4f} | "
              f"{result.efficiency:.4f} | {result.master_busy:.1f} | {1e6 * result.master_busy / len(plan.tasks):.1f} "
              f"| {result.messages:,} | {result.steals:,} |")


if __name__ == "__main__":
    main()
