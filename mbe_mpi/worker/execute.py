"""Run one QC task through QCEngine, on a worker. Failures come back as data (a TaskError).

The worker context is built once per expansion (a JOB message) from the full ManyBodyInput:
QCManyBody's computer (for ``ManyBodyCore`` and the atomic specifications) and the QCEngine
TaskConfig -- never per task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import os
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydantic
import qcengine
from qcelemental.exceptions import ValidationError as QCElementalValidationError
from qcengine.exceptions import QCEngineException
from qcengine.util import environ_context, handle_output_metadata
from qcmanybody import ManyBodyCore
from qcmanybody.models.v2 import ManyBodyInput

from ..fragments import FragmentBuilder, build_atomic_input
from ..harnesses import import_plugins
from ..plan import atomic_specifications, keeps_cluster_results, make_computer, model_chemistries, task_label
from ..protocol import JobMessage, ResultMessage, TaskError, TaskSpec
from . import provenance
from .init import WorkerInit


def prepare_qc_process(init: WorkerInit) -> None:
    """Get a process ready to run QC tasks: the user's plugins imported."""
    import_plugins(init.plugins)


def _this_node(task_config: dict[str, Any]) -> Any:
    """QCEngine's description of this node: a site's (``qcengine.yaml``) if one matches, else the default.

    QCEngine would find the same, but by describing the whole node first (``cpuinfo``, ~1 s per
    process); with the cores and memory known from our TaskConfig that is not needed.
    """
    hostname = socket.gethostname()
    for node in qcengine.config.NODE_DESCRIPTORS.values():
        if fnmatch.fnmatch(hostname, node.hostname_pattern):
            return node
    return qcengine.config.NodeDescriptor(name="default", hostname_pattern="*", memory=task_config["memory"],
                                          ncores=task_config["ncores"])


def _task_config(threads: int, memory_gib: float) -> dict[str, Any]:
    # retries=0: QCEngine's own retries are for "random errors"; retrying is the scheduler's job.
    return {"ncores": threads, "memory": memory_gib, "retries": 0}


@dataclasses.dataclass(frozen=True)
class ProgramError:
    """A QC program's failure, as QCEngine would have put it in a FailedOperation."""

    kind: str
    message: str


class Programs:
    """The QC programs' harnesses, called as ``qcengine.compute`` calls them, with one TaskConfig per worker.

    ``qcengine.compute`` rebuilds the TaskConfig (a pydantic-settings model that re-reads the
    environment: ~1.2 ms) and looks the program up again on every call; here both happen once. What
    QCEngine does around the call is kept: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to ``ncores``
    while the program runs, its exceptions turned into a failure (kind = QCEngine's ``error_type``,
    the message as QCEngine words it), and -- for the full AtomicResults kept with ``cluster_results:
    all`` -- its provenance (wall time, host). QCEngine's own retries are off: retrying is the
    scheduler's job.
    """

    def __init__(self, task_config: dict[str, Any]):
        self.config = qcengine.config.get_config(hostname=_this_node(task_config), task_config=task_config)
        self._harnesses: dict[str, Any] = {}

    def harness(self, program: str) -> Any:
        harness = self._harnesses.get(program)
        if harness is None:
            harness = self._harnesses[program] = qcengine.get_program(program)
        return harness

    def compute(self, atomic_input: Any, program: str, scratch: str) -> Any:
        """The program's AtomicResult, or a :class:`ProgramError`."""
        config = self.config.model_copy(update={"scratch_directory": scratch})
        harness = self.harness(program)
        try:
            with environ_context(config=config):
                result = harness.compute(atomic_input, config)
        except QCEngineException as exc:
            return ProgramError(exc.error_type, exc.error_message)
        except Exception:
            return ProgramError("unknown_error", "QCEngine Execution Error:\n" + traceback.format_exc())
        if not result.success:  # a harness may return a FailedOperation itself
            return ProgramError(result.error.error_type, result.error.error_message or "")
        return result

    def full_result(self, result: Any, started: float) -> Any:
        """The AtomicResult with the provenance and output fields ``qcengine.compute`` would have added."""
        metadata = {"stdout": None, "stderr": None, "success": True, "retries": 0, "error_extras": None,
                    "wall_time": time.perf_counter() - started}
        provenance.ensure()  # the node facts QCEngine adds: found once per node and boot (see provenance)
        return handle_output_metadata(result, metadata, raise_error=False, return_dict=False)


