"""A short velocity-Verlet MD of a water trimer on GFN2-xTB many-body forces (2-body nocp), 2 workers.

Run from anywhere:  python examples/ase_md_water3.py [--steps N]

The calculator starts its own session on first use and ends it at calc.close().
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet
from numpy.random import default_rng

try:
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # ASE before 3.29
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

from mbe_mpi.ase import ManyBodyCalculator

TEMPLATE = {
    "molecule": {"atoms_per_fragment": 3},
    "model": {"program": "tblite", "method": "gfn2-xtb"},
    "bsse": "nocp",
    "max_nbody": 2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="MD steps of 0.5 fs (default 20)")
    args = parser.parse_args()

    atoms = read(Path(__file__).with_name("water3.xyz"))
    thermalize_momenta(atoms, temperature_K=300, rng=default_rng(7))
    atoms.calc = ManyBodyCalculator(TEMPLATE, n_workers=2)
    try:
        dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)

        def report() -> None:
            kinetic, potential = atoms.get_kinetic_energy(), atoms.get_potential_energy()
            print(f"step {dynamics.nsteps:3d}  E_pot {potential:.6f} eV  E_kin {kinetic:.6f} eV  "
                  f"E_tot {potential + kinetic:.6f} eV")

        dynamics.attach(report, interval=5)
        dynamics.run(args.steps)
    finally:
        atoms.calc.close()


if __name__ == "__main__":
    main()
