"""Command line: parse, validate, choose transport, run, write, exit code.

Exit codes: 0 success; 1 a QC task failed; 2 bad input or options (one readable line, no
traceback, on every rank); 3 internal error (traceback in the log); 4 stopped early by SIGTERM or
SIGUSR1 (rerun the same command to resume); 5 the checkpoint or the output could not be written
(disk full, quota; the checkpoint keeps what could be saved: rerun to resume); 130 interrupted.

The stop-signal handlers are installed by the package's ``__init__`` when this is ``python -m
mbe_mpi`` (:func:`mbe_mpi.signals.install_early`), before a second of imports; a signal that comes
while the run is still starting stops it with exit 4 and a message, like one that comes later.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from pathlib import Path

EPILOG = """\
examples:
  python -m mbe_mpi examples/water3_gfn2.yaml                      # local worker processes
  python -m mbe_mpi plan examples/water3_gfn2.yaml --ranks 64      # dry run: tasks, predicted wall time
  python -m mbe_mpi examples/water3_gfn2.yaml --n-workers 2 -o out.json
  mpiexec -n 4 python -m mbe_mpi examples/water3_mp2_cp.yaml       # rank 0 master, 3 worker ranks

restart: a checkpoint is kept beside the output while the run is under way; rerunning the same
command resumes from it (only missing QC tasks are computed); --fresh starts over.

exit codes: 0 success, 1 a QC task failed, 2 bad input or options, 3 internal error,
            4 stopped by SIGTERM/SIGUSR1 (rerun to resume), 5 the checkpoint or the output could not be
            written (disk full?; rerun to resume), 130 interrupted (rerun to resume)
"""


def build_parser() -> argparse.ArgumentParser:
    from .usage import ArgumentParser
    from .version import __version__

    parser = ArgumentParser(
        prog="python -m mbe_mpi",
        description="Run a many-body expansion in parallel (MPI or local processes) with exactly "
        "QCManyBody's numbers. INPUT is a QCSchema ManyBodyInput JSON or a friendly JSON/YAML file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help="input file (.json, .yaml, .yml)")
    parser.add_argument("-o", "--output", metavar="OUT.json",
                        help="where to write the ManyBodyResult JSON (default: INPUT stem + .result.json, beside INPUT)")
    parser.add_argument("--n-workers", type=int, metavar="K",
                        help="local worker processes when not under mpiexec (default: usable cores)")
    parser.add_argument("--threads-per-task", type=int, metavar="N", help="threads for each QC task (default 1)")
    parser.add_argument("--memory-per-task", type=float, metavar="GiB",
                        help="memory for each QC task (default: an even share of the node per worker)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a module name, or a path to a .py file) on every rank first "
                        "(registers a site's QCEngine harness); repeatable")
    parser.add_argument("--startup-timeout", type=float, metavar="SECONDS",
                        help="seconds from the start by which MPI must be up on every rank and every worker "
                        "ready (default 120); a worker not ready by then is declared lost")
    restart = parser.add_argument_group("checkpoint and cache")
    restart.add_argument("--checkpoint", metavar="FILE",
                         help="checkpoint file (default: OUT.json's name + .checkpoint.sqlite, beside the output); "
                         "a rerun of the same command resumes from it")
    restart.add_argument("--no-checkpoint", action="store_true", default=None, help="keep no checkpoint")
    restart.add_argument("--fresh", action="store_true", default=None,
                         help="ignore (delete) an existing checkpoint and start from scratch")
    restart.add_argument("--cache-dir", metavar="DIR",
                         help="result cache shared between runs (reuses identical QC tasks, e.g. max_nbody 2 -> 3)")

    _add_scheduling_and_report_flags(parser)
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress display (default: a live bar on a terminal, a line every 30 s otherwise)")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser.add_argument("--version", action="version", version=f"mbe_mpi {__version__}")
    return parser


def _gantt_path(value: str) -> str:
    """--gantt's argument; refused up front (exit 2, before any QC work) when matplotlib is missing."""
    from .report import MATPLOTLIB_MISSING, matplotlib_available

    if not matplotlib_available():
        raise argparse.ArgumentTypeError(MATPLOTLIB_MISSING)
    return value


