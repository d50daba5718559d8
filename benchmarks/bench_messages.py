"""What a TASK and a RESULT message cost: bytes, encode/decode time, and transport round trips.

mbe_mpi's compact protocol (:mod:`mbe_mpi.protocol`: plain tuples pickled with protocol 5, NumPy
arrays in-band) is compared, in the same run, with a naive baseline: a Python dict carrying the
QCManyBody label string (TASK) or the full AtomicResult JSON (RESULT), sent as a pickled object
(mpi4py ``comm.send``/``comm.recv``; ``Connection.send``/``recv`` over pipes).

Usage (from the repository root)::

    python benchmarks/bench_messages.py [--write]                     # sizes, encode/decode, pipes
    mpiexec -n 2 python benchmarks/bench_messages.py --mpi [--write]  # MPI transport

Each prints markdown tables; ``--write`` also puts them into ``benchmarks/RESULTS.md`` under
"## Message cost (TASK / RESULT)" (each mode replaces only its own generated block).

The realistic RESULT payloads come from one QCEngine run of tblite GFN2-xTB (energy, gradient) on a
water trimer. tblite has no analytic Hessian, so the Hessian AtomicResult is the gradient one with a
symmetric 27x27 matrix added (sizes depend on the number of floats, not on their values).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qcmanybody.utils import labeler

from mbe_mpi.backoff import Backoff
from mbe_mpi.protocol import Message, ResultMessage, ShutdownMessage, TaskMessage, TaskSpec, decode, encode
from mbe_mpi.transports.local import PipeWorkerEndpoint

RESULTS_FILE = Path(__file__).with_name("RESULTS.md")
SECTION = "## Message cost (TASK / RESULT)"

#: water trimer (Angstrom): the first three molecules of tests/data/water32.xyz
WATER_TRIMER = """
O      2.005979    -4.685521    -1.844031
H      1.355527    -4.283326    -1.268374
H      1.526601    -4.878857    -2.649665
--
O      2.608892    -2.675449     2.890175
H      2.427245    -3.533869     2.507619
H      2.493361    -2.060559     2.165750
--
O      0.069765    -3.765074    -0.092294
H     -0.748399    -4.102246    -0.457193
H     -0.205709    -3.169585     0.604654
"""

MODEL_CHEMISTRY = "(auto)"  # QCManyBody's model-chemistry label for a single-level run
REAL = (3, 17, 29)
BASIS_CP = (3, 11, 17, 23, 29)  # counterpoise: the same 3-body real part in a 5-fragment basis
TASK_ID = 4321
WORKER_RANK = 1
WALL_TIME = 0.0123
LABEL = labeler(MODEL_CHEMISTRY, REAL, REAL)  # '["(auto)", [3, 17, 29], [3, 17, 29]]'

NAIVE_TAG = 30  # naive pickled-object messages (MPI)
REPORT_TAG = 31  # worker -> master: CPU seconds and message count of a phase (MPI)


# --------------------------------------------------------------------------------------------------
# Payloads and messages
# --------------------------------------------------------------------------------------------------


def qc_payload() -> dict[str, Any]:
    """Energy, gradient, Hessian and AtomicResult JSON strings from tblite GFN2-xTB on a water trimer."""
    import qcengine
    from qcelemental.models.v2 import AtomicInput, AtomicResult, Molecule

    import mbe_mpi  # noqa: F401  (registers the "tblite" QCEngine harness)

    molecule = Molecule.from_data(WATER_TRIMER)
    results = {}
    for driver in ("energy", "gradient"):
        spec = {"program": "tblite", "driver": driver, "model": {"method": "gfn2-xtb", "basis": None}}
        results[driver] = qcengine.compute(AtomicInput(molecule=molecule, specification=spec), "tblite",
                                           raise_error=True)
    gradient = np.asarray(results["gradient"].properties.return_gradient, dtype=float)
    # No analytic Hessian in tblite: add a symmetric 27x27 matrix to the gradient record, where a
    # Hessian-capable harness (our PySCF one) puts it: return_result, return_hessian, scf_total_hessian.
    n = gradient.size
    rng = np.random.default_rng(20240607)
    a = rng.normal(scale=0.2, size=(n, n))
    hessian = (a + a.T) / 2
    data = results["gradient"].model_dump()
    data["input_data"]["specification"]["driver"] = "hessian"
    data["return_result"] = hessian
    data["properties"]["return_hessian"] = hessian
    data["properties"]["scf_total_hessian"] = hessian
    results["hessian"] = AtomicResult(**data)
    return {
        "energy": float(results["energy"].properties.return_energy),
        "gradient": gradient,
        "hessian": hessian,
        "json": {kind: result.model_dump_json() for kind, result in results.items()},
    }


def result_fields(qc: dict[str, Any], kind: str) -> dict[str, Any]:
    """The numeric fields of our RESULT for a task of driver ``kind`` (what execute.run_task sends)."""
    if kind == "energy":
        return {"energy": qc["energy"]}
    if kind == "gradient":
        return {"energy": qc["energy"], "gradient": qc["gradient"]}
    if kind == "hessian":  # PySCF's Hessian driver also returns the gradient
        return {"energy": qc["energy"], "gradient": qc["gradient"], "hessian": qc["hessian"]}
    raise ValueError(kind)


def naive_task(task_id: int, label: str) -> dict[str, Any]:
    return {"task_id": task_id, "label": label, "attempt": 1}


def naive_result(task_id: int, label: str, atomic_result_json: str) -> dict[str, Any]:
    return {"task_id": task_id, "label": label, "rank": WORKER_RANK, "wall_time": WALL_TIME, "success": True,
            "atomic_result": atomic_result_json}


def our_task(task_id: int, basis: tuple[int, ...] = REAL) -> TaskMessage:
    return TaskMessage((TaskSpec(task_id, 0, REAL, basis),))


@dataclasses.dataclass
class Case:
    name: str
    ours: Message
    naive: dict[str, Any]


def build_cases(qc: dict[str, Any]) -> list[Case]:
    def result(kind: str, **extra: Any) -> ResultMessage:
        return ResultMessage(TASK_ID, WORKER_RANK, WALL_TIME, **result_fields(qc, kind), **extra)

    js = qc["json"]
    return [
        Case("TASK, 1 task, real (3,17,29), basis (3,17,29)", our_task(TASK_ID), naive_task(TASK_ID, LABEL)),
        Case("TASK, 1 task, real (3,17,29), CP basis of 5 fragments", our_task(TASK_ID, BASIS_CP),
             naive_task(TASK_ID, labeler(MODEL_CHEMISTRY, REAL, BASIS_CP))),
        Case("RESULT energy", result("energy"), naive_result(TASK_ID, LABEL, js["energy"])),
        Case("RESULT energy + gradient 9x3", result("gradient"), naive_result(TASK_ID, LABEL, js["gradient"])),
        Case("RESULT energy + gradient 9x3 + Hessian 27x27", result("hessian"),
             naive_result(TASK_ID, LABEL, js["hessian"])),
        Case("RESULT energy + AtomicResult JSON (cluster_results='all')",
             result("energy", atomic_result_json=js["energy"]), naive_result(TASK_ID, LABEL, js["energy"])),
    ]


def naive_bytes(obj: Any) -> bytes:
    """What mpi4py's ``comm.send`` transmits: ``pickle.dumps`` with mpi4py's protocol (5 here)."""
    return pickle.dumps(obj, protocol=5)


# --------------------------------------------------------------------------------------------------
# Reporting helpers
# --------------------------------------------------------------------------------------------------


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    align = ["---"] + ["--:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def spread(values: list[float], digits: int = 1) -> str:
    """min–max of the per-repeat figures."""
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sleep_cost_us(delay: float, n: int = 200) -> float:
    """Median wall time of ``time.sleep(delay)`` in µs: the floor of every Backoff sleep."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        time.sleep(delay)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def environment(command: str, mpi_library: str | None = None) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{command}`",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}; "
        f"load average at start {load} (the machine is shared)",
        f"- Python {platform.python_version()}, mpi4py {version('mpi4py')}, MPICH {version('mpich')} (pip wheel)"
        + (f" = `{mpi_library}`" if mpi_library else "")
        + f", NumPy {version('numpy')}, qcelemental {version('qcelemental')}, qcengine {version('qcengine')}, "
        f"tblite {version('tblite')}",
        f"- time.sleep(0) takes {sleep_cost_us(0.0):.0f} µs and time.sleep(1e-6) {sleep_cost_us(1e-6):.0f} µs here "
        "(median of 200): the shortest sleep of mbe_mpi's Backoff",
    ]
    return "\n".join(lines)


