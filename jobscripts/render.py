#!/usr/bin/env python3
"""Render a job script from one of the templates beside this file, with your resources and defaults filled in.

    python jobscripts/render.py slurm_mpiexec --ranks 64 --threads 2 --time 04:00:00 --input water.yaml > job.sh
    python jobscripts/render.py slurm_srun --nodes 2 --ranks 128 --memory 3.5 --partition compute -o job.sh
    python jobscripts/render.py pbs --nodes 2 --ranks 64 --threads 2 --time 12:00:00 --input water.yaml -o job.sh
    python jobscripts/render.py slurm_mpiexec --set PLUGINS=my_site_harness --extra-args "--fresh -v"

The templates stay the single source: this only rewrites their ``#SBATCH``/``#PBS`` header lines and the
defaults in their parameter block (``NAME=${NAME:-default}``); everything else is copied unchanged, so a
rendered script still takes every parameter from the environment too. Each rewrite must match exactly one line
of the template, so a template that changed shape is reported instead of silently rendered wrong.
Standard library only; mbe_mpi need not be importable (if it is, ``--extra-args`` are checked against its flags).
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = {"slurm_mpiexec": "slurm_mpiexec.sh", "slurm_srun": "slurm_srun.sh", "pbs": "pbs.sh"}
MEMORY_HEADROOM = 0.85  # the QC program gets 85% of a task's allocation; the rest is for the Python worker

_PARAMETER = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)=\$\{(?P=name)(?P<op>:?-)(?P<default>.*?)\}(?P<comment>\s+#.*)?$")
_SAFE = re.compile(r"^[A-Za-z0-9_./:@%+,=~-]*$")
_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<h>\d+):(?P<m>[0-5]\d):(?P<s>[0-5]\d)$")


class RenderError(ValueError):
    """A parameter or template problem, reported as one line."""


def template_path(name: str) -> Path:
    if name not in TEMPLATES:
        raise RenderError(f"unknown template {name!r}; choose one of: {', '.join(TEMPLATES)}")
    return HERE / TEMPLATES[name]


def parse_time(value: str) -> int:
    """``[D-]HH:MM:SS`` -> seconds (SLURM and PBS read a bare number differently, so it is refused)."""
    match = _TIME.match(value)
    if not match:
        raise RenderError(f"--time must look like HH:MM:SS or D-HH:MM:SS, got {value!r}")
    days = int(match["days"] or 0)
    return ((days * 24 + int(match["h"])) * 60 + int(match["m"])) * 60 + int(match["s"])


def pbs_time(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def shell_word(value: str) -> str:
    """``value`` as the default word of ``${NAME:-word}``: bare when safe, else double-quoted."""
    if "\n" in value or "\r" in value:
        raise RenderError(f"a value cannot contain a line break: {value!r}")
    if _SAFE.match(value):
        return value
    escaped = re.sub(r'([\\"$`])', r"\\\1", value)
    return f'"{escaped}"'


def parameters(text: str) -> dict[str, str]:
    """The template's parameter block: NAME -> default as written."""
    found = {}
    for line in text.splitlines():
        match = _PARAMETER.match(line)
        if match:
            found[match["name"]] = match["default"]
    return found


def set_parameter(text: str, name: str, value: str) -> str:
    lines = text.split("\n")
    hits = [i for i, line in enumerate(lines) if (m := _PARAMETER.match(line)) and m["name"] == name]
    if len(hits) != 1:
        known = ", ".join(sorted(parameters(text)))
        raise RenderError(f"the template has no parameter {name!r}; its parameters are: {known}")
    line = lines[hits[0]]
    match = _PARAMETER.match(line)
    new = f"{name}=${{{name}{match['op']}{shell_word(value)}}}"
    if match["comment"]:  # keep the comment, in its column when there is room
        comment = match["comment"].lstrip()
        column = len(line) - len(comment)
        new = f"{new:<{column}}{comment}" if len(new) < column else f"{new}  {comment}"
    lines[hits[0]] = new
    return "\n".join(lines)


def set_directive(text: str, pattern: str, line: str) -> str:
    """Replace the one line matching ``pattern`` (a regex for a whole line) by ``line``."""
    regex = re.compile(pattern)
    lines = text.split("\n")
    hits = [i for i, existing in enumerate(lines) if regex.fullmatch(existing)]
    if len(hits) != 1:
        raise RenderError(f"expected one template line matching {pattern!r}, found {len(hits)}")
    lines[hits[0]] = line
    return "\n".join(lines)


def _directive_value(text: str, pattern: str) -> str:
    for line in text.split("\n"):
        match = re.fullmatch(pattern, line)
        if match:
            return match.group(1)
    raise RenderError(f"no template line matches {pattern!r}")


