"""Job script templates (jobscripts/), their render helper, and the HPC guide (docs/hpc.md).

No scheduler is needed: the scripts run under plain bash with SLURM_*/PBS_* variables set by the test, either
in dry-run mode (MBE_MPI_DRY_RUN=1 prints the launch command, which is parsed with mbe_mpi's own argument
parser) or with fake `mpiexec`/`srun`/`scontrol`/`qsub` programs first on PATH that record what they get.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBSCRIPTS = ROOT / "jobscripts"
HPC_GUIDE = ROOT / "docs" / "hpc.md"
SCRIPTS = ("slurm_mpiexec.sh", "slurm_srun.sh", "pbs.sh")
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="the job scripts need bash")


# --- helpers ------------------------------------------------------------------------------------------


def mbe_parser():
    from mbe_mpi.__main__ import build_parser

    return build_parser()


def parse_mbe_args(args: list[str]):
    """Parse an mbe_mpi argument list exactly as `python -m mbe_mpi` would; fail the test on any unknown flag."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return mbe_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"mbe_mpi refuses {args!r}: {stderr.getvalue().strip()}")


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no SLURM_*/PBS_*/OMP_* from the machine running the tests."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C"}
    env.update(extra)
    return env


def run_script(script: Path | str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(script)], cwd=tmp_path, env=base_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=20)


@dataclasses.dataclass
class DryRun:
    launcher: list[str]  # everything before the Python command
    python: list[str]
    args: list[str]      # the mbe_mpi argument list
    stdout: str


def dry_run(script: Path | str, tmp_path: Path, python: str = "python", **env: str) -> DryRun:
    """Run a template in dry-run mode and split the printed launch command into its parts."""
    proc = run_script(script, tmp_path, MBE_MPI_DRY_RUN="1", PYTHON=python, **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    commands = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]
    launches = [words for words in commands if "mbe_mpi" in words]
    assert len(launches) == 1, proc.stdout
    words = launches[0]
    at = next(i for i in range(len(words) - 1) if words[i : i + 2] == ["-m", "mbe_mpi"])
    n_python = len(shlex.split(python))
    assert words[at - n_python : at] == shlex.split(python)
    return DryRun(words[: at - n_python], words[at - n_python : at], words[at + 2 :], proc.stdout)


def launch_commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def contains(words: list[str], part: list[str]) -> bool:
    return any(words[i : i + len(part)] == part for i in range(len(words) - len(part) + 1))


def slurm_env(tasks: int, cpus: int, **extra: str) -> dict[str, str]:
    return {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": str(tasks), "SLURM_CPUS_PER_TASK": str(cpus),
            "SLURM_JOB_NUM_NODES": "1", **extra}


def pbs_env(tmp_path: Path, ranks: int, threads: int, **extra: str) -> dict[str, str]:
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("".join(f"node{i // 32:03d}\n" for i in range(ranks)))
    return {"PBS_JOBID": "4242.pbs", "PBS_NODEFILE": str(nodefile), "PBS_O_WORKDIR": str(tmp_path),
            "OMP_NUM_THREADS": str(threads), **extra}


def scheduler_env(script: str, tmp_path: Path, ranks: int, threads: int, **extra: str) -> dict[str, str]:
    if script == "pbs.sh":
        return pbs_env(tmp_path, ranks, threads, **extra)
    return slurm_env(ranks, threads, **extra)


def load_render():
    spec = importlib.util.spec_from_file_location("jobscripts_render", JOBSCRIPTS / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_module = load_render()


def render(template: str, *argv: str) -> str:
    args = render_module.build_parser().parse_args([template, *argv])
    return render_module.render(template, args, [template, *argv])


def header_values(text: str, prefix: str) -> dict[str, str]:
    """``#SBATCH --name=value`` lines as {name: value}."""
    values = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(prefix)} --([\w-]+)=(\S+)", line)
        if match:
            values[match[1]] = match[2]
    return values