def write_block(name: str, text: str) -> None:
    """Replace (or add) this mode's generated block in RESULTS.md, under SECTION."""
    begin = f"<!-- bench_messages.py {name}: begin (generated; --write replaces this block) -->"
    end = f"<!-- bench_messages.py {name}: end -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    content = RESULTS_FILE.read_text() if RESULTS_FILE.exists() else "# Benchmark results\n"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        if SECTION not in content:
            content = content.rstrip() + f"\n\n{SECTION}\n"
        start = content.index(SECTION) + len(SECTION)
        following = content.find("\n## ", start)
        cut = len(content) if following < 0 else following
        content = content[:cut].rstrip() + "\n\n" + block + "\n" + content[cut:]
    RESULTS_FILE.write_text(content)


# --------------------------------------------------------------------------------------------------
# 1 + 2: sizes and encode/decode
# --------------------------------------------------------------------------------------------------


def per_call_us(fn: Callable[[], object], repeats: int, target: float) -> list[float]:
    """CPU microseconds per call, one figure per repeat (timeit, ``target`` seconds per repeat).

    timeit with ``time.process_time`` as its clock: on a shared machine, time spent descheduled
    would otherwise inflate the figures.
    """
    timer = timeit.Timer(fn, timer=time.process_time)
    number = 1
    while (elapsed := timer.timeit(number)) < target / 10:
        number *= 10
    number = max(1, round(number * target / elapsed))
    return [timer.timeit(number) / number * 1e6 for _ in range(repeats)]


