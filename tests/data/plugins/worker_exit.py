"""Test-only fault injection: a worker process itself ends abruptly after it has sent some results.

Loaded like any plugin (``--plugin worker_exit`` with this folder on PYTHONPATH), it does something
only while ``MBE_MPI_TEST_WORKER_EXIT=RANK:RESULTS`` is set: worker RANK exits with ``os._exit(0)``
right after sending its RESULTS-th result. Production code knows nothing of it.

The setting is read when a result is sent, not when the module is imported: the master imports
plugins too, and a test process that imported this one must not end itself in a later test that
runs ``serve`` in-process, after the variable is gone.
"""

from __future__ import annotations

import logging
import os

from mbe_mpi.protocol import ResultBatch
from mbe_mpi.worker import serve

if not getattr(serve._Serving, "_fault_injected", False):
    _send = serve._Serving.send
    _sent = [0]

    def _send_then_exit(self, message):
        _send(self, message)
        setting = os.environ.get("MBE_MPI_TEST_WORKER_EXIT")
        if not setting or not isinstance(message, ResultBatch):
            return
        rank, after = (int(part) for part in setting.split(":"))
        if self.endpoint.rank == rank:
            _sent[0] += len(message.results)
            if _sent[0] >= after:
                logging.getLogger("mbe_mpi.worker").warning("worker %d exits now (fault injection)", rank)
                os._exit(0)

    serve._Serving.send = _send_then_exit
    serve._Serving._fault_injected = True
