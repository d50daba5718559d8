"""Test-only fault injection: the disk under the checkpoint, the cache or the output fills up mid-run.

Loaded like any plugin (``--plugin disk_full`` with this folder on PYTHONPATH; rank 0 imports plugins
before the run, and rank 0 alone writes these files), it does something only when
``MBE_MPI_TEST_DISK_FULL=WHAT:AFTER`` is set: WHAT is ``checkpoint`` or ``cache`` (the result store
fails every write after its AFTER-th, as SQLite does on a full disk) or ``output`` (writing the
result file fails with ENOSPC). Production code knows nothing of it.
"""

from __future__ import annotations

import errno
import os

from mbe_mpi import checkpoint, files

_setting = os.environ.get("MBE_MPI_TEST_DISK_FULL")
if _setting and not getattr(checkpoint.ResultStore, "_fault_injected", False):
    _what, _after = _setting.split(":")
    _writes = [0]

    if _what == "output":
        def _write_fails(path, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        files.write_atomically = _write_fails
    else:
        _put = checkpoint.ResultStore.put

        def _put_until_full(self, key, label, message):
            if self.what == _what:
                _writes[0] += 1
                if _writes[0] > int(_after):
                    raise checkpoint.StoreError("database or disk is full")
            _put(self, key, label, message)

        checkpoint.ResultStore.put = _put_until_full
    checkpoint.ResultStore._fault_injected = True