def sizes_table(cases: list[Case]) -> str:
    rows = []
    for case in cases:
        ours = len(encode(case.ours))
        naive = len(naive_bytes(case.naive))
        json_chars = len(case.naive["atomic_result"]) if "atomic_result" in case.naive else None
        rows.append([case.name, ours, naive, "—" if json_chars is None else json_chars, f"{ours / naive:.2f}"])
    return md_table(["message", "ours (bytes)", "naive pickled dict (bytes)", "of which AtomicResult JSON (chars)",
                     "ours / naive"], rows)


def codec_table(cases: list[Case], repeats: int, target: float) -> str:
    rows = []
    for case in cases:
        data = encode(case.ours)
        enc = per_call_us(lambda c=case: encode(c.ours), repeats, target)
        dec = per_call_us(lambda d=data: decode(d), repeats, target)
        both = per_call_us(lambda c=case: decode(encode(c.ours)), repeats, target)
        naive = per_call_us(lambda c=case: pickle.loads(naive_bytes(c.naive)), repeats, target)
        key = "atomic_result" if "atomic_result" in case.naive else "label"
        parse = per_call_us(lambda c=case, k=key: json.loads(c.naive[k]), repeats, target)
        ours_us, naive_us = statistics.median(both), statistics.median(naive)
        naive_parse_us = naive_us + statistics.median(parse)
        rows.append([case.name, fmt(statistics.median(enc), 2), fmt(statistics.median(dec), 2), fmt(ours_us, 2),
                     spread(both, 2), fmt(naive_us, 2), fmt(naive_parse_us, 2), f"{ours_us / naive_us:.2f}",
                     f"{ours_us / naive_parse_us:.2f}"])
    return md_table(["message", "ours encode (µs)", "ours decode (µs)", "ours encode+decode (µs)",
                     "ours e+d, range of repeats", "naive dumps+loads (µs)",
                     "naive + json.loads of label / AtomicResult (µs)", "ours / naive", "ours / (naive + json.loads)"],
                    rows)


