"""The exactness cases: each a ManyBodyInput whose mbe_mpi result must equal QCManyBody's sequential one."""

from __future__ import annotations

from .conftest import cluster_molecule, manybody_input


def _pyscf(method="hf", basis="sto-3g", driver="energy", **keywords):
    spec = {"program": "pyscf", "driver": driver, "model": {"method": method, "basis": basis}}
    if keywords:
        spec["keywords"] = keywords
    return spec


def _xtb(method="gfn2-xtb", driver="energy"):
    return {"program": "tblite", "driver": driver, "model": {"method": method, "basis": None}}


def case_inputs():
    """name -> ManyBodyInput. Small: HF/STO-3G or xTB on two to four waters."""
    return {
        "energy-nocp-cp-vmfc": manybody_input(cluster_molecule(3), bsse=["nocp", "cp", "vmfc"]),
        "gradient-cp": manybody_input(cluster_molecule(3), driver="gradient", bsse=["cp"], max_nbody=2,
                                      specification=_pyscf(driver="gradient")),
        "hessian-nocp": manybody_input(cluster_molecule(2), driver="hessian", bsse=["nocp"],
                                       specification=_pyscf(driver="hessian")),
        "multilevel-cp": manybody_input(
            cluster_molecule(3), bsse=["cp"], levels={2: "mp2/sto-3g", 3: "hf/sto-3g"},
            specification={"mp2/sto-3g": _pyscf("mp2"), "hf/sto-3g": _pyscf("hf")}),
        "charged-nocp-cp": manybody_input(cluster_molecule(3, hydroxide=True), bsse=["nocp", "cp"],
                                          return_total_data=True),
        "xtb-gradient-supersystem": manybody_input(
            cluster_molecule(4), driver="gradient", bsse=["nocp"],
            levels={2: "gfn2", "supersystem": "gfn1"},
            specification={"gfn2": _xtb("gfn2-xtb", "gradient"), "gfn1": _xtb("gfn1-xtb", "gradient")}),
    }