# --- syntax and the command each script runs ------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_bash_syntax(script):
    proc = subprocess.run([BASH, "-n", str(JOBSCRIPTS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_defaults_run_the_documented_command(script, tmp_path):
    run = dry_run(JOBSCRIPTS / script, tmp_path, **scheduler_env(script, tmp_path, ranks=16, threads=1))
    parsed = parse_mbe_args(run.args)
    assert parsed.input == "input.yaml"
    assert parsed.output is None  # mbe_mpi's default: beside the input, with the checkpoint beside it
    assert parsed.threads_per_task == 1
    assert parsed.memory_per_task is None and parsed.cache_dir is None and parsed.plugin == []
    assert not parsed.fresh and not parsed.no_checkpoint and parsed.checkpoint is None
    assert "OMP_NUM_THREADS=1" in run.stdout
    assert "input.result.checkpoint.sqlite" in run.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_parameter_reaches_the_command(script, tmp_path):
    env = scheduler_env(script, tmp_path, ranks=64, threads=2, SLURM_JOB_NUM_NODES="2", SLURM_MEM_PER_CPU="2048")
    if script == "pbs.sh":
        env["MEMORY_PER_TASK"] = "3.4"
    env.update(INPUT='inputs/my "water" $64.yaml', OUTPUT="results/water64.json", CACHE_DIR="/shared/mbe cache",
               SCRATCH_DIR=str(tmp_path / "scratch"), PLUGINS="site_harness other.module",
               EXTRA_ARGS="--fresh -v --no-progress")
    python = "apptainer exec mbe.sif python3"
    run = dry_run(JOBSCRIPTS / script, tmp_path, python=python, **env)
    parsed = parse_mbe_args(run.args)
    assert parsed.input == 'inputs/my "water" $64.yaml'
    assert parsed.output == "results/water64.json"
    assert parsed.threads_per_task == 2
    assert parsed.memory_per_task == pytest.approx(3.4)  # SLURM: 0.85 x 2048 MB x 2 cpus
    assert parsed.cache_dir == "/shared/mbe cache"
    assert parsed.plugin == ["site_harness", "other.module"]
    assert parsed.fresh and parsed.verbose == 1 and parsed.no_progress
    assert run.python == shlex.split(python)
    assert "OMP_NUM_THREADS=2" in run.stdout
    assert "results/water64.checkpoint.sqlite" in run.stdout
    if script == "slurm_mpiexec.sh":
        assert contains(run.launcher, ["mpiexec", "-disable-auto-cleanup", "-n", "64"])
        # hydra's per-node proxy must not inherit --cpus-per-task, or all ranks of a node share its cores
        assert contains(run.launcher, ["-u", "SLURM_CPUS_PER_TASK"])
    elif script == "slurm_srun.sh":
        assert run.launcher[0] == "srun"
        for flag in ("--mpi=pmi2", "--ntasks=64", "--cpus-per-task=2", "--kill-on-bad-exit=0"):
            assert flag in run.launcher
    else:
        assert run.launcher == ["mpiexec", "-disable-auto-cleanup", "-n", "64"]
    mkdirs = [words for words in launch_commands(run.stdout) if "mkdir" in words]
    assert mkdirs and mkdirs[0][-1] == str(tmp_path / "scratch")
    if script != "pbs.sh":  # SLURM, 2 nodes: created on every node
        assert mkdirs[0][0] == "srun" and "--ntasks-per-node=1" in mkdirs[0]


def test_mbe_mpi_flags_in_the_scripts_exist():
    """Static check of every flag the scripts can add (dry runs only exercise the branches taken)."""
    known = set(mbe_parser()._option_string_actions)
    for script in SCRIPTS:
        lines = [line for line in (JOBSCRIPTS / script).read_text().splitlines() if "cmd+=(" in line]
        assert lines, script
        for line in lines:
            for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line.split("cmd+=(", 1)[1]):
                assert flag in known, f"{script} passes {flag}, which python -m mbe_mpi does not know"


@pytest.mark.parametrize("path", [JOBSCRIPTS / "README.md", HPC_GUIDE], ids=lambda p: p.name)
def test_documented_commands_parse(path):
    """Every `python -m mbe_mpi ...` line in the code blocks of the docs uses only existing flags."""
    text = path.read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)
    found = 0
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if "-m mbe_mpi" not in line:
                continue
            rest = line.split("-m mbe_mpi", 1)[1]
            rest = re.split(r"\s(?:#|&&|\||;|>)", rest)[0]
            rest = re.sub(r"\$\{?\w+\}?", "2", rest)
            parse_mbe_args(shlex.split(rest))
            found += 1
    assert found, f"no python -m mbe_mpi command in {path.name}"


def test_slurm_headers():
    mpiexec = (JOBSCRIPTS / "slurm_mpiexec.sh").read_text()
    srun = (JOBSCRIPTS / "slurm_srun.sh").read_text()
    for text in (mpiexec, srun):
        assert "#SBATCH --requeue" in text.splitlines()
        assert 'export OMP_NUM_THREADS="$THREADS_PER_TASK"' in text
        assert re.search(r"^THREADS_PER_TASK=\$\{THREADS_PER_TASK:-\$\{SLURM_CPUS_PER_TASK:-1\}\}", text, re.M)
        assert re.search(r"^trap 'forward TERM' TERM$", text, re.M)
        assert re.search(r"^trap 'forward USR1' USR1$", text, re.M)
    # mpiexec: only the batch shell is signalled (B:), and it forwards; srun: SLURM signals every task itself
    assert re.search(r"^#SBATCH --signal=B:TERM@\d+$", mpiexec, re.M)
    assert re.search(r"^#SBATCH --signal=TERM@\d+$", srun, re.M)


def test_pbs_header():
    text = (JOBSCRIPTS / "pbs.sh").read_text()
    assert re.search(r"^#PBS -l select=\d+:ncpus=\d+:mpiprocs=\d+:ompthreads=\d+$", text, re.M)
    assert re.search(r"^#PBS -l walltime=\d\d:\d\d:\d\d$", text, re.M)
    assert '[ -n "${PBS_O_WORKDIR:-}" ] && cd "$PBS_O_WORKDIR"' in text


# --- signals, exit codes, requeue (fake launchers) ------------------------------------------------------

FAKE_LAUNCHER = """#!/bin/bash
# A stand-in for mpiexec/srun: records its arguments and environment, then either exits with $FAKE_EXIT at once
# or waits, and on TERM/USR1 records the signal and exits 4 like mbe_mpi's clean stop.
trap 'echo TERM >> "$FAKE_DIR/signals"; kill $sleeper 2>/dev/null; exit 4' TERM
trap 'echo USR1 >> "$FAKE_DIR/signals"; kill $sleeper 2>/dev/null; exit 4' USR1
printf '%s\\n' "$@" > "$FAKE_DIR/args.$(basename "$0")"
{ echo "OMP_NUM_THREADS=${OMP_NUM_THREADS-unset}"; echo "TMPDIR=${TMPDIR-unset}";
  echo "SLURM_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK-unset}"; } > "$FAKE_DIR/env.$(basename "$0")"
[ -n "$FAKE_EXIT" ] && exit "$FAKE_EXIT"
sleep 20 > /dev/null 2>&1 &
sleeper=$!
touch "$FAKE_DIR/started"
wait $sleeper
exit 0
"""

FAKE_RECORDER = """#!/bin/bash
echo "$@" "${MBE_MPI_RESUBMITS:+resubmits=$MBE_MPI_RESUBMITS}" >> "$FAKE_DIR/$(basename "$0")"
"""


@pytest.fixture
def fakes(tmp_path):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, text in (("mpiexec", FAKE_LAUNCHER), ("srun", FAKE_LAUNCHER), ("scontrol", FAKE_RECORDER),
                       ("qsub", FAKE_RECORDER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "FAKE_DIR": str(tmp_path)}


def start(script: str, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen:
    log = open(tmp_path / "job.log", "w")  # a file, not a pipe: nothing can keep the test waiting on it
    proc = subprocess.Popen([BASH, str(JOBSCRIPTS / script)], cwd=tmp_path, env=base_env(tmp_path, **env),
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the fake launcher did not start: {(path.parent / 'job.log').read_text()}")
        time.sleep(0.01)


def finish(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize(("script", "launcher", "sent", "forwarded"), [
    ("slurm_mpiexec.sh", "mpiexec", signal.SIGTERM, "TERM"),  # hydra forwards TERM to every rank
    ("slurm_mpiexec.sh", "mpiexec", signal.SIGUSR1, "TERM"),
    ("slurm_srun.sh", "srun", signal.SIGTERM, "USR1"),  # srun would SIGKILL every task on TERM; it forwards USR1
    ("pbs.sh", "mpiexec", signal.SIGTERM, "TERM"),
])
def test_signal_to_the_batch_shell_is_forwarded(script, launcher, sent, forwarded, tmp_path, fakes):
    env = {**fakes, **scheduler_env(script, tmp_path, ranks=4, threads=2), "SCRATCH_DIR": str(tmp_path / "scr"),
           "WALLTIME": "10:00:00"}  # PBS: the stop timer is started, and must be cleaned up
    proc = start(script, tmp_path, env)
    wait_for(tmp_path / "started", proc)
    proc.send_signal(sent)
    assert finish(proc) == 4  # mbe_mpi's "stopped early, resumable" passes through
    assert read(tmp_path / "signals") == f"{forwarded}\n"  # FORWARD_SIGNAL, whichever signal the shell got
    log = read(tmp_path / "job.log")
    assert f"received {sent.name[3:]}" in log and "rerun the same command" in log
    # the launcher saw the documented command and environment
    args = read(tmp_path / f"args.{launcher}").splitlines()
    at = args.index("mbe_mpi")
    parsed = parse_mbe_args(args[at + 1 :])
    assert parsed.threads_per_task == 2
    launched_env = read(tmp_path / f"env.{launcher}")
    assert "OMP_NUM_THREADS=2" in launched_env and f"TMPDIR={tmp_path / 'scr'}" in launched_env
    if launcher == "mpiexec" and script != "pbs.sh":
        assert "SLURM_CPUS_PER_TASK=unset" in launched_env
    assert not (tmp_path / "scontrol").exists() and not (tmp_path / "qsub").exists()  # not opted in


def test_auto_requeue_after_a_clean_stop(tmp_path, fakes):
    env = {**fakes, **slurm_env(4, 1), "AUTO_REQUEUE": "1", "FAKE_EXIT": "4"}
    assert finish(start("slurm_mpiexec.sh", tmp_path, env)) == 4
    assert read(tmp_path / "scontrol").split() == ["requeue", "4242"]


def test_auto_requeue_stops_after_max_requeues(tmp_path, fakes):
    env = {**fakes, **slurm_env(4, 1), "AUTO_REQUEUE": "1", "FAKE_EXIT": "4", "SLURM_RESTART_COUNT": "3",
           "MAX_REQUEUES": "3"}
    assert finish(start("slurm_srun.sh", tmp_path, env)) == 4
    assert not (tmp_path / "scontrol").exists()
    assert "not again" in read(tmp_path / "job.log")


@pytest.mark.parametrize("code", [0, 1, 2])
def test_other_exit_codes_pass_through_without_requeue(code, tmp_path, fakes):
    env = {**fakes, **slurm_env(4, 1), "AUTO_REQUEUE": "1", "FAKE_EXIT": str(code)}
    assert finish(start("slurm_mpiexec.sh", tmp_path, env)) == code
    assert not (tmp_path / "scontrol").exists()


def test_pbs_stops_before_the_walltime_and_resubmits(tmp_path, fakes):
    """No signal from outside: the script's own timer asks for the clean stop STOP_BEFORE s before the walltime."""
    env = {**fakes, **pbs_env(tmp_path, 4, 1), "WALLTIME": "00:00:03", "STOP_BEFORE": "2", "AUTO_RESUBMIT": "1",
           "JOB_SCRIPT": "job.sh", "MBE_MPI_RESUBMITS": "1"}
    began = time.monotonic()
    assert finish(start("pbs.sh", tmp_path, env)) == 4
    assert time.monotonic() - began < 4
    assert read(tmp_path / "signals") == "TERM\n"
    assert read(tmp_path / "qsub").split() == ["-V", "job.sh", "resubmits=2"]


def test_pbs_resubmit_needs_the_script_path(tmp_path, fakes):
    env = {**fakes, **pbs_env(tmp_path, 4, 1), "AUTO_RESUBMIT": "1", "FAKE_EXIT": "4"}
    assert finish(start("pbs.sh", tmp_path, env)) == 4
    assert not (tmp_path / "qsub").exists()
    assert "needs JOB_SCRIPT" in read(tmp_path / "job.log")


# --- render.py -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["slurm_mpiexec", "slurm_srun"])
def test_render_slurm(template, tmp_path):
    text = render(template, "--ranks", "64", "--threads", "2", "--time", "04:00:00", "--input", "water.yaml",
                  "--nodes", "2", "--partition", "compute", "--account", "chem42", "--memory", "3.5",
                  "--signal-seconds", "300", "--cache-dir", "~/mbe cache", "--plugin", "site_a",
                  "--extra-args", "--no-progress -v", "--auto-requeue")
    headers = header_values(text, "#SBATCH")
    assert headers["ntasks"] == "64" and headers["cpus-per-task"] == "2" and headers["time"] == "04:00:00"
    assert headers["nodes"] == "2" and headers["partition"] == "compute" and headers["account"] == "chem42"
    assert headers["mem-per-cpu"] == "2109M"  # 3.5 GiB / 0.85 over 2 cpus
    assert headers["signal"].endswith("@300")
    assert headers["signal"].startswith("B:") == (template == "slurm_mpiexec")
    script = tmp_path / "job.sh"
    script.write_text(text)
    assert subprocess.run([BASH, "-n", str(script)]).returncode == 0
    # run it the way SLURM would, with the environment its header asks for
    run = dry_run(script, tmp_path, **slurm_env(int(headers["ntasks"]), int(headers["cpus-per-task"])))
    parsed = parse_mbe_args(run.args)
    assert parsed.input == "water.yaml" and parsed.threads_per_task == 2 and parsed.memory_per_task == 3.5
    assert parsed.cache_dir == "~/mbe cache" and parsed.plugin == ["site_a"] and parsed.no_progress
    assert "AUTO_REQUEUE=${AUTO_REQUEUE:-1}" in text
    # still overridable from the environment
    again = dry_run(script, tmp_path, **slurm_env(64, 2), INPUT="other.yaml")
    assert again.args[0] == "other.yaml"


def test_render_pbs(tmp_path):
    text = render("pbs", "--nodes", "2", "--ranks", "64", "--threads", "2", "--time", "1-04:00:00",
                  "--memory", "3", "--queue", "workq", "--signal-seconds", "300", "--auto-resubmit", "job.sh",
                  "--input", "water.yaml", "--output", "out/water.json")
    assert "#PBS -l select=2:ncpus=64:mpiprocs=32:ompthreads=2:mem=113gb" in text.splitlines()
    assert "#PBS -l walltime=28:00:00" in text.splitlines()
    assert "#PBS -q workq" in text.splitlines()
    script = tmp_path / "job.sh"
    script.write_text(text)
    assert subprocess.run([BASH, "-n", str(script)]).returncode == 0
    run = dry_run(script, tmp_path, **pbs_env(tmp_path, 64, 2))
    assert run.launcher == ["mpiexec", "-disable-auto-cleanup", "-n", "64"]
    parsed = parse_mbe_args(run.args)
    assert parsed.input == "water.yaml" and parsed.output == "out/water.json"
    assert parsed.threads_per_task == 2 and parsed.memory_per_task == 3
    for line in ("STOP_BEFORE=${STOP_BEFORE:-300}", "AUTO_RESUBMIT=${AUTO_RESUBMIT:-1}",
                 "JOB_SCRIPT=${JOB_SCRIPT:-job.sh}"):
        assert line in text


def test_render_quotes_awkward_values(tmp_path):
    awkward = 'my "inputs"/$HOME `x` \\ water.yaml'
    script = tmp_path / "job.sh"
    script.write_text(render("slurm_srun", "--input", awkward, "--set", "SRUN_MPI=pmix"))
    run = dry_run(script, tmp_path, **slurm_env(8, 1))
    assert run.args[0] == awkward
    assert "--mpi=pmix" in run.launcher


@pytest.mark.parametrize(("argv", "message"), [
    (["pbs", "--nodes", "2", "--ranks", "3"], "divide"),
    (["slurm_mpiexec", "--ranks", "1"], "at least 2"),
    (["slurm_mpiexec", "--time", "90"], "HH:MM:SS"),
    (["slurm_mpiexec", "--set", "NOT_A_PARAMETER=1"], "no parameter"),
    (["slurm_mpiexec", "--extra-args=--not-an-mbe-mpi-flag"], "unrecognized arguments"),
    (["slurm_srun", "--auto-resubmit", "job.sh"], "pbs template"),
    (["pbs", "--auto-requeue"], "SLURM templates"),
])
def test_render_refuses(argv, message):
    args = render_module.build_parser().parse_args(argv)
    with pytest.raises(render_module.RenderError, match=message):
        render_module.render(argv[0], args, argv)


def test_render_command_line_writes_an_executable(tmp_path, capsys):
    out = tmp_path / "job.sh"
    assert render_module.main(["slurm_mpiexec", "--ranks", "8", "--input", "water.yaml", "-o", str(out)]) == 0
    assert os.access(out, os.X_OK)
    assert "#SBATCH --ntasks=8" in out.read_text().splitlines()
    assert render_module.main(["pbs", "--threads", "4"]) == 0
    assert "ompthreads=4" in capsys.readouterr().out
    assert render_module.main(["pbs", "--ranks", "1"]) == 2
    assert "render.py: error:" in capsys.readouterr().err


# --- docs ---------------------------------------------------------------------------------------------


def _option_cells() -> dict[str, list[str]]:
    """The rows of docs/hpc.md's option table: option name -> its cells (flag, default, advice)."""
    rows = {}
    for line in HPC_GUIDE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def _option_rows() -> dict[str, str]:
    """The rows of docs/hpc.md's option table: option name -> its flag cell."""
    return {name: cells[0] for name, cells in _option_cells().items()}


def test_hpc_guide_explains_every_execution_option():
    from mbe_mpi.options import ExecutionOptions

    fields = list(ExecutionOptions.model_fields)
    text = HPC_GUIDE.read_text()
    rows = _option_rows()
    missing = [name for name in fields if name not in rows]
    assert not missing, f"docs/hpc.md's option table lacks {missing}"
    unknown = [name for name in rows if name not in fields]
    assert not unknown, f"docs/hpc.md's option table lists options that do not exist: {unknown}"
    for name in fields:
        assert text.count(f"`{name}`") >= 1


def test_hpc_guide_option_flags_match_the_parser():
    """The flag column names real flags, and every flag of an option is named in its row."""
    from mbe_mpi.options import ExecutionOptions

    known = set(mbe_parser()._option_string_actions)
    rows = _option_rows()
    for name, cell in rows.items():
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", cell):
            assert flag in known, f"docs/hpc.md gives {name} the flag {flag}, which python -m mbe_mpi does not know"
    for name in ExecutionOptions.model_fields:
        dashed = name.replace("_", "-")
        for flag in (f"--{dashed}", f"--no-{dashed}", f"--{dashed.rstrip('s')}"):
            if flag in known:
                assert flag in rows[name], f"docs/hpc.md's row for {name} does not mention {flag}"


def test_hpc_guide_defaults_are_the_options_defaults():
    """The default column says what ExecutionOptions (the one home of defaults) says."""
    from mbe_mpi.options import ExecutionOptions

    cells = _option_cells()
    for name, field in ExecutionOptions.model_fields.items():
        default = field.default
        if default is None:
            continue  # described in words (e.g. "the usable cores")
        shown = {True: "true", False: "false", (): "none"}.get(default) if isinstance(default, (bool, tuple)) else (
            f"{default:g}" if isinstance(default, (int, float)) else str(default))
        assert shown in cells[name][1], f"docs/hpc.md gives {name} the default {cells[name][1]!r}, not {shown}"
        assert field.description, f"{name} has no description"


def test_guides_name_every_template():
    readme = (JOBSCRIPTS / "README.md").read_text()
    guide = HPC_GUIDE.read_text()
    for script in SCRIPTS:
        assert script in readme
    assert "render.py" in readme and "jobscripts/" in guide
    for phrase in ("-disable-auto-cleanup", "--with-ft ulfm", "OMP_NUM_THREADS", "exit code 4", "stop_grace",
                   "barrier idle", "--fresh", "SIGUSR1", "checkpoint"):
        assert phrase.lower() in guide.lower(), phrase