# --------------------------------------------------------------------------------------------------
# 3 + 4 + 5: transports. A master "end" submits tasks and polls for results; a worker serves them.
# --------------------------------------------------------------------------------------------------


class OursEnd:
    """Master side with our protocol over a transport's ``send(bytes)`` / ``wait(timeout) -> [bytes]``."""

    def __init__(self, send: Callable[[bytes], None], wait: Callable[[float], list[bytes]]):
        self._send = send
        self._wait = wait

    def submit(self, task_id: int) -> None:  # what run_master does per task
        self._send(encode(TaskMessage((TaskSpec(task_id, 0, REAL, REAL),))))

    def poll(self, timeout: float) -> list[Any]:
        return [decode(data) for data in self._wait(timeout)]

    def shutdown(self) -> None:
        self._send(encode(ShutdownMessage()))


class NaiveEnd:
    """Master side of the baseline: pickled dicts through ``send(obj)`` / ``poll(timeout) -> [obj]``."""

    def __init__(self, send: Callable[[Any], None], poll: Callable[[float], list[Any]]):
        self._send = send
        self._poll = poll

    def submit(self, task_id: int) -> None:
        self._send(naive_task(task_id, LABEL))

    def poll(self, timeout: float) -> list[Any]:
        return self._poll(timeout)

    def shutdown(self) -> None:
        self._send(None)


def serve_ours(endpoint: Any, fields: dict[str, Any]) -> int:
    """A worker's loop as in mbe_mpi.worker.serve, answering every task at once with a fixed RESULT."""
    count = 0
    while True:
        message = decode(endpoint.recv())
        if isinstance(message, ShutdownMessage):
            return count
        for task in message.tasks:
            endpoint.send(encode(ResultMessage(task.task_id, endpoint.rank, WALL_TIME, **fields)))
            count += 1


def serve_naive(recv: Callable[[], Any], send: Callable[[Any], None], atomic_result_json: str) -> int:
    count = 0
    while (task := recv()) is not None:
        send(naive_result(task["task_id"], task["label"], atomic_result_json))
        count += 1
    return count


def ping_pong(end: OursEnd | NaiveEnd, n: int, backoff: bool) -> list[float]:
    """Round-trip seconds of ``n`` TASK -> RESULT exchanges, one in flight (one busy worker)."""
    delays = Backoff()  # run_master's: 1 us growing to 1 ms, reset on activity
    trips = []
    for task_id in range(n):
        start = time.perf_counter()
        end.submit(task_id)
        while not end.poll(delays.next_delay() if backoff else 0.0):
            pass
        delays.reset()
        trips.append(time.perf_counter() - start)
    return trips


def stream(end: OursEnd | NaiveEnd, n: int, window: int, backoff: bool) -> dict[str, float | None]:
    """``n`` tasks, ``window`` in flight; per task: wall, master CPU, master handling (tight loop only).

    Handling = CPU time in submit (encode + send) plus in the polls that returned results (receive +
    decode): the master's cost of transport + encoding, without its idle polling and without time
    the process spent descheduled.
    """
    delays = Backoff()
    busy = 0.0
    sent = done = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while sent < min(window, n):
        end.submit(sent)
        sent += 1
    busy += time.process_time() - cpu0
    while done < n:
        timeout = delays.next_delay() if backoff else 0.0
        start = time.process_time()
        got = end.poll(timeout)
        if got:
            for _ in got:
                done += 1
                if sent < n:
                    end.submit(sent)
                    sent += 1
            if timeout == 0.0:
                busy += time.process_time() - start
            delays.reset()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"wall": wall / n * 1e6, "cpu": cpu / n * 1e6, "busy": None if backoff else busy / n * 1e6}


