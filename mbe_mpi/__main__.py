"""Command line: parse, validate, choose transport, run, write, exit code.

Exit codes: 0 success; 1 a QC task failed; 2 bad input or options (one readable line, no
traceback, on every rank); 3 internal error (traceback in the log); 4 stopped early by SIGTERM or
SIGUSR1 (rerun the same command to resume); 130 interrupted.
"""

from __future__ import annotations

import argparse
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
            4 stopped by SIGTERM/SIGUSR1 (rerun to resume)
"""


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = argparse.ArgumentParser(
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
                        help="import MODULE on every rank first (registers a site's QCEngine harness); repeatable")
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
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    finally:
        mpi = sys.modules.get("mbe_mpi.transports.mpi")  # imported only when the run used MPI
        if mpi is not None:
            mpi.finalize()


def _main(argv: list[str]) -> int:
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
    outcome = _run(args, output, rank, lambda done: written.append(_write_outputs(args, done, output)))
    if isinstance(outcome, int):
        return outcome
    if outcome is None:  # a worker rank
        return EXIT_OK
    from .run import release

    release(outcome)  # after the workers are shut down: ends the job if a lost rank would hang MPI_Finalize
    return written[0]


def _prepare(args: argparse.Namespace, output: Path):
    """What rank 0 runs to get the validated input and options: the file, then the flags over it."""
    from .harnesses import import_plugins
    from .inputs import load_input

    def prepare():
        import_plugins(args.plugin)  # before the input is checked: plugins may define its program
        mbi, options = load_input(args.input)
        options = options.merged(
            n_workers=args.n_workers,
            threads_per_task=args.threads_per_task,
            memory_per_task=args.memory_per_task,
            plugins=tuple(args.plugin),
            checkpoint=False if args.no_checkpoint else args.checkpoint,
            cache_dir=args.cache_dir,
            fresh=args.fresh,
            level_barrier=args.level_barrier,
            prefetch=args.prefetch,
            task_timeout=args.task_timeout,
            scratch_dir=args.scratch_dir,
            keep_scratch=args.keep_scratch,
        )
        if options.checkpoint in (None, True):  # the default place: beside the output
            options = options.merged(checkpoint=str(checkpoint_path(output)))
        return mbi, options

    return prepare


def _run(args: argparse.Namespace, output: Path, rank: int, on_outcome):
    """The run's outcome (None on a worker rank), or the exit code of what stopped it.

    ``on_outcome`` writes the output as soon as the result is there, before the workers are shut down.
    """
    from .errors import (
        EXIT_INPUT_ERROR,
        EXIT_INTERNAL_ERROR,
        EXIT_STOPPED,
        EXIT_TASK_FAILED,
        InputError,
        RunStopped,
        TaskFailedError,
    )

    def error(text: str, code: int) -> int:
        if rank == 0:
            print(text, file=sys.stderr)
        return code

    try:
        from .run import run

        return run(_prepare(args, output), progress=not args.quiet and not args.no_progress, on_outcome=on_outcome)
    except InputError as exc:
        return error(f"mbe_mpi: error: {exc}", EXIT_INPUT_ERROR)
    except TaskFailedError as exc:
        return error(f"mbe_mpi: error: {exc}", EXIT_TASK_FAILED)
    except RunStopped as exc:
        return error(f"mbe_mpi: {exc}", EXIT_STOPPED)
    except KeyboardInterrupt:
        return 130
    except Exception:
        print(f"mbe_mpi: internal error on rank {rank}:\n{traceback.format_exc()}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def _write_outputs(args: argparse.Namespace, outcome, output: Path) -> int:
    """The result file, the optional report and chart, and the summary on stdout."""
    from .errors import EXIT_INPUT_ERROR, EXIT_OK
    from .report import gantt_chart, summary, write_report

    result = outcome.result
    output.write_text(result_json(result))
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
