"""Test-only fault injection: a worker rank that hangs while it starts, after MPI is up, before READY.

Loaded like any plugin (``--plugin slow_start`` with this folder on PYTHONPATH); it does something only
when ``MBE_MPI_TEST_SLOW_START=RANK`` is set and this process is MPI rank RANK's worker (not rank 0,
which imports plugins to check the input): importing it then blocks for good, as a rank stuck on a
slow file system or stopped by a debugger would. Production code knows nothing of it.
"""

from __future__ import annotations

import os
import time

if os.environ.get("PMI_RANK") == os.environ.get("MBE_MPI_TEST_SLOW_START") != "0":
    while True:
        time.sleep(3600)
