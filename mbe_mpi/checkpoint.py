"""Completed QC results on disk: the run's checkpoint journal and the shared result cache.

Both are a :class:`ResultStore`: an SQLite file of results keyed by the task's content hash
(:mod:`mbe_mpi.hashing`). The checkpoint lives beside the output and also records which input it
belongs to, so a rerun of the same command resumes and a different input is refused; the cache
(``execution.cache_dir``) is shared by any runs that need the same QC tasks.

Why SQLite (standard library) rather than JSON lines:

* crash safety comes for free: each result is committed as one transaction in write-ahead-log
  mode, so after ``kill -9`` of the whole job at any moment the file opens and holds exactly the
  committed results; SQLite checksums WAL frames and ignores a torn, half-written tail;
* lookups by hash are indexed, which matters for a cache shared by runs of 10^5 tasks;
* numbers are stored as IEEE doubles and raw little-endian float64 bytes with their shape, which
  round-trip bit for bit and are safe to load (nothing is unpickled).

``synchronous=NORMAL`` makes a commit cost microseconds, not an fsync: it is durable against the
process being killed, which is the failure that matters here; only a power loss or kernel crash
could lose the last commits, and those tasks are then simply computed again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import RunLock
from .hashing import TaskHasher, input_hash
from .plan import Plan, Task, keeps_cluster_results
from .protocol import ResultMessage

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_FROM_STORE_RANK = -1  # results read back from disk were not computed by any rank of this run

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    hash TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    energy REAL,
    gradient BLOB, gradient_shape TEXT,
    hessian BLOB, hessian_shape TEXT,
    atomic_result TEXT,
    wall_time REAL NOT NULL,
    created REAL NOT NULL
);
"""


def _array_to_blob(array: np.ndarray | None) -> tuple[bytes | None, str | None]:
    if array is None:
        return None, None
    array = np.asarray(array)
    return np.ascontiguousarray(array, dtype="<f8").tobytes(), json.dumps(list(array.shape))


def _blob_to_array(blob: bytes | None, shape: str | None) -> np.ndarray | None:
    if blob is None:
        return None
    return np.frombuffer(blob, dtype="<f8").reshape(json.loads(shape)).astype(np.float64)


class StoreError(Exception):
    """A result store could not be read or written; the message is SQLite's or the system's reason."""


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _damaged(reason: str) -> bool:
    return "malformed" in reason or "not a database" in reason


class ResultStore:
    """QC results keyed by content hash, in one SQLite file; used by the master only.

    Every failure of SQLite or the file system surfaces as :class:`StoreError` (reading or writing
    results) or, when the file cannot be opened at all, as a one-line :class:`InputError`.
    """

    def __init__(self, path: str | os.PathLike, *, what: str = "checkpoint"):
        self.path = Path(path)
        self.what = what
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")  # a cache may be shared by concurrent runs
            self._db.executescript(_SCHEMA)
            version = self._meta("schema_version")
            if version is None:
                self._set_meta("schema_version", str(SCHEMA_VERSION))
        except (sqlite3.Error, OSError) as exc:
            raise self.unusable(_reason(exc)) from None
        if version is not None and version != str(SCHEMA_VERSION):
            raise InputError(f"{what} {self.path} was written by another mbe_mpi version (schema {version}); "
                             "remove it or use --fresh")

    def unusable(self, reason: str) -> InputError:
        """The one line that says why this file cannot be used, and what to do."""
        if _damaged(reason):
            return InputError(f"{self.what} {self.path} cannot be used: it is damaged or not an mbe_mpi {self.what} "
                              f"({reason}); "
                              "move it away, or start afresh with --fresh (its results are then computed again)")
        return InputError(f"{self.what} {self.path} cannot be used ({reason}); free space or fix its folder's "
                          "permissions, or choose another place")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def claim(self, input_hash: str) -> None:
        """Bind a checkpoint to one input; refuse one that belongs to another input."""
        try:
            owner = self._meta("input_hash")
            if owner is None:
                self._set_meta("input_hash", input_hash)
        except sqlite3.Error as exc:
            raise self.unusable(_reason(exc)) from None
        if owner is not None and owner != input_hash:
            raise InputError(
                f"checkpoint {self.path} belongs to a different input; rerun with --fresh to discard it, "
                "or set execution.checkpoint to another file"
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def get_many(self, hashes: Iterable[str], *, need_atomic_result: bool = False) -> dict[str, ResultMessage]:
        """The stored results among ``hashes`` (keyed by hash; task_id is left 0 for the caller to set)."""
        try:
            return self._get_many(list(dict.fromkeys(hashes)), need_atomic_result)
        except (sqlite3.Error, ValueError, TypeError) as exc:  # numpy/json meet damaged bytes as Value/TypeError
            raise StoreError(_reason(exc)) from None

    def _get_many(self, wanted: list[str], need_atomic_result: bool) -> dict[str, ResultMessage]:
        found: dict[str, ResultMessage] = {}
        for start in range(0, len(wanted), 500):  # SQLite limits the number of bound parameters
            chunk = wanted[start : start + 500]
            rows = self._db.execute(
                "SELECT hash, energy, gradient, gradient_shape, hessian, hessian_shape, atomic_result, wall_time "
                f"FROM results WHERE hash IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for key, energy, grad, grad_shape, hess, hess_shape, atomic, wall in rows:
                if need_atomic_result and atomic is None:
                    continue  # stored without the full AtomicResult this run must keep
                found[key] = ResultMessage(
                    0, _FROM_STORE_RANK, wall, energy=energy, gradient=_blob_to_array(grad, grad_shape),
                    hessian=_blob_to_array(hess, hess_shape), atomic_result_json=atomic,
                )
        return found

    def put(self, key: str, label: str, message: ResultMessage) -> None:
        """Record one successful result, committed at once (crash-safe)."""
        grad, grad_shape = _array_to_blob(message.gradient)
        hess, hess_shape = _array_to_blob(message.hessian)
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, label, message.energy, grad, grad_shape, hess, hess_shape, message.atomic_result_json,
                 message.wall_time, time.time()),
            )
        except (sqlite3.Error, OSError) as exc:  # "database or disk is full", "disk I/O error", ...
            raise StoreError(_reason(exc)) from None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def remove(self) -> None:
        """Close and delete the file (and its WAL/shared-memory companions)."""
        self.close()
        remove_store(self.path)