def _add_scheduling_and_report_flags(parser: argparse.ArgumentParser) -> None:
    schedule = parser.add_argument_group("scheduling and scratch")
    schedule.add_argument("--no-level-barrier", dest="level_barrier", action="store_false", default=None,
                          help="let the next n-body level start on workers idle at the barrier")
    schedule.add_argument("--prefetch", type=int, metavar="N", help="TASK messages a worker holds (default 2)")
    schedule.add_argument("--task-timeout", type=float, metavar="SECONDS",
                          help="kill a QC task that runs longer and report it as failed")
    schedule.add_argument("--scratch-dir", metavar="DIR",
                          help="each task runs in its own folder under DIR (node-local disk on clusters)")
    schedule.add_argument("--keep-scratch", action="store_true", default=None,
                          help="keep the tasks' scratch folders")
    report = parser.add_argument_group("timing report")
    report.add_argument("--report", metavar="REPORT.json",
                        help="write where the time went (per n-body level: wall time, tasks, mean/max task time, "
                        "worker utilisation, idle at the level barrier; master CPU; start-up), the per-task "
                        "timeline and run info as JSON")
    report.add_argument("--gantt", metavar="CHART.png", type=_gantt_path,
                        help="draw worker rank x time, one bar per task coloured by n-body level (needs matplotlib)")


def default_output_path(input_path: str) -> Path:
    path = Path(input_path)
    return path.with_name(path.stem + ".result.json")


def result_json(result) -> str:
    """The ManyBodyResult as JSON.

    QCManyBody declares its per-n-body property fields only up to 4-body; beyond that they are
    extra fields holding NumPy arrays that pydantic cannot serialise (QCManyBody's own result fails
    the same way), so those arrays are written as nested lists.
    """
    try:
        return result.model_dump_json()
    except Exception:  # pydantic's PydanticSerializationError
        import json

        import numpy as np

        return json.dumps(result.model_dump(mode="python"),
                          default=lambda value: value.tolist() if isinstance(value, np.ndarray) else str(value))


def checkpoint_path(output: Path) -> Path:
    """The default checkpoint: beside the output, so a requeued job script finds it again."""
    return output.with_name(output.stem + ".checkpoint.sqlite")


def main(argv: list[str] | None = None) -> int:
    from . import signals

    with contextlib.ExitStack() as handlers:
        # `python -m mbe_mpi` installed them before its imports; a call from Python installs them now
        stop = signals.early or handlers.enter_context(signals.stop_signals())
        try:
            return _main(sys.argv[1:] if argv is None else argv, stop)
        finally:
            mpi = sys.modules.get("mbe_mpi.transports.mpi")  # imported only when the run used MPI
            if mpi is not None:
                mpi.finalize()


def _main(argv: list[str], stop) -> int:
    if argv and argv[0] == "plan":  # the dry run: task counts and predicted wall time
        from .forecast import main as plan_main

        return plan_main(argv[1:])
    from .errors import EXIT_OK
    from .transports import launcher_rank

    args = build_parser().parse_args(argv)
    rank = launcher_rank()
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="mbe_mpi %(levelname)s: %(message)s" if rank == 0
                        else f"mbe_mpi[rank {rank}] %(levelname)s: %(message)s")
    output = Path(args.output) if args.output else default_output_path(args.input)
    written: list[int] = []
    outcome = _run(args, output, rank, stop, lambda done: written.append(_write_outputs(args, done, output)))
    if isinstance(outcome, int):
        return outcome
    if outcome is None:  # a worker rank
        return EXIT_OK
    from .run import release

    release(outcome)  # after the workers are shut down: ends the job if a lost rank would hang MPI_Finalize
    return written[0]


