"""What the forkserver imports before it forks workers and QC children (see mbe_mpi.transports.processes).

Importing the package registers our QCEngine programs and brings QCEngine, QCElemental, QCManyBody
and NumPy; the worker modules are what a forked worker then runs. The QC program libraries
themselves (tblite, PySCF) are preloaded by name, for the programs a run uses.
"""

import mbe_mpi  # noqa: F401
import mbe_mpi.worker.execute  # noqa: F401
import mbe_mpi.worker.main  # noqa: F401
import mbe_mpi.worker.supervise  # noqa: F401
