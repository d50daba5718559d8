"""BFGS optimisation of a water hexamer with GFN2-xTB 3-body (nocp) many-body gradients, on 2 workers.

Run from anywhere:  python examples/ase_optimize_water6.py [--steps N] [--workers K]

The hexamer is water 3 of ../tests/data/water32.xyz and its five nearest neighbours (examples/water6.xyz).
One mbe_mpi.Session serves every gradient of the optimisation, so the workers start once. Under
mpiexec (mpiexec -n 3 python examples/ase_optimize_water6.py) rank 0 optimises and the other ranks
serve as workers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ase.io import read
from ase.optimize import BFGS

import mbe_mpi
from mbe_mpi.ase import ManyBodyCalculator

TEMPLATE = {
    "molecule": {"atoms_per_fragment": 3},
    "model": {"program": "tblite", "method": "gfn2-xtb"},
    "bsse": "nocp",
    "max_nbody": 3,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="at most this many BFGS steps (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--fmax", type=float, default=0.05, help="converged below this force, eV/A (default 0.05)")
    args = parser.parse_args()

    atoms = read(Path(__file__).with_name("water6.xyz"))
    with mbe_mpi.Session(n_workers=args.workers) as session:
        if session is None:  # a worker rank under mpiexec: it served until rank 0 was done
            return
        atoms.calc = ManyBodyCalculator(TEMPLATE, session=session)
        converged = BFGS(atoms).run(fmax=args.fmax, steps=args.steps)
        print(f"{'converged' if converged else 'not converged'}: E = {atoms.get_potential_energy():.6f} eV "
              f"(3-body nocp GFN2-xTB), max force {abs(atoms.get_forces()).max():.4f} eV/A")


if __name__ == "__main__":  # the local workers are started with spawn: the guard is required
    main()