def _prepare(args: argparse.Namespace, output: Path):
    """What rank 0 runs to get the validated input and options: the file, then the flags over it."""
    from .files import check_writable
    from .harnesses import import_plugins
    from .inputs import load_input

    def prepare():
        check_writable(output, "-o/--output")  # before any work: the result must have somewhere to go
        for flag, path in (("--report", args.report), ("--gantt", args.gantt)):
            if path:
                check_writable(path, flag)
        import_plugins([_plugin(name) for name in args.plugin])  # first: plugins may define the input's program
        mbi, options = load_input(args.input)
        options = options.merged(
            n_workers=args.n_workers,
            threads_per_task=args.threads_per_task,
            memory_per_task=args.memory_per_task,
            plugins=tuple(_plugin(name) for name in args.plugin),
            checkpoint=False if args.no_checkpoint else args.checkpoint,
            cache_dir=args.cache_dir,
            fresh=args.fresh,
            level_barrier=args.level_barrier,
            prefetch=args.prefetch,
            task_timeout=args.task_timeout,
            scratch_dir=args.scratch_dir,
            keep_scratch=args.keep_scratch,
            startup_timeout=args.startup_timeout,
        )
        if options.checkpoint in (None, True):  # the default place: beside the output
            options = options.merged(checkpoint=str(checkpoint_path(output)))
        return mbi, options

    return prepare


def _plugin(name: str) -> str:
    """A plugin given as a path is passed on as an absolute one (workers may start elsewhere)."""
    from .harnesses import is_plugin_path

    return str(Path(name).expanduser().resolve()) if is_plugin_path(name) else name


def _run(args: argparse.Namespace, output: Path, rank: int, stop, on_outcome):
    """The run's outcome (None on a worker rank), or the exit code of what stopped it.

    ``on_outcome`` writes the output as soon as the result is there, before the workers are shut
    down and before the checkpoint is removed.
    """
    from .errors import EXIT_INTERNAL_ERROR, describe
    from .options import option_defaults
    from .signals import hand_over_interrupt

    try:
        hand_over_interrupt()  # Ctrl-C from here on is a KeyboardInterrupt that the line below handles
        from .run import RunHooks, run

        timeout = args.startup_timeout or option_defaults()["startup_timeout"]
        hooks = RunHooks(progress=not args.quiet and not args.no_progress, on_outcome=on_outcome, stop=stop,
                         mpi_start_timeout=timeout)
        return run(_prepare(args, output), hooks)
    except BaseException as exc:  # noqa: BLE001 - every way a run ends gets its exit code here
        known = describe(exc)
        if known is None and not isinstance(exc, Exception):
            raise  # SystemExit and the like
        if known is None:
            print(f"mbe_mpi: internal error on rank {rank}:\n{traceback.format_exc()}", file=sys.stderr)
            return EXIT_INTERNAL_ERROR
        if rank == 0:
            print(known[1], file=sys.stderr)
        return known[0]


def _write_outputs(args: argparse.Namespace, outcome, output: Path) -> int:
    """The result file, the optional report and chart, and the summary on stdout."""
    from .errors import EXIT_INPUT_ERROR, EXIT_OK, WriteFailed
    from .files import write_atomically
    from .report import gantt_chart, summary, write_report

    result = outcome.result
    try:
        write_atomically(output, result_json(result))
    except OSError as exc:
        raise WriteFailed(f"cannot write the result to {output} ({exc.strerror or exc})") from None
    stats = result.extras.get("mbe_mpi", {})
    written, failed = [], None
    try:
        if args.report:
            write_report(args.report, stats, outcome.timeline)
            written.append(f"  timing report written to {args.report}")
        if args.gantt:
            gantt_chart(outcome.timeline, args.gantt, n_workers=stats.get("n_workers"),
                        wall_time=stats.get("wall_time"), startup=stats.get("timing", {}).get("startup"),
                        transport=stats.get("transport"))
            written.append(f"  Gantt chart written to {args.gantt}")
    except ImportError as exc:  # matplotlib missing or broken: the message says how to install it
        failed = str(exc)
    except OSError as exc:
        failed = f"cannot write {exc.filename or 'the report'}: {exc.strerror or exc}"
    if not args.quiet:
        print("\n".join([summary(result, str(output)), *written]))
    if failed:
        print(f"mbe_mpi: error: {failed}", file=sys.stderr)
    return EXIT_INPUT_ERROR if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