def _check_extra_args(extra: str) -> None:
    """Refuse mbe_mpi flags that do not exist, when mbe_mpi can be imported here."""
    try:
        from mbe_mpi.__main__ import build_parser
    except ImportError:
        return
    import contextlib
    import io

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(["input.yaml", *shlex.split(extra)])
    except SystemExit:
        message = stderr.getvalue().strip().splitlines()
        raise RenderError(f"--extra-args {extra!r}: {message[-1] if message else 'not valid mbe_mpi flags'}") from None


def _render_slurm(text: str, args: argparse.Namespace) -> str:
    if args.ranks is not None:
        text = set_directive(text, r"#SBATCH --ntasks=\S+", f"#SBATCH --ntasks={args.ranks}")
    if args.threads is not None:
        text = set_directive(text, r"#SBATCH --cpus-per-task=\S+", f"#SBATCH --cpus-per-task={args.threads}")
    if args.time is not None:
        parse_time(args.time)
        text = set_directive(text, r"#SBATCH --time=\S+", f"#SBATCH --time={args.time}")
    if args.nodes is not None:
        text = set_directive(text, r"##?SBATCH --nodes=\S+", f"#SBATCH --nodes={args.nodes}")
    if args.partition is not None:
        text = set_directive(text, r"##?SBATCH --partition=\S+", f"#SBATCH --partition={args.partition}")
    if args.account is not None:
        text = set_directive(text, r"##?SBATCH --account=\S+", f"#SBATCH --account={args.account}")
    if args.job_name is not None:
        text = set_directive(text, r"#SBATCH --job-name=\S+", f"#SBATCH --job-name={args.job_name}")
    if args.signal_seconds is not None:
        prefix = _directive_value(text, r"#SBATCH --signal=(\S+)@\d+")
        text = set_directive(text, r"#SBATCH --signal=\S+@\d+", f"#SBATCH --signal={prefix}@{args.signal_seconds}")
    if args.memory is not None:
        threads = args.threads or int(_directive_value(text, r"#SBATCH --cpus-per-task=(\d+)"))
        per_cpu = math.ceil(args.memory * 1024 / (MEMORY_HEADROOM * threads))
        text = set_directive(text, r"#SBATCH --mem-per-cpu=\S+", f"#SBATCH --mem-per-cpu={per_cpu}M")
    if args.auto_requeue:
        text = set_parameter(text, "AUTO_REQUEUE", "1")
    if args.auto_resubmit is not None:
        raise RenderError("--auto-resubmit is for the pbs template; SLURM templates use --auto-requeue")
    return text


def _render_pbs(text: str, args: argparse.Namespace) -> str:
    select = r"#PBS -l select=(\d+):ncpus=(\d+):mpiprocs=(\d+):ompthreads=(\d+)(?::mem=\S+)?"
    match = re.search(r"^" + select + r"$", text, flags=re.MULTILINE)
    if not match:
        raise RenderError("the pbs template has no '#PBS -l select=N:ncpus=..:mpiprocs=..:ompthreads=..' line")
    nodes, _, per_node, threads = (int(v) for v in match.groups())
    nodes = args.nodes if args.nodes is not None else nodes
    threads = args.threads if args.threads is not None else threads
    if args.ranks is not None:
        if args.ranks % nodes:
            raise RenderError(f"--ranks {args.ranks} do not divide evenly over --nodes {nodes} (PBS chunks are equal)")
        per_node = args.ranks // nodes
    chunk = f"#PBS -l select={nodes}:ncpus={per_node * threads}:mpiprocs={per_node}:ompthreads={threads}"
    if args.memory is not None:
        chunk += f":mem={math.ceil(per_node * args.memory / MEMORY_HEADROOM)}gb"
    text = set_directive(text, select, chunk)
    if args.threads is not None:
        text = set_parameter(text, "THREADS_PER_TASK", str(threads))
    if args.time is not None:
        text = set_directive(text, r"#PBS -l walltime=\S+", f"#PBS -l walltime={pbs_time(parse_time(args.time))}")
    if args.partition is not None:
        text = set_directive(text, r"##?PBS -q \S+", f"#PBS -q {args.partition}")
    if args.account is not None:
        text = set_directive(text, r"##?PBS -A \S+", f"#PBS -A {args.account}")
    if args.job_name is not None:
        text = set_directive(text, r"#PBS -N \S+", f"#PBS -N {args.job_name}")
    if args.signal_seconds is not None:
        text = set_parameter(text, "STOP_BEFORE", str(args.signal_seconds))
    if args.auto_requeue:
        raise RenderError("--auto-requeue is for the SLURM templates; the pbs template uses --auto-resubmit SCRIPT")
    if args.auto_resubmit is not None:
        text = set_parameter(text, "AUTO_RESUBMIT", "1")
        text = set_parameter(text, "JOB_SCRIPT", args.auto_resubmit)
    return text


