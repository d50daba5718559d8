"""Throughput on ~19,000 zero-cost QC tasks: mbe_mpi against mpi4py.futures, multiprocessing.Pool, QCManyBody.

The task set is a real MBE label set: a VMFC 3-body expansion of 26 waters (water 3 of water32.xyz and its
25 nearest neighbours by O-O distance), 19,201 tasks, run with the ``synthetic`` QCEngine program at
``seconds: 0``, so what is measured is the per-task cost of the machinery, not of a QC program. (QCManyBody's
``cp`` uses the full-cluster basis for every task, so a cp 3-body of all 32 waters is only 5,488 tasks;
VMFC of 26 waters is the real label set in the 15k-25k range this benchmark wants.)

Every worker, whoever schedules it, does the same QCEngine work per task: build the fragment molecule and
AtomicInput for the label, then ``qcengine.compute`` with ``task_config={"ncores": 1, "memory": M, "retries":
0}``. The baselines build the molecule as QCManyBody does (``get_fragment``, fully validated, ~2-3 ms);
mbe_mpi's workers use ``FragmentBuilder`` (validation once per kind of fragment set, then copies: ~0.2 ms),
which is part of what is measured; the molecules are equal field for field. Variants (each run as its own
process):

* ``mbe-mpi``: ``mpiexec -n 3 python bench_throughput.py --run mbe_mpi`` (2 worker ranks), SPMD
  ``mbe_mpi.compute``;
* ``mbe-local``: ``python bench_throughput.py --run mbe_mpi --n-workers 2`` (local transport);
* ``futures``: ``mpiexec -n 3 python -m mpi4py.futures bench_throughput.py --run futures --chunksize C``
  (a static pool of 2 worker ranks: the portable way with MPICH), ``executor.map(..., unordered=True)``;
* ``pool``: ``python bench_throughput.py --run pool --chunksize C``, ``multiprocessing.Pool(2)`` (spawn),
  ``imap_unordered``;
* ``mbe-mpi-batch``, ``mbe-local-batch``: as ``mbe-mpi``/``mbe-local`` with the execution option
  ``batch_seconds=0.05`` (default 0.02): tasks measured below 50 ms travel several per TASK message;
* ``mbe-mpi-diag`` (diagnostic): ``mbe-mpi-batch`` plus two changes monkeypatched into every rank (nothing in
  ``mbe_mpi/`` is edited): one scratch folder per worker instead of one per task, and a polling back-off that
  starts at 100 µs instead of 1 µs; ``mbe-mpi-noscratch`` and ``mbe-mpi-minpoll`` make one of these changes
  alone, ``mbe-mpi-diag-results`` adds result batching (workers send results of tasks < 50 ms together) to
  ``mbe-mpi-diag`` (these three only with ``--only``);
* ``sequential``: QCManyBody's ``ManyBodyComputer.from_manybodyinput`` in one process (the reference);
* ``overhead``: in one process, what a task costs piece by piece (molecule, AtomicInput, ``qcengine.compute``
  and its TaskConfig, mbe_mpi's ``execute.run_task`` and its scratch folder), mbe_mpi's worker loop
  (``worker.serve``) fed without a transport, the scheduler alone, and a cProfile of ``qcengine.compute``.

Usage (from the repository root)::

    python benchmarks/bench_throughput.py                  # all variants, 3 repeats, then the tables
    python benchmarks/bench_throughput.py --repeats 1 --waters 8   # quick smoke run (~1,000 tasks)
    python benchmarks/bench_throughput.py --only mbe-mpi futures   # some variants only
    python benchmarks/bench_throughput.py --json runs.json         # also keep every run's figures
    python benchmarks/bench_throughput.py --tabulate runs.json     # the table again from saved runs

Wall times: *steady* is the task phase only (workers started and initialised; for mbe_mpi the sum of the
per-level walls of ``extras["mbe_mpi"]["timing"]``); *in-run* is from creating the pool / calling
``compute`` to the last result (includes starting workers; for mbe_mpi also planning and assembly);
*process* is the launcher's wall time for the whole command (Python and MPI start-up, imports, sanity checks).
Master CPU is ``time.process_time()`` of rank 0 / the parent process (all its threads).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # also where mpi4py.futures runs this file

from bench_chemistry import ANGSTROM_TO_BOHR, water_cluster  # noqa: E402

MEMORY_GIB = 1.0  # memory per task given to QCEngine, the same for every variant
VARIANTS = ("mbe-mpi", "mbe-local", "futures", "futures-1", "pool", "mbe-mpi-batch", "mbe-local-batch", "mbe-mpi-diag",
            "sequential", "overhead", "mbe-mpi-noscratch", "mbe-mpi-minpoll", "mbe-mpi-diag-results")
DEFAULT_VARIANTS = VARIANTS[:10]  # the others isolate the parts of mbe-mpi-diag: run them with --only
BATCH_SECONDS = 0.05  # the -batch variants' execution option batch_seconds (mbe_mpi's default: 0.02)
DIAG_MIN_POLL = 1e-4  # the -diag variant's shortest back-off sleep (mbe_mpi's Backoff default: 1e-6)


# --------------------------------------------------------------------------------------------------
# The input: a water cluster cut from water32.xyz, synthetic program at zero cost
# --------------------------------------------------------------------------------------------------


def make_input(n_waters: int, bsse: str, max_nbody: int, seconds: float = 0.0):
    """ManyBodyInput: n waters (bohr, explicit neutral singlet fragments), synthetic program."""
    import numpy as np
    from qcelemental.models.v2 import Molecule
    from qcmanybody.models.v2 import ManyBodyInput

    symbols, geometry, fragments = [], [], []
    for water in water_cluster(n_waters):
        start = len(symbols)
        for sym, xyz in water:
            symbols.append(sym)
            geometry.append(np.array(xyz) * ANGSTROM_TO_BOHR)
        fragments.append(list(range(start, len(symbols))))
    molecule = Molecule(symbols=symbols, geometry=np.array(geometry), fragments=fragments,
                        fragment_charges=[0.0] * n_waters, fragment_multiplicities=[1] * n_waters,
                        molecular_charge=0.0, molecular_multiplicity=1)
    spec = {"program": "synthetic", "driver": "energy", "model": {"method": "synthetic", "basis": None},
            "keywords": {"seconds": seconds}}
    keywords = {"bsse_type": [bsse], "max_nbody": max_nbody}
    return ManyBodyInput(specification={"driver": "energy", "keywords": keywords, "specification": spec},
                         molecule=molecule)


# --------------------------------------------------------------------------------------------------
# The baselines' worker: the same QCEngine work per task as mbe_mpi's worker
# --------------------------------------------------------------------------------------------------

_CONTEXT: dict[str, Any] = {}


def init_worker(input_json: str, memory_gib: float) -> None:
    """Once per worker process: QCManyBody's core and atomic specifications (as mbe_mpi's WorkerContext)."""
    import qcengine
    from qcmanybody.models.v2 import ManyBodyInput

    import mbe_mpi  # noqa: F401  (registers the synthetic program)
    from mbe_mpi.plan import atomic_specifications, make_computer

    computer = make_computer(ManyBodyInput.model_validate_json(input_json))
    task_config = {"ncores": 1, "memory": memory_gib, "retries": 0}
    qcengine.config.get_config(task_config=task_config)  # QCEngine's node description (~1 s), paid once
    _CONTEXT.update(core=computer.qcmb_core, model_chemistries=tuple(computer.qcmb_core.compute_map),
                    specifications=atomic_specifications(computer), task_config=task_config)


def run_label(label: tuple[int, tuple[int, ...], tuple[int, ...]]) -> float:
    """One task: fragment molecule + AtomicInput for (mc index, real, basis), qcengine.compute, the energy."""
    import qcengine

    from mbe_mpi.fragments import build_atomic_input, build_fragment_molecule

    mc_index, real, basis = label
    spec = _CONTEXT["specifications"][_CONTEXT["model_chemistries"][mc_index]]
    molecule = build_fragment_molecule(_CONTEXT["core"], real, basis)
    atomic_input = build_atomic_input(molecule, spec["program"], spec["specification"])
    result = qcengine.compute(atomic_input, spec["program"], raise_error=True, task_config=_CONTEXT["task_config"])
    return result.properties.return_energy


def probe(seconds: float) -> int:
    """Warm-up task: which worker process ran it (after its initializer)."""
    time.sleep(seconds)
    return os.getpid()


def labels_of(mbi) -> list[tuple[int, tuple[int, ...], tuple[int, ...]]]:
    """The task labels in QCManyBody's iterate_molecules order, as small tuples."""
    from mbe_mpi.plan import build_plan

    return [(t.mc_index, t.real, t.basis) for t in build_plan(mbi).tasks]


