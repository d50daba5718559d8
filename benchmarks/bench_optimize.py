"""Geometry optimisation: ASE BFGS of (H2O)6 on HF/6-31G 2-body nocp gradients from PySCF.

Three ways to drive the same BFGS, each in its own process (start-up and imports included in the
wall time), every one with ``OMP_NUM_THREADS=1``:

* ``sequential``: an ASE calculator written here that calls QCManyBody's sequential
  ``ManyBodyComputer.from_manybodyinput`` at each step (what a QCManyBody user has today);
* ``session``: ``mbe_mpi.ase.ManyBodyCalculator`` on one 2-worker ``mbe_mpi.Session``;
* ``compute``: an ASE calculator that calls ``mbe_mpi.compute(..., n_workers=2)`` at each step
  (workers started anew for every gradient: what a session saves).

All start from the same geometry (water 3 of water32.xyz and its five nearest neighbours) and must
take the same steps: the energies of every step are compared (max abs difference, eV). Reported:
steps, whole-process wall time, the speedup over ``sequential``, and the overhead per step beyond
QC: wall per step minus the QC time per step divided by the workers (for ``sequential``: the
fragment tasks' own wall times, from QCEngine's provenance).

Usage (from the repository root; a few minutes on 2 idle cores)::

    python benchmarks/bench_optimize.py                  # the three variants, fmax 0.05 eV/A or 40 steps
    python benchmarks/bench_optimize.py --steps 5        # a quick run
    python benchmarks/bench_optimize.py --repeats 2      # twice, the second pass in reverse order
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
STARTED = time.perf_counter()  # the whole process, as close to its start as Python lets us

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEMPLATE = {
    "molecule": {"atoms_per_fragment": 3},
    "model": {"program": "pyscf", "method": "hf", "basis": "6-31g", "keywords": {"conv_tol": 1e-10}},
    "bsse": "nocp",
    "max_nbody": 2,
}
VARIANTS = ("sequential", "session", "compute")


def _atoms():
    sys.path.insert(0, str(REPO))
    from tests.ase_reference import water_atoms

    return water_atoms(6)


def _sequential_calculator():
    """QCManyBody's computer at every step; QC time from the fragment results' provenance."""
    import numpy as np
    from ase.calculators.calculator import Calculator, all_changes
    from ase.units import Bohr, Hartree
    from qcmanybody.v2.computer import ManyBodyComputer

    from mbe_mpi.ase import ManyBodyCalculator
    from mbe_mpi.inputs import parse_input

    class Sequential(Calculator):
        implemented_properties = ["energy", "forces"]
        qc_time = 0.0

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            driver = "gradient" if "forces" in properties else "energy"
            data = ManyBodyCalculator(TEMPLATE).manybody_input(self.atoms, driver)
            data["cluster_results"] = "all"  # to read each task's wall time
            mbi, _ = parse_input(data)
            result = ManyBodyComputer.from_manybodyinput(mbi)
            Sequential.qc_time += sum(r.provenance.wall_time for r in result.cluster_results.values())
            self.results = {"energy": float(result.properties.return_energy) * Hartree}
            if driver == "gradient":
                self.results["forces"] = -np.asarray(result.return_result).reshape(-1, 3) * (Hartree / Bohr)

    return Sequential()


def _mbe_mpi_calculator(per_step: bool, session=None):
    """mbe_mpi's calculator on ``session``, or (``per_step``) on a new ``mbe_mpi.compute`` for every step."""
    import mbe_mpi
    from mbe_mpi.ase import ManyBodyCalculator

    class OneShot:  # what a session does, with workers started and ended for every call
        def compute(self, data):
            return mbe_mpi.compute(data, n_workers=2, checkpoint=False)

    class Timed(ManyBodyCalculator):
        qc_time = 0.0

        @property
        def session(self):
            return OneShot() if per_step else super().session

        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            self.qc_time += self.last_result.extras["mbe_mpi"]["task_time"]

    return Timed(TEMPLATE, session=session)


def run_variant(name: str, steps: int, fmax: float) -> dict:
    """One optimisation in this process; the record printed as JSON by ``--run``."""
    from ase.optimize import BFGS

    import mbe_mpi

    energies: list[float] = []
    atoms = _atoms()
    session = mbe_mpi.Session(n_workers=2, checkpoint=False) if name == "session" else None
    calc = _sequential_calculator() if name == "sequential" else _mbe_mpi_calculator(name == "compute", session)
    try:
        atoms.calc = calc
        optimiser = BFGS(atoms, logfile=None)
        optimiser.attach(lambda: energies.append(atoms.get_potential_energy()))
        converged = optimiser.run(fmax=fmax, steps=steps)
    finally:
        if session is not None:
            session.close()
    wall = time.perf_counter() - STARTED
    workers = 1 if name == "sequential" else 2
    return {"variant": name, "steps": len(energies), "converged": bool(converged), "wall": wall,
            "qc_time": calc.qc_time, "overhead_per_step": (wall - calc.qc_time / workers) / max(1, len(energies)),
            "energies": energies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--run", choices=VARIANTS, help="run one variant in this process (internal)")
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_variant(args.run, args.steps, args.fmax)))
        return
    records: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        order = VARIANTS if repeat % 2 == 0 else tuple(reversed(VARIANTS))
        for name in order:
            proc = subprocess.run([sys.executable, __file__, "--run", name, "--steps", str(args.steps),
                                   "--fmax", str(args.fmax)], capture_output=True, text=True, cwd=REPO,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                sys.exit(f"{name} failed:\n{proc.stderr}")
            records[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"{name}: {records[name][-1]['wall']:.1f} s, {records[name][-1]['steps']} steps", flush=True)
    _table(records)


def _table(records: dict[str, list[dict]]) -> None:
    reference = records["sequential"][0]["energies"]
    base = statistics.median(r["wall"] for r in records["sequential"])
    print("\n| variant | steps | wall (s) | speedup | QC time (s) | overhead per step (s) | max abs dE vs sequential (eV) |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, runs in records.items():
        wall = statistics.median(r["wall"] for r in runs)
        spread = f" ({min(r['wall'] for r in runs):.1f}-{max(r['wall'] for r in runs):.1f})" if len(runs) > 1 else ""
        same = max(max(abs(a - b) for a, b in zip(r["energies"], reference, strict=True)) if
                   len(r["energies"]) == len(reference) else float("inf") for r in runs)
        print(f"| {name} | {runs[0]['steps']} | {wall:.1f}{spread} | {base / wall:.2f} | "
              f"{statistics.median(r['qc_time'] for r in runs):.1f} | "
              f"{statistics.median(r['overhead_per_step'] for r in runs):.3f} | {same:.1e} |")


if __name__ == "__main__":
    main()
