"""What supervising the QC program in a child process (``isolate_tasks``) costs per task, and per crash.

The same run in one process, the variants alternating, ``--repeats`` times: a VMFC 3-body expansion
of ``--waters`` waters (water32.xyz) with the ``synthetic`` program at zero cost (a stand-in, not
chemistry: what is measured is the machinery), local transport with ``--n-workers`` workers,

* ``thread``: the QC program runs in a thread of each worker (``isolate_tasks: false``);
* ``child``: it runs in a supervised child process of each worker (``isolate_tasks: true``): one
  more pipe round trip and encode/decode per task;
* ``crashes``: as ``child``, but the QC process of every dimer task without ghosts dies once
  (``SIGSEGV``, the synthetic program's fault injection): each crash costs a new QC child, and the
  task a retry (``retry_backoff: 0``, so that what is measured is the restart).

Reported: steady wall time per task (the sum of the per-level walls, i.e. without start-up), the
differences (the cost of supervision per task, and of a crash, as the workers see it), and the
start-up times.

    python benchmarks/bench_supervision.py [--waters 8] [--n-workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


VARIANTS = ("thread", "child", "crashes")


def _input(waters: int, fault_dir: str | None = None):
    from tests.conftest import cluster_molecule, manybody_input

    keywords: dict = {"seconds": 0}
    if fault_dir is not None:  # each ghost-free dimer's QC process dies once
        keywords.update(fault={"kind": "segfault", "when_natoms_real": 6, "when_natoms_ghost": 0, "attempts": 1},
                        state_dir=fault_dir)
    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": keywords}
    return manybody_input(cluster_molecule(waters), bsse=["vmfc"], max_nbody=3, specification=spec)


def run_once(waters: int, n_workers: int, variant: str) -> dict[str, float]:
    import mbe_mpi

    with tempfile.TemporaryDirectory() as fault_dir:
        mbi = _input(waters, fault_dir if variant == "crashes" else None)
        started = time.perf_counter()
        result = mbe_mpi.compute(mbi, n_workers=n_workers, isolate_tasks=variant != "thread", checkpoint=False,
                                 retry_backoff=0.0)
        wall = time.perf_counter() - started
        crashes = len(os.listdir(fault_dir))
    stats = result.extras["mbe_mpi"]
    timing = stats["timing"]
    steady = sum(level["wall_time"] for level in timing["levels"].values())
    tasks = sum(stats["tasks_per_level"].values())
    return {"tasks": tasks, "steady": steady, "steady_per_task": steady / tasks, "wall": wall,
            "startup": timing["startup"], "crashes": crashes, "energy": result.properties.return_energy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waters", type=int, default=8)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    print(f"# {platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; VMFC 3-body of "
          f"{args.waters} waters, synthetic at zero cost, {args.n_workers} local workers", flush=True)
    for repeat in range(args.repeats):
        for name in VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]:
            run = run_once(args.waters, args.n_workers, name)
            runs[name].append(run)
            print(f"[{repeat + 1}/{args.repeats}] {name:7s} {run['tasks']} tasks, {run['crashes']} crashes, steady "
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
    crashes = runs["crashes"][0]["crashes"]
    per_crash = statistics.median(crashed["steady"] - plain["steady"]
                                  for crashed, plain in zip(runs["crashes"], runs["child"], strict=True)) * args.n_workers / crashes
    print(f"a crash costs {1e3 * per_crash:.1f} ms of worker time ({crashes} crashes per run: a new QC child and a "
          f"retry), median of the runs' differences")

if __name__ == "__main__":
    main()
