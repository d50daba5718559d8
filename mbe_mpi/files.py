"""Files a run writes: checked up front, written atomically, and the checkpoint locked for the run's life.

A run that computed for hours must not lose its work to the last step. So the output's place is
checked before any QC work (a directory, a missing folder or a read-only disk is a user mistake:
exit 2 at once), and the output is written to a temporary file in the same folder and renamed over
the final name, so a full disk leaves either the old file or the new one, never half of one.

Two runs with the same checkpoint at once would resume from each other's half-written state and
delete it under each other's feet, so a run holds an exclusive lock (``flock`` on ``CHECKPOINT.lock``)
for as long as it uses the checkpoint, and a second run is refused at once, naming the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path

from .errors import InputError


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Refuse, before any work, a place where a file cannot be written; the path, expanded."""
    path = Path(os.path.expanduser(os.path.expandvars(os.fspath(path))))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InputError(f"{what} {path} cannot be used ({exc.strerror}); choose another place") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise InputError(f"{what} {path} is a directory; give a file name, e.g. {path / 'result.json'}")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what} {path} exists and is not a regular file; give the name of a file to write")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"{what} {path}: the folder {folder} does not exist; create it or choose another place")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{what} {path} cannot be written: no file can be created in {folder} "
                         f"({exc.strerror}); choose another place") from None
    return path


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename (OSError on failure)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())  # the rename must not become visible before the data
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class RunLock:
    """An exclusive ``flock`` on ``TARGET.lock``, held from :meth:`acquire` to :meth:`release`.

    The lock file is removed on release. A run that opened it just before that would then hold a
    lock on a file no longer in the folder, so after locking, the file is checked to still be the
    one at that path (else it is opened again).
    """

    def __init__(self, target: str | os.PathLike, what: str = "checkpoint"):
        self.target = Path(target)
        self.path = self.target.with_name(self.target.name + ".lock")
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        while self._fd is None:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise InputError(
                    f"another run is using the {self.what} {self.target} (it holds the lock {self.path}); "
                    "wait until it ends, or give this run another output (-o) or --checkpoint") from None
            except OSError as exc:  # a file system without locks: say so rather than run unprotected
                os.close(fd)
                raise InputError(f"cannot lock {self.path} ({exc.strerror}); put the {self.what} on a file "
                                 "system that supports locks (--checkpoint FILE)") from None
            if self._same_file(fd):
                self._fd = fd
            else:
                os.close(fd)  # the holder removed it between our open and our lock: try the new one
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise InputError(f"{self.what} {self.target} cannot be used: its lock {self.path} cannot be "
                             f"created ({exc.strerror}); choose another place") from None

    def _same_file(self, fd: int) -> bool:
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # while still locked: whoever opens it next makes a new one
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