def render(template: str, args: argparse.Namespace, argv: list[str] | None = None) -> str:
    """The rendered script text for ``template`` (a key of TEMPLATES) and the parsed options ``args``."""
    text = template_path(template).read_text()
    for name in ("ranks", "threads", "nodes", "signal_seconds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise RenderError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.ranks is not None and args.ranks < 2:
        raise RenderError("--ranks must be at least 2: rank 0 is the master and does no QC, ranks 1.. are workers")
    if args.memory is not None and not args.memory > 0:
        raise RenderError(f"--memory must be a positive number of GiB, got {args.memory}")
    text = _render_pbs(text, args) if template == "pbs" else _render_slurm(text, args)

    defaults = {"INPUT": args.input, "OUTPUT": args.output, "CACHE_DIR": args.cache_dir,
                "SCRATCH_DIR": args.scratch_dir, "PYTHON": args.python, "EXTRA_ARGS": args.extra_args,
                "PLUGINS": " ".join(args.plugin) if args.plugin else None,
                "MEMORY_PER_TASK": None if args.memory is None else f"{args.memory:g}"}
    for item in args.set or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise RenderError(f"--set needs NAME=VALUE, got {item!r}")
        defaults[name] = value
    if defaults.get("EXTRA_ARGS"):
        _check_extra_args(defaults["EXTRA_ARGS"])
    for name, value in defaults.items():
        if value is not None:
            text = set_parameter(text, name, value)

    lines = text.split("\n")
    origin = shlex.join(["python", "jobscripts/render.py", *(argv or [template])]).replace("\n", " ")
    lines.insert(1, f"# Rendered from jobscripts/{TEMPLATES[template]} by: {origin}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python jobscripts/render.py",
        description="Render an mbe_mpi job script from a template (header resources and parameter defaults).",
        epilog="Every parameter of the rendered script can still be overridden from the environment at submission.",
    )
    parser.add_argument("template", choices=sorted(TEMPLATES), help="which template")
    parser.add_argument("-o", "--out", metavar="FILE", help="write here (made executable) instead of stdout")
    res = parser.add_argument_group("resources (header lines)")
    res.add_argument("--ranks", type=int, metavar="N", help="MPI ranks: 1 master + N-1 workers")
    res.add_argument("--threads", type=int, metavar="T", help="threads per QC task (cpus-per-task / ompthreads)")
    res.add_argument("--nodes", type=int, metavar="K", help="nodes (PBS: chunks; ranks must divide evenly)")
    res.add_argument("--time", metavar="HH:MM:SS", help="wall-time limit ([D-]HH:MM:SS)")
    res.add_argument("--memory", type=float, metavar="GiB",
                     help=f"memory per QC task; the allocation per task is this / {MEMORY_HEADROOM}")
    res.add_argument("--job-name", metavar="NAME")
    res.add_argument("--partition", "--queue", dest="partition", metavar="NAME", help="SLURM partition / PBS queue")
    res.add_argument("--account", metavar="NAME", help="account/project to charge")
    res.add_argument("--signal-seconds", type=int, metavar="S",
                     help="ask for the clean stop S seconds before the time limit (default 120)")
    run = parser.add_argument_group("run (parameter defaults)")
    run.add_argument("--input", metavar="FILE", help="INPUT: the MBE input file")
    run.add_argument("--output", metavar="FILE", help="OUTPUT: the result JSON (the checkpoint goes beside it)")
    run.add_argument("--cache-dir", metavar="DIR", help="CACHE_DIR: result cache shared between runs")
    run.add_argument("--scratch-dir", metavar="DIR", help="SCRATCH_DIR: node-local scratch (exported as TMPDIR)")
    run.add_argument("--plugin", action="append", metavar="MODULE", help="PLUGINS: repeatable")
    run.add_argument("--extra-args", metavar="FLAGS", help='EXTRA_ARGS: further mbe_mpi flags, e.g. "--fresh -v"')
    run.add_argument("--python", metavar="CMD", help="PYTHON: the Python that has mbe_mpi")
    run.add_argument("--auto-requeue", action="store_true", help="SLURM: AUTO_REQUEUE=1 (requeue after exit code 4)")
    run.add_argument("--auto-resubmit", metavar="SCRIPT",
                     help="PBS: AUTO_RESUBMIT=1 and JOB_SCRIPT=SCRIPT (qsub SCRIPT again after exit code 4)")
    run.add_argument("--set", action="append", metavar="NAME=VALUE", help="any other parameter default; repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        text = render(args.template, args, argv)
    except RenderError as exc:
        print(f"render.py: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        path = Path(args.out)
        path.write_text(text)
        path.chmod(path.stat().st_mode | 0o111)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
