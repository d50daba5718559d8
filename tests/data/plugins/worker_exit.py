"""Test-only fault injection: a worker process itself ends abruptly after it has sent some results.

Loaded like any plugin (``--plugin worker_exit`` with this folder on PYTHONPATH), it does something
only when ``MBE_MPI_TEST_WORKER_EXIT=RANK:RESULTS`` is set: worker RANK exits with ``os._exit(0)``
right after sending its RESULTS-th result. Production code knows nothing of it.
"""

from __future__ import annotations

import logging
import os

from mbe_mpi.protocol import ResultBatch
from mbe_mpi.worker import serve

_setting = os.environ.get("MBE_MPI_TEST_WORKER_EXIT")
if _setting and not getattr(serve._Serving, "_fault_injected", False):
    _rank, _after = (int(part) for part in _setting.split(":"))
    _send = serve._Serving.send
    _sent = [0]

    def _send_then_exit(self, message):
        _send(self, message)
        if self.endpoint.rank == _rank and isinstance(message, ResultBatch):
            _sent[0] += len(message.results)
            if _sent[0] >= _after:
                logging.getLogger("mbe_mpi.worker").warning("worker %d exits now (fault injection)", _rank)
                os._exit(0)

    serve._Serving.send = _send_then_exit
    serve._Serving._fault_injected = True
