"""The messages between master and workers, and their encoding -- one module, both transports.

Transports (MPI, local processes) move opaque ``bytes``; only this module knows what is inside.
Each message is a tuple ``(PROTOCOL_VERSION, kind, *fields)`` of plain Python values and NumPy
arrays, pickled with protocol 5: ints, tuples and float64 arrays encode compactly and round-trip
bit for bit, and no class of ours is pickled, so both ends only need to agree on this module's
tuple layouts. (Pickle is acceptable here because both ends are ranks of the same job; anything
written to disk uses a safe format instead.)

A TASK carries a label, not a molecule: ``(task_id, mc_index, real, basis, attempt)`` -- the
worker holds the whole input and builds the molecule itself. A TASK holds a batch of such tasks
(usually one). A RESULT carries either the numbers QCManyBody needs (energy, gradient, Hessian,
optionally the full AtomicResult as JSON) or a structured error -- failure is data that travels.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

#: Bumped whenever a message layout changes; both ends must run the same version (see docs/protocol.md).
PROTOCOL_VERSION = 4


class ProtocolError(RuntimeError):
    """A message that this version of mbe_mpi cannot read (version skew or corruption)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task as it travels: a QCManyBody label in index form, plus the attempt number."""

    task_id: int
    mc_index: int
    real: tuple[int, ...]
    basis: tuple[int, ...]
    attempt: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class TaskMessage:
    tasks: tuple[TaskSpec, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TaskError:
    """Why a task failed, with enough context to act on it without the worker's log."""

    kind: str  # e.g. "qcengine" (program failure), "internal" (bug in mbe_mpi), "input"
    message: str
    traceback: str
    label: str
    rank: int
    attempt: int


@dataclasses.dataclass(frozen=True, slots=True)
class ResultMessage:
    """The outcome of one task. Exactly one of (``error``) or the numeric fields is meaningful."""

    task_id: int
    rank: int
    wall_time: float
    energy: float | None = None
    gradient: np.ndarray | None = None
    hessian: np.ndarray | None = None
    atomic_result_json: str | None = None
    error: TaskError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def properties(self) -> dict[str, Any]:
        """What QCManyBody's ``analyze`` takes for this label (only properties that were returned)."""
        props: dict[str, Any] = {}
        for name in ("energy", "gradient", "hessian"):
            value = getattr(self, name)
            if value is not None:
                props[name] = value
        return props


@dataclasses.dataclass(frozen=True, slots=True)
class ShutdownMessage:
    """Master -> worker: no more work; answer with GOODBYE and end."""


@dataclasses.dataclass(frozen=True, slots=True)
class JobMessage:
    """Master -> worker, before the tasks of an expansion: the ManyBodyInput they belong to.

    Workers start before (and independently of) any input, and build what a task needs -- QCManyBody's
    core, the QCEngine specifications -- from this once per expansion. ``model_chemistries`` are
    QCManyBody's labels in ``mc_index`` order, so failures can be named before that is built.
    """

    job_id: int
    input_json: str
    model_chemistries: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ReadyMessage:
    """A worker has started (its input and QC program are set up) and can take tasks."""

    rank: int


@dataclasses.dataclass(frozen=True, slots=True)
class ResultBatch:
    """Worker -> master: results (several when tasks are tiny) of the expansion ``job_id``.

    The job number lets a master that serves several expansions over one pool of workers drop a
    late result of an earlier one (a task abandoned when that expansion was stopped or interrupted).
    """

    results: tuple[ResultMessage, ...]
    job_id: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class StealMessage:
    """Master -> worker: give back up to ``count`` tasks you hold but have not started."""

    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class StolenMessage:
    """Worker -> master: these tasks were removed from my queue and will never run here."""

    rank: int
    task_ids: tuple[int, ...]
    job_id: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class HeartbeatMessage:
    """Worker -> master, when it has sent nothing else for a while: still alive."""

    rank: int


@dataclasses.dataclass(frozen=True, slots=True)
class GoodbyeMessage:
    """Worker -> master, in answer to SHUTDOWN: the last message this worker sends.

    Messages from one sender arrive in order, so once the master has every worker's GOODBYE
    nothing is left in flight. Under MPI that matters: MPICH's MPI_Finalize fails on a message
    that was never received (a heartbeat or a READY sent just before SHUTDOWN arrived), and the
    launcher then kills the whole job although every result is written.
    """

    rank: int


Message = (TaskMessage | ResultMessage | ShutdownMessage | ReadyMessage | ResultBatch | StealMessage | StolenMessage
           | HeartbeatMessage | GoodbyeMessage | JobMessage)


def _result_fields(message: ResultMessage) -> tuple:
    error = None if message.error is None else dataclasses.astuple(message.error)
    return (message.task_id, message.rank, message.wall_time, message.energy, message.gradient, message.hessian,
            message.atomic_result_json, error)


def _result(fields: tuple) -> ResultMessage:
    task_id, rank, wall_time, energy, gradient, hessian, atomic_json, error = fields
    return ResultMessage(task_id, rank, wall_time, energy, gradient, hessian, atomic_json,
                         None if error is None else TaskError(*error))


def _plain(cls: type) -> tuple[Callable[[Any], tuple], Callable[[tuple], Any]]:
    """Pack and unpack a message whose fields are plain values (ints, strings, tuples of them)."""
    names = [field.name for field in dataclasses.fields(cls)]
    return (lambda message: tuple(getattr(message, name) for name in names)), (lambda fields: cls(*fields))


#: message class -> (kind number on the wire, pack to a tuple of plain values, unpack from it)
_CODEC: dict[type, tuple[int, Callable[[Any], tuple], Callable[[tuple], Any]]] = {
    TaskMessage: (1, lambda m: (tuple((t.task_id, t.mc_index, t.real, t.basis, t.attempt) for t in m.tasks),),
                  lambda f: TaskMessage(tuple(TaskSpec(*t) for t in f[0]))),
    ResultMessage: (2, _result_fields, _result),
    ShutdownMessage: (3, *_plain(ShutdownMessage)),
    ReadyMessage: (4, *_plain(ReadyMessage)),
    ResultBatch: (5, lambda m: (tuple(_result_fields(r) for r in m.results), m.job_id),
                  lambda f: ResultBatch(tuple(_result(r) for r in f[0]), f[1])),
    StealMessage: (6, *_plain(StealMessage)),
    StolenMessage: (7, *_plain(StolenMessage)),
    HeartbeatMessage: (8, *_plain(HeartbeatMessage)),
    GoodbyeMessage: (9, *_plain(GoodbyeMessage)),
    JobMessage: (10, *_plain(JobMessage)),
}
_DECODE = {kind: unpack for kind, _, unpack in _CODEC.values()}


def encode(message: Message) -> bytes:
    try:
        kind, pack, _ = _CODEC[type(message)]
    except KeyError:
        raise TypeError(f"not a protocol message: {message!r}") from None
    return pickle.dumps((PROTOCOL_VERSION, kind, *pack(message)), protocol=5)


def decode(data: bytes | bytearray | memoryview) -> Message:
    try:
        version, kind, *fields = pickle.loads(data)
    except Exception as exc:
        raise ProtocolError(f"unreadable message ({len(data)} bytes): {exc}") from exc
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version} received, this is version {PROTOCOL_VERSION}")
    unpack = _DECODE.get(kind)
    if unpack is None:
        raise ProtocolError(f"unknown message kind {kind!r}")
    return unpack(tuple(fields))
