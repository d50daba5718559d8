"""(b) Scheduling efficiency: makespan against the lower bound, barrier vs no barrier vs FIFO order.

~2,000 synthetic *sleep* tasks (a stand-in program with a known cost, not chemistry) from a real
counterpoise task list -- VMFC 3-body of 13 waters cut from water32.xyz, so costs spread with the
number of atoms including ghosts (3 to 9 atoms, cost = seconds * natoms**2.5) -- on 8 local
workers (sleeping tasks: oversubscribing 2 cores is fine). In the same run:

* mbe_mpi's policy with the level barrier (default) and without it;
* the naive baseline: FIFO (plan) order, one task per worker, no stealing, with the barrier;
* the simulator's prediction for each (same scheduler on a virtual clock), to check the
  ``plan`` command's predictions against reality.

makespan = first TASK sent to last RESULT received (start-up excluded). Lower bounds from the
*measured* task durations: barrier mode, sum over levels of max(level work / workers, longest
task); without barrier, max(all work / workers, longest task). Master CPU: process time of the
master during the scheduling loop, as a share of one core over the makespan.

    python benchmarks/bench_efficiency.py [--waters 13] [--workers 8] [--seconds 0.0004] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _input(waters: int, seconds: float, exponent: float):
    from tests.conftest import cluster_molecule, manybody_input

    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": {"seconds": seconds, "exponent": exponent}}
    return manybody_input(cluster_molecule(waters), bsse=["vmfc"], max_nbody=3, specification=spec)


def _bounds(timeline, workers):
    levels = {}
    for t in timeline:
        levels.setdefault(t.level, []).append(t.end - t.start)
    barrier = sum(max(sum(d) / workers, max(d)) for d in levels.values())
    everything = [x for d in levels.values() for x in d]
    return barrier, max(sum(everything) / workers, max(everything))


def run_mode(mbi, workers: int, **options):
    from mbe_mpi.options import ExecutionOptions
    from mbe_mpi.run import run

    opts = ExecutionOptions.from_mapping({"n_workers": workers, "checkpoint": False, **options})
    outcome = run(lambda: (mbi, opts))
    timeline = outcome.timeline
    makespan = max(t.end for t in timeline) - min(t.sent for t in timeline)
    timing = outcome.result.extras["mbe_mpi"]["timing"]
    return outcome.result, timeline, makespan, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waters", type=int, default=13)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.0004)
    parser.add_argument("--exponent", type=float, default=2.5)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each schedule, interleaved; the table "
                        "gives the median (and range) of each figure")
    args = parser.parse_args()

    import mbe_mpi  # noqa: F401
    from mbe_mpi.costs import program_estimates
    from mbe_mpi.plan import build_plan
    from mbe_mpi.scheduling import FIFO_POLICY, SchedulePolicy
    from mbe_mpi.scheduling.simulate import simulate

    mbi = _input(args.waters, args.seconds, args.exponent)
    plan = build_plan(mbi)
    expected = program_estimates(plan)
    levels = {lv: len(ts) for lv, ts in plan.by_level().items()}
    work = sum(expected(t) for t in plan.tasks)
    print(f"# {len(plan.tasks)} tasks {levels}, expected work {work:.1f} s, {args.workers} workers; "
          f"{platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    modes = {
        "mbe_mpi, level barrier": ({}, SchedulePolicy()),
        "mbe_mpi, no level barrier": ({"level_barrier": False}, SchedulePolicy(level_barrier=False)),
        "FIFO order, level barrier (baseline)": ({"order": "fifo"}, FIFO_POLICY),
    }
    runs: dict[str, list[tuple]] = {name: [] for name in modes}
    reference = None
    for repeat in range(args.repeats):
        for name, (options, policy) in modes.items():
            result, timeline, makespan, timing = run_mode(mbi, args.workers, **options)
            barrier_bound, global_bound = _bounds(timeline, args.workers)
            bound = barrier_bound if policy.level_barrier else global_bound
            idle = sum(level["barrier_idle"] for level in timing["levels"].values())
            runs[name].append((makespan, bound, makespan / bound, makespan / barrier_bound,
                               timing["master_cpu_time"] / makespan, idle))
            if reference is None:
                reference = result.return_result
            assert result.return_result == reference  # same numbers whatever the schedule
            print(f"  run {repeat + 1}, {name}: makespan {makespan:.2f} s, / bound {makespan / bound:.3f}, "
                  f"master CPU {timing['master_cpu_time'] / makespan:.2%}", flush=True)
    print()
    print(f"median (range) of {args.repeats} run(s)")
    print("| schedule | makespan (s) | lower bound (s) | makespan / bound | makespan / barrier bound "
          "| predicted (s) | predicted / real | master CPU (share of a core) | barrier idle (worker-s) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, (_, policy) in modes.items():
        columns = list(zip(*runs[name], strict=True))
        makespan = statistics.median(columns[0])
        predicted = simulate(plan.by_level(), args.workers, expected, policy).makespan
        cells = [_cell(columns[0], "{:.2f}"), _cell(columns[1], "{:.2f}"), _cell(columns[2], "{:.3f}"),
                 _cell(columns[3], "{:.3f}"), f"{predicted:.2f}", f"{predicted / makespan:.3f}",
                 _cell(columns[4], "{:.2%}"), _cell(columns[5], "{:.2f}")]
        print(f"| {name} | " + " | ".join(cells) + " |")


def _cell(values, form: str) -> str:
    """Median, and the range when there are several runs."""
    median = form.format(statistics.median(values))
    return median if len(values) == 1 else f"{median} ({form.format(min(values))}–{form.format(max(values))})"


if __name__ == "__main__":
    main()
