"""Planning very large inputs: process start to the first TASK, and to the plan's end, streamed or whole.

The input is a random He cluster, one atom per fragment (a (H2O)200 cluster does not exist in
``../shared/data``; what is measured is the bookkeeping, which depends only on the fragment count),
3-body, the ``synthetic`` program (a stand-in for a QC code, zero seconds here: nothing but the
planning is timed). Each case is a fresh ``python -m mbe_mpi INPUT --n-workers 1 --no-checkpoint``
(or ``mpiexec -n 2 python -m mbe_mpi ...``) whose master records, from the launch:

- **first TASK**: the master's first TASK message sent;
- **planned**: every task planned (and, streamed, checked against QCManyBody's compute map), with
  the master's peak RSS (``ru_maxrss``) at that moment; then the process ends (the zero-second
  tasks are not run: a million of them would time the transport, see ``bench_throughput.py``).

Two ways to plan, in the same run: **streamed** (what ``python -m mbe_mpi`` does: the first level's
tasks go out while a background thread plans the rest, :mod:`mbe_mpi.plan_stream`) and the
baseline **whole** (the same code with the thread's work done before the master starts, i.e. the
plan built and checked before the first dispatch, as before streaming). Also timed: the dry run
``python -m mbe_mpi plan INPUT --ranks 64``.

    python benchmarks/bench_planning.py [--fragments 200] [--bsse cp,nocp] [--mpi] [--no-dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in the measured process: `python -c PROBE INPUT ...` is `python -m mbe_mpi INPUT ...` with two
# timestamps taken in the master and, for the baseline, the plan built before the master starts.
PROBE = r"""
import json, os, resource, runpy, sys, time
launched, out, mode = float(os.environ["BENCH_LAUNCHED"]), os.environ["BENCH_OUT"], os.environ["BENCH_MODE"]
from mbe_mpi import plan_stream
from mbe_mpi.master import loop
if mode == "whole":
    def whole(self, computer, _init=plan_stream.PlanStream.__init__):
        started = plan_stream.threading.Thread.start
        plan_stream.threading.Thread.start = lambda thread: thread.run()  # the thread's work, here and now
        try:
            _init(self, computer)
        finally:
            plan_stream.threading.Thread.start = started
    plan_stream.PlanStream.__init__ = whole
record = {}
assign, take = loop.Master._assign, loop.Master._take_planned
def done():
    if "first_task" in record and "planned" in record:
        with open(out, "w") as f:
            json.dump(record, f)
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(0)  # what is measured is over; the workers see the master gone and end
def first_task(self, action):
    assign(self, action)
    record.setdefault("first_task", time.time() - launched)
    done()
def planned(self):
    streaming = self.stream is not None
    take(self)
    if streaming and self.stream is None:  # the last of the plan was handed over
        record["planned"] = time.time() - launched
        record["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        record["tasks"] = len(self.plan.tasks)
        done()
loop.Master._assign, loop.Master._take_planned = first_task, planned
sys.argv = ["mbe_mpi", *sys.argv[1:]]
runpy.run_module("mbe_mpi", run_name="__main__", alter_sys=True)
"""


def helium_input(n: int, bsse: list[str], path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    molecule = {"schema_name": "qcschema_molecule", "schema_version": 3, "symbols": ["He"] * n,
                "geometry": rng.uniform(0, 60, size=3 * n).tolist(), "fragments": [[i] for i in range(n)],
                "fragment_charges": [0] * n, "fragment_multiplicities": [1] * n, "molecular_charge": 0,
                "molecular_multiplicity": 1}
    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None}}
    path.write_text(json.dumps({"molecule": molecule,
                                "specification": {"driver": "energy", "specification": spec,
                                                  "keywords": {"bsse_type": bsse, "max_nbody": 3}}}))


def measure(input_path: Path, mode: str, mpi: bool, work: Path) -> dict:
    out = work / f"{mode}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-c", PROBE, str(input_path), "--no-checkpoint"]
    command = ["mpiexec", "-n", "2", *command] if mpi else [*command, "--n-workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_OUT": str(out), "BENCH_MODE": mode,
           "BENCH_LAUNCHED": repr(time.time())}
    done = subprocess.run(command, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=900)
    if not out.exists():
        raise SystemExit(f"{mode}: the probe recorded nothing (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fragments", type=int, default=200)
    parser.add_argument("--bsse", default="cp,nocp", help="comma-separated bsse_type list")
    parser.add_argument("--mpi", action="store_true", help="under mpiexec -n 2 instead of one local worker")
    parser.add_argument("--no-dry-run", action="store_true", help="skip `python -m mbe_mpi plan`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        input_path = work / f"he{args.fragments}.json"
        helium_input(args.fragments, args.bsse.split(","), input_path)
        print(f"{args.fragments} fragments, bsse {args.bsse}, 3-body, {'mpiexec -n 2' if args.mpi else 'local, 1 worker'}")
        for mode in ("whole", "streamed"):
            r = measure(input_path, mode, args.mpi, work)
            print(f"  {mode:>8}: {r['tasks']:,} tasks; first TASK {r['first_task']:.1f} s, planned {r['planned']:.1f} s, "
                  f"master peak RSS {r['rss_mb']:,.0f} MB", flush=True)
        if not args.no_dry_run:
            started = time.time()
            subprocess.run([sys.executable, "-m", "mbe_mpi", "plan", str(input_path), "--ranks", "64"], cwd=work,
                           check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
            print(f"  `python -m mbe_mpi plan --ranks 64`: {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