def remove_store(path: str | os.PathLike) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


class Journal:
    """The master's record of one run: what can be reused, and every result as it arrives.

    Results go to the checkpoint (bound to this input, locked for the run's life; removed once the
    run has completed and its output is written) and to the shared cache, if either is configured.

    A full or failing disk must not end the run with a traceback, nor lose what is computed: a
    failed checkpoint write is kept as :attr:`failure` (the master then stops dispatching), the
    results that could not be saved stay in memory and are written again at the end where that
    works (:meth:`save_unsaved`). The cache is only an optimisation: when it fails, a warning says
    so once and the run carries on without it.
    """

    def __init__(self, plan: Plan, input_json: str, *, checkpoint: str | None, cache_dir: str | None,
                 fresh: bool = False):
        self.plan = plan
        self.checkpoint: ResultStore | None = None
        self.cache: ResultStore | None = None
        self.lock: RunLock | None = None
        self.hasher = TaskHasher(plan) if (checkpoint or cache_dir) else None
        self.hashes: list[str] = []  # every task's hash, by index, once something on disk may be reused
        self.from_checkpoint = 0
        self.from_cache = 0
        self.failure: str | None = None  # why the checkpoint could not be written
        self.unsaved: list[tuple[str, str, ResultMessage]] = []
        self.sources: dict[int, str] = {}  # task index -> "checkpoint" or "cache", for what reusable() found
        checkpoint = os.path.expanduser(os.path.expandvars(checkpoint)) if checkpoint else None
        cache_dir = os.path.expanduser(os.path.expandvars(cache_dir)) if cache_dir else None
        if checkpoint:
            self._open_checkpoint(checkpoint, input_json, fresh)
        if cache_dir:
            try:
                self.cache = ResultStore(Path(cache_dir) / "results.sqlite", what="cache")
            except InputError as exc:
                logger.warning("%s; running without the cache", exc)

    def _open_checkpoint(self, path: str, input_json: str, fresh: bool) -> None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"checkpoint {path} cannot be created: its folder cannot be made ({exc.strerror}); "
                             "choose another place") from None
        self.lock = RunLock(path).acquire()  # before --fresh: never delete another run's checkpoint
        try:
            if fresh:
                try:
                    remove_store(path)
                except OSError as exc:
                    raise InputError(f"--fresh: the checkpoint {path} cannot be removed ({exc.strerror}); "
                                     "remove it by hand or choose another place") from None
            self.checkpoint = ResultStore(path, what="checkpoint")
            self.checkpoint.claim(input_hash(input_json))
        except BaseException:
            self.lock.release()
            raise

    def beside(self, plan: Plan) -> Journal:
        """A journal of another expansion of the same run (a prescreen's), in the same checkpoint and cache.

        It shares this journal's open stores and is not closed itself: this one closes (or, once
        the run has completed, removes) them.
        """
        other = Journal.__new__(Journal)
        other.plan = plan
        other.checkpoint = self.checkpoint
        other.cache = self.cache
        other.lock = None  # this journal's lock covers both
        other.hasher = TaskHasher(plan) if (self.checkpoint is not None or self.cache is not None) else None
        other.hashes = []
        other.from_checkpoint = 0
        other.from_cache = 0
        other.failure = None
        other.unsaved = []
        other.sources = {}
        return other

    def reusable(self) -> dict[int, ResultMessage]:
        """Results already on disk, by task index: checkpoint first, then cache.

        Stores that are empty (a first run) need no hash yet: hashing millions of tasks, each over
        every fragment of its basis, would delay the first dispatch by many seconds for nothing.
        """
        if not self.may_reuse():
            return {}
        self.hashes = [self.hasher(task) for task in self.plan.tasks]
        need_atomic = keeps_cluster_results(self.plan.computer.input_data)
        by_hash: dict[str, ResultMessage] = {}
        if self.checkpoint is not None:
            try:
                by_hash = self.checkpoint.get_many(self.hashes, need_atomic_result=need_atomic)
            except StoreError as exc:
                self.close(completed=False)
                raise self.checkpoint.unusable(str(exc)) from None
        from_checkpoint = set(by_hash)
        if self.cache is not None:
            missing = [h for h in self.hashes if h not in by_hash]
            try:
                by_hash.update(self.cache.get_many(missing, need_atomic_result=need_atomic))
            except StoreError as exc:
                self._drop_cache(exc)
        reused = {}
        for task in self.plan.tasks:
            message = by_hash.get(self.hashes[task.index])
            if message is not None:
                reused[task.index] = dataclasses.replace(message, task_id=task.index)
                if self.hashes[task.index] in from_checkpoint:
                    self.from_checkpoint += 1
                    self.sources[task.index] = "checkpoint"
                else:
                    self.from_cache += 1
                    self.sources[task.index] = "cache"
        return reused

    def may_reuse(self) -> bool:
        """Whether anything on disk may be reused (a store with results); False for a first run."""
        return self.hasher is not None and (self._has_results(self.checkpoint) or self._has_results(self.cache))

    @staticmethod
    def _has_results(store: ResultStore | None) -> bool:
        try:
            return store is not None and len(store) > 0
        except sqlite3.Error:
            return True  # reading it fails below, and says why

    def record(self, task: Task, message: ResultMessage) -> bool:
        """Keep a successful result (called as each arrives, before anything else); whether it is on disk."""
        if not message.ok or self.hasher is None:
            return False
        key = self.hashes[task.index] if self.hashes else self.hasher(task)
        label = self.plan.label(task)
        saved = self._save(key, label, message)
        if self.cache is not None:
            try:
                self.cache.put(key, label, message)
            except StoreError as exc:
                self._drop_cache(exc)
        return saved

    def _save(self, key: str, label: str, message: ResultMessage) -> bool:
        if self.checkpoint is None:
            return False
        if self.failure is None:
            try:
                self.checkpoint.put(key, label, message)
                return True
            except StoreError as exc:
                self.failure = f"cannot write the checkpoint {self.checkpoint.path} ({exc})"  # the master stops
        self.unsaved.append((key, label, message))
        return False

    def save_unsaved(self) -> int:
        """Try once more to write the results a failed checkpoint write left in memory; how many made it."""
        written = 0
        while self.unsaved and self.checkpoint is not None:
            key, label, message = self.unsaved[0]
            try:
                self.checkpoint.put(key, label, message)
            except StoreError:
                break
            self.unsaved.pop(0)
            written += 1
        return written

    def _drop_cache(self, exc: Exception) -> None:
        logger.warning("the result cache %s cannot be used any more (%s); carrying on without it",
                       self.cache.path, exc)
        self.cache.close()
        self.cache = None

    def close(self, *, completed: bool) -> None:
        """Close the stores and release the lock; a completed run's checkpoint is removed (its output holds all)."""
        if self.checkpoint is not None:
            if completed:
                try:
                    self.checkpoint.remove()
                except OSError as exc:  # the output is written: a checkpoint left behind only takes space
                    logger.warning("the checkpoint %s could not be removed (%s)", self.checkpoint.path, exc.strerror)
            else:
                self.checkpoint.close()
        if self.cache is not None:
            self.cache.close()
        if self.lock is not None:
            self.lock.release()