def check_energies(labels: list, energies: list[float], input_json: str, sample: int = 40) -> float:
    """Recompute a sample of the baseline's task energies in this process; return the max abs difference."""
    init_worker(input_json, MEMORY_GIB)
    step = max(1, len(labels) // sample)
    return max(abs(run_label(labels[i]) - energies[i]) for i in range(0, len(labels), step))


# --------------------------------------------------------------------------------------------------
# The variants (each runs in the process the launcher started)
# --------------------------------------------------------------------------------------------------


def max_abs_difference(result, reference) -> float:
    """Largest absolute difference over return_result and every numeric property."""
    import numpy as np

    worst = float(np.max(np.abs(np.ravel(result.return_result) - np.ravel(reference.return_result))))
    got, want = result.properties.model_dump(), reference.properties.model_dump()
    for key, value in want.items():
        if isinstance(value, (int, float, list, np.ndarray)) and not isinstance(value, bool):
            a = np.ravel(np.asarray(got[key], dtype=float))
            b = np.ravel(np.asarray(value, dtype=float))
            worst = max(worst, float(np.max(np.abs(a - b))) if a.size else 0.0)
    return worst


def variant_mbe_mpi(args: argparse.Namespace) -> dict[str, Any] | None:
    """mbe_mpi.compute: local transport (--n-workers) or, under mpiexec, SPMD over the ranks."""
    from qcmanybody.v2.computer import ManyBodyComputer

    import mbe_mpi

    rank = 0
    if "PMI_RANK" in os.environ or "PMI_SIZE" in os.environ:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
    apply_diagnostic_patches(args)
    options: dict[str, Any] = {"memory_per_task": MEMORY_GIB}
    if args.batch_seconds is not None:
        options["batch_seconds"] = args.batch_seconds  # an ordinary execution option
    mbi = make_input(args.waters, args.bsse, args.max_nbody)
    profiler = cProfile.Profile() if (args.profile and rank == 0) else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = mbe_mpi.compute(mbi, n_workers=args.n_workers, **options)
    if profiler is not None:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    # sanity, same transport, after the timed run (which thus starts cold): a small expansion of the same
    # kind equals QCManyBody's sequential result
    small = make_input(args.sanity_waters, args.bsse, args.max_nbody)
    small_result = mbe_mpi.compute(small, n_workers=args.n_workers, **options)
    if rank != 0:
        return None
    reference = ManyBodyComputer.from_manybodyinput(small)
    sanity = {"tasks": small_result.properties.calcinfo_nmbe, "max_abs_diff": max_abs_difference(small_result, reference)}
    stats = result.extras["mbe_mpi"]
    timing = stats["timing"]
    steady = sum(level["wall_time"] for level in timing["levels"].values())
    out = {
        "tasks": result.properties.calcinfo_nmbe,
        "in_run_wall": wall,
        "steady_wall": steady,
        "startup": timing["startup"],
        "other": wall - steady - timing["startup"],  # planning, level gaps, assembly, shutdown
        "master_cpu_in_run": cpu,
        "master_cpu_steady": timing["master_cpu_time"],  # run_master only
        "task_time_sum": timing["task_time_sum"],
        "levels": timing["levels"],
        "return_energy": result.properties.return_energy,
        "sanity": sanity,
    }
    if profiler is not None:
        out["profile"] = profile_text(profiler, args.profile_lines)
    return out


def apply_diagnostic_patches(args: argparse.Namespace) -> None:
    """Diagnostics only, in this process (and so, under mpiexec, on every rank; not in the local transport's
    spawned workers): what two changes to mbe_mpi would buy. Nothing in mbe_mpi/ is edited.

    ``--diag-no-scratch``: one scratch folder per worker process instead of a fresh one per task
    (``worker.execute.task_scratch`` creates, enters and removes a folder for every task).
    ``--diag-min-poll S``: the polling back-off of the master and the workers starts at S seconds instead of
    1 µs (on this VM any sleep takes >= ~70 µs, so the first steps 1, 2, 4, ... 32 µs are all wake-ups).
    ``--diag-result-batch S``: workers send results of tasks shorter than S together
    (``scheduling.batching.TINY_TASK_SECONDS``, default 20 ms).
    """
    if args.diag_no_scratch:
        import contextlib

        import mbe_mpi.worker.execute

        folder = tempfile.mkdtemp(prefix="bench_throughput_scratch_")

        @contextlib.contextmanager
        def one_folder(ctx, task):
            yield folder

        mbe_mpi.worker.execute.task_scratch = one_folder
    if args.diag_min_poll is not None:
        import functools

        import mbe_mpi.master.loop
        import mbe_mpi.worker.serve
        from mbe_mpi.backoff import Backoff

        mbe_mpi.master.loop.Backoff = mbe_mpi.worker.serve.Backoff = functools.partial(Backoff,
                                                                                       minimum=args.diag_min_poll)
    if getattr(args, "diag_result_batch", None) is not None:
        import mbe_mpi.scheduling.batching

        # results of tasks shorter than this are held back (until the worker is idle, 10 ms or 32 results)
        mbe_mpi.scheduling.batching.TINY_TASK_SECONDS = args.diag_result_batch


def _timed_map(mapper, labels: list, n_workers: int, submit_probe) -> dict[str, Any]:
    """Warm up until every worker has run its initializer, then time the map over all labels."""
    seen: set[int] = set()
    while len(seen) < n_workers:
        seen.update(submit_probe())
    cpu1, wall1 = time.process_time(), time.perf_counter()
    energies = mapper()
    return {"steady_wall": time.perf_counter() - wall1, "master_cpu_steady": time.process_time() - cpu1,
            "energies": energies}


def variant_futures(args: argparse.Namespace) -> dict[str, Any]:
    """mpi4py.futures.MPIPoolExecutor (static pool under ``mpiexec -n 3 python -m mpi4py.futures``)."""
    from mpi4py.futures import MPIPoolExecutor

    mbi = make_input(args.waters, args.bsse, args.max_nbody)
    labels = labels_of(mbi)
    input_json = mbi.model_dump_json()
    n = args.n_workers
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with MPIPoolExecutor(max_workers=n, initializer=init_worker, initargs=(input_json, MEMORY_GIB)) as executor:
        def mapper() -> list[float]:
            indexed = executor.map(_indexed, ((i, label) for i, label in enumerate(labels)),
                                   chunksize=args.chunksize, unordered=True)
            return _ordered(indexed, len(labels))

        timed = _timed_map(mapper, labels, n, lambda: list(executor.map(probe, [0.05] * (2 * n))))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return _baseline_out(timed, labels, input_json, wall, cpu, wall0)


def variant_pool(args: argparse.Namespace) -> dict[str, Any]:
    """multiprocessing.Pool(n) with the spawn method, imap_unordered."""
    import multiprocessing

    mbi = make_input(args.waters, args.bsse, args.max_nbody)
    labels = labels_of(mbi)
    input_json = mbi.model_dump_json()
    n = args.n_workers
    context = multiprocessing.get_context("spawn")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with context.Pool(n, initializer=init_worker, initargs=(input_json, MEMORY_GIB)) as pool:
        def mapper() -> list[float]:
            indexed = pool.imap_unordered(_indexed, enumerate(labels), chunksize=args.chunksize)
            return _ordered(indexed, len(labels))

        timed = _timed_map(mapper, labels, n, lambda: pool.map(probe, [0.05] * (2 * n), chunksize=1))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return _baseline_out(timed, labels, input_json, wall, cpu, wall0)


def _indexed(item: tuple[int, tuple]) -> tuple[int, float]:
    index, label = item
    return index, run_label(label)


def _ordered(indexed, count: int) -> list[float]:
    energies = [0.0] * count
    for index, energy in indexed:
        energies[index] = energy
    return energies


def _baseline_out(timed: dict, labels: list, input_json: str, wall: float, cpu: float, wall0: float) -> dict:
    energies = timed.pop("energies")
    return {
        "tasks": len(labels),
        "in_run_wall": wall,
        "startup": wall - timed["steady_wall"],  # pool start, initializers, warm-up probes, shutdown
        "master_cpu_in_run": cpu,
        **timed,
        "sanity": {"tasks": min(40, len(labels)), "max_abs_diff": check_energies(labels, energies, input_json)},
    }


def variant_sequential(args: argparse.Namespace) -> dict[str, Any]:
    """QCManyBody's own sequential computer on the whole input (or on ``--subset`` waters, extrapolated)."""
    from qcmanybody.v2.computer import ManyBodyComputer

    import mbe_mpi  # noqa: F401

    mbi = make_input(args.waters, args.bsse, args.max_nbody)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = ManyBodyComputer.from_manybodyinput(mbi)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"tasks": result.properties.calcinfo_nmbe, "in_run_wall": wall, "steady_wall": wall,
            "master_cpu_in_run": cpu, "master_cpu_steady": cpu, "return_energy": result.properties.return_energy}