class CountingBackoff(Backoff):
    """A Backoff (built with the endpoint's own limits) that counts how often it sleeps."""

    def __init__(self, minimum: float, maximum: float) -> None:
        super().__init__(minimum=minimum, maximum=maximum)
        self.sleeps = 0

    def sleep(self) -> None:
        self.sleeps += 1
        super().sleep()


class SpinBackoff(CountingBackoff):
    """Never sleeps: the worker polls Iprobe in a tight loop (diagnostic only); counts the misses."""

    def sleep(self) -> None:
        self.sleeps += 1


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    protocol: str  # "ours" | "naive"
    kind: str  # RESULT sent back: "energy" | "hessian"
    backoff: bool = False  # master polls like run_master (Backoff) instead of a tight timeout-0 loop
    spin: bool = False  # MPI worker endpoint polling without sleeping (diagnostic)
    stream: bool = True  # also run the N-task throughput test


def run_suite(variants: list[Variant], start_phase: Callable[[Variant], None], make_end: Callable[[str], Any],
              phase_report: Callable[[], tuple[float, int, int | None]], args: argparse.Namespace) -> tuple[str, str]:
    """Interleave the variants in each repeat (fair under a shared machine's drifting load)."""
    latency: dict[Variant, list[tuple[float, float, float | None]]] = {v: [] for v in variants}
    throughput: dict[Variant, list[dict[str, float | None]]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            start_phase(v)
            end = make_end(v.protocol)
            ping_pong(end, args.warmup, v.backoff)
            trips = np.array(ping_pong(end, args.trips, v.backoff)) * 1e6
            end.shutdown()
            _, count, sleeps = phase_report()
            latency[v].append((float(np.median(trips)), float(np.percentile(trips, 90)),
                               None if sleeps is None else sleeps / count))
            if v.stream:
                start_phase(v)
                end = make_end(v.protocol)
                figures = stream(end, args.tasks, args.window, v.backoff)
                end.shutdown()
                worker_cpu, count, sleeps = phase_report()
                assert count == args.tasks, (count, args.tasks)
                figures["worker_cpu"] = worker_cpu / count * 1e6
                figures["sleeps"] = None if sleeps is None else sleeps / count
                throughput[v].append(figures)

    show_sleeps = any(s is not None for runs in latency.values() for _, _, s in runs)
    rows = []
    for v in variants:
        medians = [m for m, _, _ in latency[v]]
        row = [v.name, v.kind, fmt(statistics.median(medians)), spread(medians),
               fmt(statistics.median(p90 for _, p90, _ in latency[v]))]
        if show_sleeps:
            sleeps = [s for _, _, s in latency[v] if s is not None]
            row.append(fmt(statistics.median(sleeps), 2) if sleeps else "—")
        rows.append(row)
    lat_table = md_table(["variant", "RESULT", "round trip, median (µs)", "range of medians over repeats",
                          "p90 (µs)"] + (["worker back-off sleeps per task"] if show_sleeps else []), rows)
    rows = []
    for v in variants:
        if not v.stream:
            continue
        runs = throughput[v]

        def med(key: str, runs: list[dict[str, float | None]] = runs) -> float | None:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.median(values) if values else None

        walls = [r["wall"] for r in runs]
        row = [v.name, fmt(med("wall")), spread(walls), fmt(med("busy")), fmt(med("cpu")), fmt(med("worker_cpu"))]
        rows.append(row + ([fmt(med("sleeps"), 2)] if show_sleeps else []))
    tp_table = md_table(["variant", "wall per task (µs)", "range over repeats", "master handling per task (µs)",
                         "master CPU per task (µs)", "worker CPU per task (µs)"]
                        + (["worker back-off sleeps per task"] if show_sleeps else []), rows)
    return lat_table, tp_table


def suite_text(title: str, lat_table: str, tp_table: str, args: argparse.Namespace) -> str:
    return (
        f"{title}\n\nRound trip (one TASK in flight, answered by one RESULT; {args.trips} trips after {args.warmup} "
        f"warm-up, {args.repeats} repeats, median of the per-repeat medians):\n\n{lat_table}\n\n"
        f"Throughput ({args.tasks} TASKs answered by energy RESULTs, {args.window} in flight; medians of "
        f"{args.repeats} repeats):\n\n{tp_table}\n"
    )


# --------------------------------------------------------------------------------------------------
# Pipes (local transport)
# --------------------------------------------------------------------------------------------------


def pipe_worker(conn: multiprocessing.connection.Connection, qc: dict[str, Any]) -> None:
    """Child process: PipeWorkerEndpoint for our protocol, Connection.send/recv for the baseline."""
    endpoint = PipeWorkerEndpoint(conn, WORKER_RANK)
    while (control := conn.recv()) is not None:
        protocol, kind = control
        cpu0 = time.process_time()
        if protocol == "ours":
            count = serve_ours(endpoint, result_fields(qc, kind))
        else:
            count = serve_naive(conn.recv, conn.send, qc["json"][kind])
        conn.send((time.process_time() - cpu0, count, None))


def pipe_suite(qc: dict[str, Any], args: argparse.Namespace) -> str:
    # As LocalMasterTransport: a duplex Pipe per worker from the "spawn" context; parent side uses
    # send_bytes and multiprocessing.connection.wait(..., timeout) + recv_bytes.
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=True)
    proc = context.Process(target=pipe_worker, args=(child, qc), name="bench-pipe-worker", daemon=True)
    proc.start()
    child.close()

    def wait(timeout: float) -> list[bytes]:
        return [parent.recv_bytes()] if multiprocessing.connection.wait([parent], timeout) else []

    def make_end(protocol: str) -> OursEnd | NaiveEnd:
        if protocol == "ours":
            return OursEnd(parent.send_bytes, wait)
        return NaiveEnd(parent.send, lambda timeout: [parent.recv()] if parent.poll(timeout) else [])

    variants = [
        Variant("ours, master wait(timeout=0) tight loop", "ours", "energy"),
        Variant("ours, master back-off as run_master", "ours", "energy", backoff=True),
        Variant("naive: Connection.send/recv of pickled dicts", "naive", "energy"),
        Variant("ours, master wait(timeout=0) tight loop", "ours", "hessian", stream=False),
        Variant("naive: Connection.send/recv of pickled dicts", "naive", "hessian", stream=False),
    ]
    try:
        lat, tp = run_suite(variants, lambda v: parent.send((v.protocol, v.kind)), make_end, parent.recv, args)
        parent.send(None)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
    return suite_text("#### Local transport (pipes)", lat, tp, args)


