"""mbe_mpi: many-body expansion (MBE) calculations in parallel over MPI or local processes.

Results equal QCManyBody's sequential ``ManyBodyComputer`` (same QCEngine calls, same assembly
through ``ManyBodyCore.analyze``); only the running of the fragment QC tasks is parallel.

Importing the package registers the QCEngine programs ``pyscf`` and ``tblite``, and ``synthetic``
(a stand-in with a known cost and a smooth energy, for benchmarks and fault tests; not chemistry),
and the QCEngine procedure ``mbe_mpi`` (``qcengine.compute(manybody_input, "mbe_mpi")``).
"""

from __future__ import annotations

from .signals import install_early as _install_early

_install_early()  # `python -m mbe_mpi`: stop signals count from here on, before a second of imports

from .harnesses import register_all as _register_all  # noqa: E402
from .version import __version__  # noqa: E402

_register_all()

from .api import ManyBodyComputer, compute  # noqa: E402
from .procedure import register as _register_procedure  # noqa: E402
from .session import Session  # noqa: E402

_register_procedure()

__all__ = ["ManyBodyComputer", "Session", "compute", "__version__"]
