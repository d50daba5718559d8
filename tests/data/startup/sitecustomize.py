"""Test-only fault injection: MPI rank N stops itself (SIGSTOP) just before MPI starts in it.

Python imports ``sitecustomize`` at start-up from PYTHONPATH; with this folder there and
``MBE_MPI_TEST_STOP_BEFORE_MPI=N`` set, rank N is stopped when ``mpi4py.MPI`` (whose import runs
``MPI_Init``) is about to be imported -- a rank that hangs before MPI is up, while the others wait
inside ``MPI_Init``. Production code knows nothing of it.
"""

import os
import signal
import sys

if os.environ.get("MBE_MPI_TEST_STOP_BEFORE_MPI") not in (None, "") and \
        os.environ.get("PMI_RANK") == os.environ["MBE_MPI_TEST_STOP_BEFORE_MPI"]:

    class _StopBeforeMPI:
        def find_spec(self, name, path=None, target=None):
            if name == "mpi4py.MPI":
                os.kill(os.getpid(), signal.SIGSTOP)
            return None

    sys.meta_path.insert(0, _StopBeforeMPI())
