"""What the forkserver imports before it forks workers and QC children (see mbe_mpi.transports.processes).

Importing the package registers our QCEngine programs and brings QCEngine, QCElemental, QCManyBody
and NumPy; the worker modules are what a forked worker then runs. The QC program libraries
themselves (tblite, PySCF) are preloaded by name, for the programs a run uses.

The forkserver ignores the stop signals, as everything forked from it does (workers and QC
children: stopping is the master's decision). A batch system's SIGTERM goes to the whole process
group; a forkserver ended by it would make every process it started look crashed to its parent
(multiprocessing reports exit code 255 when the server that forked a process is gone).
"""

import signal

for _signal in (signal.SIGTERM, signal.SIGUSR1):
    signal.signal(_signal, signal.SIG_IGN)

import mbe_mpi  # noqa: E402, F401
import mbe_mpi.worker.execute  # noqa: E402, F401
import mbe_mpi.worker.main  # noqa: E402, F401
import mbe_mpi.worker.supervise  # noqa: E402, F401
