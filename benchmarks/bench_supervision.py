"""What supervising the QC program in a child process (``isolate_tasks``) costs per task.

The same run twice in one process, alternating, ``--repeats`` times: a VMFC 3-body expansion of
``--waters`` waters (water32.xyz) with the ``synthetic`` program at zero cost (a stand-in, not
chemistry: what is measured is the machinery), local transport with ``--n-workers`` workers,

* ``thread``: the QC program runs in a thread of each worker (``isolate_tasks: false``);
* ``child``: it runs in a supervised child process of each worker (``isolate_tasks: true``): one
  more pipe round trip and encode/decode per task.

Reported: steady wall time per task (the sum of the per-level walls, i.e. without start-up), its
difference (the cost of supervision per task, as the workers see it), and the start-up times.

    python benchmarks/bench_supervision.py [--waters 8] [--n-workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _input(waters: int):
    from tests.conftest import cluster_molecule, manybody_input

    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": {"seconds": 0}}
    return manybody_input(cluster_molecule(waters), bsse=["vmfc"], max_nbody=3, specification=spec)


def run_once(mbi, n_workers: int, isolate: bool) -> dict[str, float]:
    import mbe_mpi

    started = time.perf_counter()
    result = mbe_mpi.compute(mbi, n_workers=n_workers, isolate_tasks=isolate, checkpoint=False)
    wall = time.perf_counter() - started
    stats = result.extras["mbe_mpi"]
    timing = stats["timing"]
    steady = sum(level["wall_time"] for level in timing["levels"].values())
    tasks = sum(stats["tasks_per_level"].values())
    return {"tasks": tasks, "steady_per_task": steady / tasks, "wall": wall, "startup": timing["startup"],
            "energy": result.properties.return_energy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waters", type=int, default=8)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    mbi = _input(args.waters)
    runs: dict[str, list[dict[str, float]]] = {"thread": [], "child": []}
    print(f"# {platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; VMFC 3-body of "
          f"{args.waters} waters, synthetic at zero cost, {args.n_workers} local workers", flush=True)
    for repeat in range(args.repeats):
        order = ("thread", "child") if repeat % 2 == 0 else ("child", "thread")
        for name in order:
            run = run_once(mbi, args.n_workers, isolate=name == "child")
            runs[name].append(run)
            print(f"[{repeat + 1}/{args.repeats}] {name:6s} {run['tasks']} tasks, steady "
                  f"{1e3 * run['steady_per_task']:.3f} ms/task, start-up {run['startup']:.2f} s", flush=True)
    assert len({r["energy"] for rs in runs.values() for r in rs}) == 1  # the same numbers either way
    med = {name: statistics.median(r["steady_per_task"] for r in rs) for name, rs in runs.items()}
    startup = {name: statistics.median(r["startup"] for r in rs) for name, rs in runs.items()}
    print("\n| QC runs in | steady wall per task (ms), median | start-up (s) |")
    print("|---|--:|--:|")
    for name in runs:
        print(f"| {name} | {1e3 * med[name]:.3f} | {startup[name]:.2f} |")
    per_worker = (med["child"] - med["thread"]) * args.n_workers
    print(f"\nsupervision costs {1e3 * per_worker:.3f} ms of worker time per task "
          f"({1e3 * (med['child'] - med['thread']):.3f} ms of wall per task with {args.n_workers} workers)")


if __name__ == "__main__":
    main()