@dataclasses.dataclass
class WorkerContext:
    """What a worker needs to turn a TaskSpec into a result: built once per expansion."""

    core: ManyBodyCore
    model_chemistries: tuple[str, ...]
    specifications: dict[str, dict[str, Any]]
    task_config: dict[str, Any]
    keep_atomic_results: bool
    rank: int
    scratch_dir: str | None = None
    keep_scratch: bool = False
    _scratch: str | None = dataclasses.field(default=None, repr=False)
    fragments: FragmentBuilder = dataclasses.field(init=False, repr=False)
    programs: Programs = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.fragments = FragmentBuilder(self.core)
        self.programs = Programs(self.task_config)

    @classmethod
    def build(cls, mbi: ManyBodyInput, *, rank: int, threads: int, memory_gib: float,
              scratch_dir: str | None = None, keep_scratch: bool = False) -> WorkerContext:
        computer = make_computer(mbi)
        core = computer.qcmb_core
        keep = keeps_cluster_results(mbi)
        task_config = _task_config(threads, memory_gib)
        if scratch_dir:
            scratch_dir = os.path.expanduser(os.path.expandvars(scratch_dir))
            os.makedirs(scratch_dir, exist_ok=True)
        return cls(core, model_chemistries(core), atomic_specifications(computer), task_config, keep, rank,
                   scratch_dir, keep_scratch)

    @classmethod
    def for_job(cls, job: JobMessage, rank: int, init: WorkerInit) -> WorkerContext:
        """The context of one expansion (a JOB message), under this worker's settings."""
        return cls.build(ManyBodyInput.model_validate_json(job.input_json), rank=rank, threads=init.threads,
                         memory_gib=init.memory_gib, scratch_dir=init.scratch_dir, keep_scratch=init.keep_scratch)

    def worker_scratch(self) -> str:
        """This worker's scratch folder (made on first use; :meth:`close` removes it)."""
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix=f"mbe_mpi_r{self.rank}_", dir=self.scratch_dir)
        return self._scratch

    def close(self) -> None:
        """Remove the worker's scratch folder (the worker is done)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def label(self, task: TaskSpec) -> str:
        return task_label(self.model_chemistries, task)


@contextlib.contextmanager
def task_scratch(ctx: WorkerContext, task: TaskSpec) -> Iterator[str]:
    """A scratch folder for the task alone, as the working directory while the QC program runs.

    Programs that write files into the working directory (or QCEngine's ``scratch_directory``) then
    keep them apart from other tasks and on node-local disk. The folder is the worker's own, emptied
    after every task (creating and removing one per task costs ~0.3 ms, a tenth of a 3-ms xTB task);
    with ``keep_scratch`` every task gets a new folder that is left in place for inspection.
    """
    if ctx.keep_scratch:
        path = tempfile.mkdtemp(prefix=f"mbe_mpi_r{ctx.rank}_t{task.task_id}_a{task.attempt}_", dir=ctx.scratch_dir)
    else:
        path = ctx.worker_scratch()
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)
        if not ctx.keep_scratch:
            _empty(path)


def _empty(path: str) -> None:
    """Remove what a task left in ``path`` (usually nothing: one scandir)."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def one_line(text: str) -> str:
    return " ".join(text.split())


def _non_finite(properties: Any) -> str | None:
    """Which of the returned energy, gradient or Hessian has a NaN or an infinity (None: all finite)."""
    for name in ("energy", "gradient", "hessian"):
        value = getattr(properties, f"return_{name}", None)
        if value is not None and not np.all(np.isfinite(np.asarray(value, dtype=float))):
            return name
    return None


def run_task(ctx: WorkerContext, task: TaskSpec) -> ResultMessage:
    """Build the fragment molecule, run the QC program, and package the outcome (never raises)."""
    start = time.perf_counter()

    def failure(kind: str, message: str, tb: str = "") -> ResultMessage:
        error = TaskError(kind, message, tb, ctx.label(task), ctx.rank, task.attempt)  # the label only when needed
        return ResultMessage(task.task_id, ctx.rank, time.perf_counter() - start, error=error)

    try:
        mc = ctx.model_chemistries[task.mc_index]
        spec = ctx.specifications[mc]
        molecule = ctx.fragments.molecule(task.real, task.basis)
        atomic_input = build_atomic_input(molecule, spec["program"], spec["specification"])
        with task_scratch(ctx, task) as scratch:
            result = ctx.programs.compute(atomic_input, spec["program"], scratch)
    except (pydantic.ValidationError, QCElementalValidationError) as exc:  # the input, not mbe_mpi, is at fault
        return failure("input", one_line(f"the fragment molecule or QC input is invalid: {exc}"), traceback.format_exc())
    except Exception as exc:
        return failure("internal", f"{type(exc).__name__}: {exc}", traceback.format_exc())
    if isinstance(result, ProgramError):
        return failure(result.kind, result.message.strip().splitlines()[-1] if result.message else "", result.message)
    props = result.properties
    broken = _non_finite(props)
    if broken:  # a program that "succeeds" with NaN must never reach the assembly (nor the checkpoint)
        return failure("nonfinite_result", f"the QC program returned a non-finite {broken} (NaN or infinity)")
    return ResultMessage(
        task.task_id,
        ctx.rank,
        time.perf_counter() - start,
        energy=props.return_energy,
        gradient=props.return_gradient,
        hessian=props.return_hessian,
        atomic_result_json=ctx.programs.full_result(result, start).model_dump_json() if ctx.keep_atomic_results
        else None,
    )