def variant_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Per-task cost, piece by piece, in one process; and where qcengine.compute spends its time."""
    import qcengine

    from mbe_mpi.fragments import FragmentBuilder, build_atomic_input, build_fragment_molecule
    from mbe_mpi.protocol import TaskSpec
    from mbe_mpi.worker.execute import WorkerContext, run_task

    mbi = make_input(args.waters, args.bsse, args.max_nbody)
    input_json = mbi.model_dump_json()
    init_worker(input_json, MEMORY_GIB)
    labels = labels_of(mbi)
    step = max(1, len(labels) // args.overhead_tasks)
    sample = labels[::step][: args.overhead_tasks]
    ctx = _CONTEXT
    spec = ctx["specifications"][ctx["model_chemistries"][0]]
    program, task_config = spec["program"], ctx["task_config"]
    harness = qcengine.get_program(program)
    config = qcengine.config.get_config(task_config=task_config)
    worker_ctx = WorkerContext.build(mbi, rank=1, threads=1, memory_gib=MEMORY_GIB)

    def per_task(fn) -> float:
        best = []
        for _ in range(3):
            t0 = time.perf_counter()
            for item in sample:
                fn(item)
            best.append((time.perf_counter() - t0) / len(sample))
        return statistics.median(best)

    molecules = [build_fragment_molecule(ctx["core"], real, basis) for _, real, basis in sample]
    fast = FragmentBuilder(ctx["core"])
    inputs = [build_atomic_input(m, program, spec["specification"]) for m in molecules]
    pieces = {
        "build_fragment_molecule": per_task(lambda lab: build_fragment_molecule(ctx["core"], lab[1], lab[2])),
        "FragmentBuilder.molecule (mbe_mpi's workers)": per_task(
            lambda lab: fast.molecule(lab[1], lab[2])),
        "build_atomic_input": per_task(lambda lab: build_atomic_input(molecules[0], program, spec["specification"])),
        "qcengine.compute (total)": _per_item(inputs, lambda i: qcengine.compute(i, program, raise_error=True,
                                                                                  task_config=task_config)),
        "  of which get_config(task_config) (TaskConfig)": per_task(
            lambda lab: qcengine.config.get_config(task_config=task_config)),
        "  of which harness.compute (the synthetic model)": _per_item(inputs, lambda i: harness.compute(i, config)),
        "baseline task (run_label)": per_task(run_label),
        "mbe_mpi worker task (execute.run_task)": per_task(
            lambda lab: run_task(worker_ctx, TaskSpec(0, lab[0], lab[1], lab[2]))),
        "  of which per-task scratch folder (mkdtemp, chdir, rmtree)": per_task(lambda lab: _scratch_cycle()),
    }
    worker_loop = {}
    for _ in range(3):  # interleaved with the plain loops: the machine is shared
        for name, fn in (("plain loop of run_label (baseline task)", lambda: _loop_cost(run_label, sample)),
                         ("plain loop of execute.run_task", lambda: _loop_cost(
                             lambda lab: run_task(worker_ctx, TaskSpec(0, lab[0], lab[1], lab[2])), sample)),
                         ("worker.serve, 1 task per TASK message", lambda: worker_cpu_per_task(mbi, sample, 1)),
                         ("worker.serve, 10 tasks per TASK message", lambda: worker_cpu_per_task(mbi, sample, 10))):
            worker_loop.setdefault(name, []).append(fn())
    worker_loop = {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
                   for name, v in worker_loop.items()}
    scheduler_cost = {f"{1e3 * seconds:.0f} ms tasks ({'batched' if seconds < 0.005 else 'one per message'})":
                      scheduler_cpu_per_task(mbi, seconds) for seconds in (0.002, 0.006)}
    profiler = cProfile.Profile()
    profiler.enable()
    for inp in inputs:
        qcengine.compute(inp, program, raise_error=True, task_config=task_config)
    profiler.disable()
    return {"tasks": len(sample), "per_task_seconds": pieces, "scheduler_cpu_per_task": scheduler_cost,
            "worker_loop": worker_loop,
            "profile_qcengine_compute": profile_text(profiler, args.profile_lines)}


class _FeedingEndpoint:
    """A worker endpoint without a transport: hands out TASK messages (at most ``prefetch`` unanswered), as a
    master that answers at once would, then SHUTDOWN; counts the results. For ``worker_cpu_per_task``."""

    rank = 1

    def __init__(self, labels: list, per_message: int, job, prefetch: int = 2):
        from mbe_mpi.protocol import TaskMessage, TaskSpec, encode

        specs = [TaskSpec(i, *label) for i, label in enumerate(labels)]
        self.messages = [encode(job)] + [encode(TaskMessage(tuple(specs[i : i + per_message])))
                                         for i in range(0, len(specs), per_message)]
        self.sizes = [0] + [min(per_message, len(specs) - i) for i in range(0, len(specs), per_message)]
        self.total, self.sent, self.results, self.prefetch = len(specs), 0, 0, prefetch

    def poll(self) -> bytes | None:
        from mbe_mpi.protocol import ShutdownMessage, encode

        answered_messages = 0
        count = 0
        for size in self.sizes[: self.sent]:  # messages whose results are all in
            count += size
            if count > self.results:
                break
            answered_messages += 1
        if self.sent < len(self.messages) and self.sent - answered_messages < self.prefetch:
            self.sent += 1
            return self.messages[self.sent - 1]
        if self.results == self.total:
            return encode(ShutdownMessage())
        return None

    def inherited_fds(self) -> tuple[int, ...]:
        return ()

    def send(self, data: bytes) -> None:
        from mbe_mpi.protocol import ResultBatch, ResultMessage, decode

        message = decode(data)
        if isinstance(message, ResultBatch):
            self.results += len(message.results)
        elif isinstance(message, ResultMessage):
            self.results += 1


def worker_cpu_per_task(mbi, labels: list, per_message: int) -> tuple[float, float]:
    """(wall, CPU) seconds per task of mbe_mpi's worker loop (``worker.serve``: QC thread, polling, result
    flushing) around ``worker.execute.run_task``, in this process, fed by an endpoint that answers at once."""
    from mbe_mpi.options import ExecutionOptions
    from mbe_mpi.plan import build_plan
    from mbe_mpi.protocol import JobMessage
    from mbe_mpi.worker import WorkerInit
    from mbe_mpi.worker.executors import thread_executor
    from mbe_mpi.worker.serve import serve

    job = JobMessage(1, mbi.model_dump_json(), build_plan(mbi).model_chemistries)
    endpoint = _FeedingEndpoint(labels, per_message, job)
    init = WorkerInit.from_options(ExecutionOptions(isolate_tasks=False), MEMORY_GIB)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    serve(endpoint, thread_executor(1, init))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert endpoint.results == len(labels)
    return wall / len(labels), cpu / len(labels)


def scheduler_cpu_per_task(mbi, task_seconds: float) -> float:
    """CPU per task of mbe_mpi's Scheduler alone (no transport, no QC) for the whole plan and 2 workers.

    Each worker's oldest TASK message completes at once, every task reporting ``task_seconds`` (which
    decides batching: tasks measured below ``batch_seconds`` = 5 ms travel several per message).
    """
    import collections

    from mbe_mpi.costs import CostModel, program_estimates
    from mbe_mpi.plan import build_plan
    from mbe_mpi.scheduling import Assign, Scheduler

    plan = build_plan(mbi)
    scheduler = Scheduler(plan.by_level(), cost_model=CostModel(program_estimates(plan)))
    workers = (1, 2)
    held: dict[int, collections.deque] = {w: collections.deque() for w in workers}
    for worker in workers:
        scheduler.worker_ready(worker)
    cpu0 = time.process_time()
    while not scheduler.finished:
        for action in scheduler.actions():
            if isinstance(action, Assign):
                held[action.worker].append(action.tasks)
            else:
                scheduler.stolen(action.victim, ())
        for worker in workers:
            if held[worker]:
                for task in held[worker].popleft():
                    scheduler.task_done(worker, task.index, task_seconds)
    return (time.process_time() - cpu0) / len(plan.tasks)


def _loop_cost(fn, items: list) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - wall0) / len(items), (time.process_time() - cpu0) / len(items)


def _per_item(items: list, fn) -> float:
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        runs.append((time.perf_counter() - t0) / len(items))
    return statistics.median(runs)


def _scratch_cycle() -> None:
    path = tempfile.mkdtemp(prefix="bench_")
    previous = os.getcwd()
    os.chdir(path)
    os.chdir(previous)
    shutil.rmtree(path, ignore_errors=True)


def profile_text(profiler: cProfile.Profile, lines: int) -> str:
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(lines)
    return stream.getvalue()


RUNNERS = {"mbe_mpi": variant_mbe_mpi, "futures": variant_futures, "pool": variant_pool,
           "sequential": variant_sequential, "overhead": variant_overhead}


# --------------------------------------------------------------------------------------------------
# The driver: launch every variant as its own process, repeat, tabulate
# --------------------------------------------------------------------------------------------------


def command_for(variant: str, args: argparse.Namespace, out: str) -> list[str]:
    script = str(Path(__file__).resolve())
    common = ["--waters", str(args.waters), "--bsse", args.bsse, "--max-nbody", str(args.max_nbody),
              "--sanity-waters", str(args.sanity_waters), "--out", out]
    mpiexec = [shutil.which("mpiexec") or "mpiexec", "-n", str(args.n_workers + 1)]
    py = sys.executable
    extra = ["--profile"] if args.profile else []
    if variant.endswith(("-batch", "-diag", "-diag-results")):
        extra += ["--batch-seconds", str(BATCH_SECONDS)]
    if variant.endswith(("-diag", "-diag-results", "-noscratch")):
        extra += ["--diag-no-scratch"]
    if variant.endswith(("-diag", "-diag-results", "-minpoll")):
        extra += ["--diag-min-poll", str(DIAG_MIN_POLL)]
    if variant.endswith("-diag-results"):
        extra += ["--diag-result-batch", str(BATCH_SECONDS)]
    if variant.startswith("mbe-mpi"):
        return [*mpiexec, py, script, "--run", "mbe_mpi", *common, *extra]
    if variant.startswith("mbe-local"):
        return [py, script, "--run", "mbe_mpi", "--n-workers", str(args.n_workers), *common, *extra]
    if variant == "futures":
        return [*mpiexec, py, "-m", "mpi4py.futures", script, "--run", "futures", "--chunksize",
                str(args.chunksize), "--n-workers", str(args.n_workers), *common]
    if variant == "futures-1":
        return [*mpiexec, py, "-m", "mpi4py.futures", script, "--run", "futures", "--chunksize", "1",
                "--n-workers", str(args.n_workers), *common]
    if variant == "pool":
        return [py, script, "--run", "pool", "--chunksize", str(args.chunksize), "--n-workers",
                str(args.n_workers), *common]
    if variant == "sequential":
        return [py, script, "--run", "sequential", *common]
    if variant == "overhead":
        return [py, script, "--run", "overhead", "--overhead-tasks", str(args.overhead_tasks), *common]
    raise ValueError(variant)


def launch(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as tmp:
        out = str(Path(tmp) / "out.json")
        command = command_for(variant, args, out)
        load = os.getloadavg()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        busy0, ours0 = machine_cpu_seconds(), children_cpu_seconds()
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=args.timeout)
        process_wall = time.perf_counter() - t0
        machine_cpu, our_cpu = machine_cpu_seconds() - busy0, children_cpu_seconds() - ours0
        if proc.returncode != 0:
            raise RuntimeError(f"{variant} failed ({proc.returncode}):\n{' '.join(command)}\n{proc.stderr[-4000:]}")
        data = json.loads(Path(out).read_text())
    data.update(variant=variant, process_wall=process_wall, load_before=load, command=_display(command),
                machine_cpu=machine_cpu, our_cpu=our_cpu)
    return data


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all processes, from /proc/stat; steal excluded)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (and theirs): our own benchmark processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _display(command: list[str]) -> str:
    shown = []
    for part in command:
        if part == sys.executable:
            part = "python"
        elif part.endswith("bench_throughput.py"):
            part = "benchmarks/bench_throughput.py"
        elif part.endswith("/mpiexec"):
            part = "mpiexec"
        shown.append(part)
    return " ".join(p for p in shown if p != "--out" and not p.endswith("out.json"))


def med_range(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


LABELS = {
    "mbe-mpi": "mbe_mpi, MPI (`mpiexec -n 3`, 2 worker ranks)",
    "mbe-local": "mbe_mpi, local transport (n_workers=2)",
    "futures": "mpi4py.futures MPIPoolExecutor, 2 workers, chunksize {c}",
    "futures-1": "mpi4py.futures MPIPoolExecutor, 2 workers, chunksize 1",
    "pool": "multiprocessing.Pool(2) spawn, imap_unordered chunksize {c}",
    "sequential": "QCManyBody ManyBodyComputer, sequential (1 process)",
    "mbe-mpi-batch": f"mbe_mpi, MPI, option batch_seconds={BATCH_SECONDS}",
    "mbe-local-batch": f"mbe_mpi, local, option batch_seconds={BATCH_SECONDS}",
    "mbe-mpi-diag": f"diagnostic: mbe_mpi MPI, batch_seconds={BATCH_SECONDS} + one scratch folder per worker + "
                    f"back-off from {1e6 * DIAG_MIN_POLL:.0f} µs (monkeypatched)",
    "mbe-mpi-noscratch": "diagnostic: mbe_mpi MPI, one scratch folder per worker (monkeypatched)",
    "mbe-mpi-minpoll": f"diagnostic: mbe_mpi MPI, back-off from {1e6 * DIAG_MIN_POLL:.0f} µs (monkeypatched)",
    "mbe-mpi-diag-results": f"diagnostic: as mbe-mpi-diag + workers send results of tasks < {1e3 * BATCH_SECONDS:.0f} "
                            "ms together (monkeypatched)",
}


def tabulate(runs: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "| variant | tasks/s steady | tasks/s in-run | tasks/s process | master CPU µs/task steady "
        "| master CPU µs/task in-run | CPU ms/task, all our processes | others' CPU s during the run "
        "| start-up + other (s) | sanity max abs diff |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for variant in args.only:
        if variant == "overhead":
            continue
        rs = [r for r in runs if r["variant"] == variant]
        if not rs:
            continue
        tasks = rs[0]["tasks"]
        steady = [r["tasks"] / r["steady_wall"] for r in rs]
        in_run = [r["tasks"] / r["in_run_wall"] for r in rs]
        process = [r["tasks"] / r["process_wall"] for r in rs]
        cpu_steady = [1e6 * r["master_cpu_steady"] / r["tasks"] for r in rs]
        cpu_in_run = [1e6 * r["master_cpu_in_run"] / r["tasks"] for r in rs]
        extra = [r["in_run_wall"] - r["steady_wall"] for r in rs]
        ours = [1e3 * r["our_cpu"] / r["tasks"] for r in rs]  # the whole command, start-up included
        others = [max(0.0, r["machine_cpu"] - r["our_cpu"]) for r in rs]
        sanity = max((r["sanity"]["max_abs_diff"] for r in rs if r.get("sanity")), default=None)
        label = LABELS[variant].format(c=args.chunksize)
        lines.append(
            f"| {label} | {med_range(steady)} | {med_range(in_run)} | {med_range(process)} | "
            f"{med_range(cpu_steady, '{:.1f}')} | {med_range(cpu_in_run, '{:.1f}')} | {med_range(ours, '{:.2f}')} | "
            f"{med_range(others)} | {med_range(extra, '{:.2f}')} | "
            f"{'—' if sanity is None else f'{sanity:.1e}'} |"
        )
        assert all(r["tasks"] == tasks for r in rs)
    return "\n".join(lines)


def describe_machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("mpi4py", "mpich", "qcengine", "qcmanybody", "qcelemental"))
    return f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}; Python {platform.python_version()}, {versions}"


def drive(args: argparse.Namespace) -> None:
    print(f"# bench_throughput  {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    print(f"# machine: {describe_machine()}")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: list[dict] = []
    repeated = [v for v in args.only if v not in ("sequential", "overhead")]
    once = [v for v in args.only if v in ("sequential", "overhead")]
    for repeat in range(args.repeats):
        for variant in repeated:
            run = launch(variant, args)
            runs.append(run)
            if args.json:  # after every run: a killed benchmark keeps what it measured
                Path(args.json).write_text(json.dumps(runs, indent=1, default=str))
            print(f"[{repeat + 1}/{args.repeats}] {variant:10s} tasks {run['tasks']} steady {run['steady_wall']:.2f} s "
                  f"in-run {run['in_run_wall']:.2f} s process {run['process_wall']:.2f} s; master CPU steady "
                  f"{run['master_cpu_steady']:.2f} s; load before {run['load_before'][0]:.2f}; machine CPU "
                  f"{run['machine_cpu']:.0f} s, ours {run['our_cpu']:.0f} s", flush=True)
            if run.get("profile"):
                print(run["profile"])
    for variant in once:
        run = launch(variant, args)
        runs.append(run)
        if variant == "overhead":
            print(f"\n## Per-task cost in one process ({run['tasks']} labels spread over the set, median of 3 passes)")
            for name, seconds in run["per_task_seconds"].items():
                print(f"  {name:62s} {1e3 * seconds:7.3f} ms")
            print("  one worker process, per task (wall / CPU; median of 3 interleaved passes):")
            for name, (wall, cpu) in run["worker_loop"].items():
                print(f"    {name:60s} {1e3 * wall:7.3f} ms / {1e3 * cpu:7.3f} ms")
            print("  mbe_mpi Scheduler alone, CPU per task (whole plan, 2 workers, no transport):")
            for name, seconds in run["scheduler_cpu_per_task"].items():
                print(f"    {name:60s} {1e6 * seconds:7.1f} µs")
            print(run["profile_qcengine_compute"])
        else:
            print(f"[once] {variant:10s} tasks {run['tasks']} wall {run['in_run_wall']:.2f} s process "
                  f"{run['process_wall']:.2f} s; load before {run['load_before'][0]:.2f}; machine CPU "
                  f"{run['machine_cpu']:.0f} s, ours {run['our_cpu']:.0f} s", flush=True)
    print(f"\n# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# {args.bsse} {args.max_nbody}-body expansion of {args.waters} waters; median (range) of "
          f"{args.repeats} runs\n")
    print(tabulate(runs, args))
    print("\ncommands:")
    for variant in args.only:
        match = next((r for r in runs if r["variant"] == variant), None)
        if match:
            print(f"  {variant:10s} {match['command']}")
    mbe_levels = [r for r in runs if r["variant"].startswith("mbe-")]
    for r in mbe_levels:
        levels = ", ".join(f"{k}-body {v['tasks']} tasks {v['wall_time']:.2f} s util {v['utilisation']:.0%}"
                           for k, v in r["levels"].items())
        print(f"  {r['variant']}: startup {r['startup']:.2f} s, other {r['other']:.2f} s; {levels}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", choices=sorted(RUNNERS), help="run one variant in this process (used by the driver)")
    parser.add_argument("--only", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS),
                        help="variants to run (default: all but the single-change diagnostics)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each variant except sequential/overhead")
    parser.add_argument("--waters", type=int, default=26, help="waters in the cluster (default 26)")
    parser.add_argument("--bsse", default="vmfc", help="nocp, cp or vmfc (default vmfc)")
    parser.add_argument("--max-nbody", type=int, default=3)
    parser.add_argument("--sanity-waters", type=int, default=5, help="waters of the mbe_mpi-vs-QCManyBody check")
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=16, help="chunksize of the baselines (default 16)")
    parser.add_argument("--overhead-tasks", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="cProfile rank 0 / the parent during mbe_mpi.compute")
    parser.add_argument("--profile-lines", type=int, default=30)
    parser.add_argument("--batch-seconds", type=float, help="mbe_mpi execution option batch_seconds (--run mbe_mpi)")
    parser.add_argument("--diag-no-scratch", action="store_true", help="diagnostic (--run mbe_mpi): one scratch "
                        "folder per worker instead of one per task (monkeypatched)")
    parser.add_argument("--diag-min-poll", type=float, help="diagnostic (--run mbe_mpi): shortest back-off sleep "
                        "of master and workers (monkeypatched)")
    parser.add_argument("--diag-result-batch", type=float, help="diagnostic (--run mbe_mpi): workers hold back "
                        "results of tasks shorter than this many seconds and send them together (monkeypatched)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", help="also write every run's figures to this JSON file")
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--tabulate", nargs="+", metavar="JSON", help="print the table of runs saved with --json")
    args = parser.parse_args()
    if args.tabulate:
        runs = [run for path in args.tabulate for run in json.loads(Path(path).read_text())]
        args.only = list(dict.fromkeys(run["variant"] for run in runs))
        print(tabulate(runs, args))
        return
    if args.run is None:
        drive(args)
        return
    if args.run in ("mbe_mpi",) and args.n_workers == 2 and ("PMI_RANK" in os.environ or "PMI_SIZE" in os.environ):
        args.n_workers = None  # under mpiexec the ranks are the workers
    out = RUNNERS[args.run](args)
    if out is not None and args.out:
        Path(args.out).write_text(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