# --------------------------------------------------------------------------------------------------
# MPI
# --------------------------------------------------------------------------------------------------


def mpi_main(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from mbe_mpi.transports.mpi import MPIMasterTransport, MPIWorkerEndpoint, announce, await_announcement

    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        if comm.Get_rank() == 0:
            print("run with exactly 2 ranks: mpiexec -n 2 python benchmarks/bench_messages.py --mpi", file=sys.stderr)
        return

    if comm.Get_rank() == 1:
        qc = await_announcement(comm)
        while (variant := await_announcement(comm)) is not None:
            cpu0 = time.process_time()
            sleeps = None
            if variant.protocol == "ours":
                endpoint = MPIWorkerEndpoint(comm)
                own = endpoint._backoff  # same limits, plus a count of the sleeps
                endpoint._backoff = (SpinBackoff if variant.spin else CountingBackoff)(own.minimum, own.maximum)
                count = serve_ours(endpoint, result_fields(qc, variant.kind))
                sleeps = endpoint._backoff.sleeps
            else:
                count = serve_naive(lambda: comm.recv(source=0, tag=NAIVE_TAG),
                                    lambda obj: comm.send(obj, dest=0, tag=NAIVE_TAG), qc["json"][variant.kind])
            comm.send((time.process_time() - cpu0, count, sleeps), dest=0, tag=REPORT_TAG)
        return

    command = " ".join(["mpiexec -n 2 python", *sys.argv])
    library = [" ".join(line.split()) for line in MPI.Get_library_version().splitlines()[:4]]
    env = environment(command, "; ".join(line for line in library if line.startswith(("MPICH Version", "MPICH Device"))))
    qc = qc_payload()
    announce(comm, qc)
    transport = MPIMasterTransport(comm)

    def wait(timeout: float) -> list[bytes]:
        return [data for _, data in transport.wait(timeout)]

    def naive_poll(timeout: float) -> list[Any]:
        return [comm.recv(source=1, tag=NAIVE_TAG)] if comm.iprobe(source=1, tag=NAIVE_TAG) else []

    def make_end(protocol: str) -> OursEnd | NaiveEnd:
        if protocol == "ours":
            return OursEnd(lambda data: transport.send(1, data), wait)
        return NaiveEnd(lambda obj: comm.send(obj, dest=1, tag=NAIVE_TAG), naive_poll)

    variants = [
        Variant("ours, master wait(timeout=0) tight loop", "ours", "energy"),
        Variant("ours, master back-off as run_master", "ours", "energy", backoff=True),
        Variant("ours, tight loop, worker polls without sleeping (diagnostic)", "ours", "energy", spin=True),
        Variant("naive: comm.send/comm.recv of pickled dicts", "naive", "energy"),
        Variant("ours, master wait(timeout=0) tight loop", "ours", "hessian", stream=False),
        Variant("naive: comm.send/comm.recv of pickled dicts", "naive", "hessian", stream=False),
    ]
    started = time.perf_counter()
    lat, tp = run_suite(variants, lambda v: announce(comm, v), make_end,
                        lambda: comm.recv(source=1, tag=REPORT_TAG), args)
    announce(comm, None)
    transport.close()
    text = (f"### MPI (`mpiexec -n 2`, rank 0 master, rank 1 worker)\n\n{env}\n- benchmark time "
            f"{time.perf_counter() - started:.1f} s\n\n" + suite_text("#### MPI transport", lat, tp, args))
    print(text)
    if args.write:
        write_block("mpi", text)


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def local_main(args: argparse.Namespace) -> None:
    command = " ".join(["python", *sys.argv])
    env = environment(command)
    qc = qc_payload()
    cases = build_cases(qc)
    started = time.perf_counter()
    parts = [
        f"### Local (`python benchmarks/bench_messages.py`)\n\n{env}",
        "#### Encoded sizes\n\n" + sizes_table(cases),
        f"#### Encode + decode per message (timeit, CPU time; median of {args.codec_repeats} repeats of "
        f"~{args.target * 1e3:.0f} ms)\n\n" + codec_table(cases, args.codec_repeats, args.target),
        pipe_suite(qc, args),
    ]
    parts[0] += f"\n- benchmark time {time.perf_counter() - started:.1f} s (plus start-up and the tblite runs)"
    text = "\n\n".join(parts)
    print(text)
    if args.write:
        write_block("local", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mpi", action="store_true", help="MPI transport part (run under mpiexec -n 2)")
    parser.add_argument("--write", action="store_true", help=f"put the tables into {RESULTS_FILE.name}")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (default 3)")
    parser.add_argument("--trips", type=int, default=1000, help="ping-pong round trips per repeat (default 1000)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up round trips (default 200)")
    parser.add_argument("--tasks", type=int, default=10000, help="tasks per throughput run (default 10000)")
    parser.add_argument("--window", type=int, default=16, help="tasks in flight in the throughput run (default 16)")
    parser.add_argument("--codec-repeats", type=int, default=7, help="timeit repeats for encode/decode (default 7)")
    parser.add_argument("--target", type=float, default=0.04, help="seconds per timeit repeat (default 0.04)")
    args = parser.parse_args()
    if args.mpi:
        mpi_main(args)
    else:
        local_main(args)


if __name__ == "__main__":
    main()
