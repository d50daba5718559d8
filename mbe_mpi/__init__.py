"""mbe_mpi: many-body expansion (MBE) calculations in parallel over MPI or local processes.

Results equal QCManyBody's sequential ``ManyBodyComputer`` (same QCEngine calls, same assembly
through ``ManyBodyCore.analyze``); only the running of the fragment QC tasks is parallel.

Importing the package registers the QCEngine programs ``pyscf`` and ``tblite``, and ``synthetic``
(a stand-in with a known cost and a smooth energy, for benchmarks and fault tests; not chemistry).
"""

from __future__ import annotations

from .harnesses import register_all as _register_all
from .version import __version__

_register_all()

from .api import compute  # noqa: E402

__all__ = ["compute", "__version__"]
