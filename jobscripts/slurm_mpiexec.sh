#!/bin/bash
# mbe_mpi on SLURM, launched with MPICH's hydra `mpiexec` (also the `mpiexec` of the `mpich` pip wheel).
#
#   sbatch jobscripts/slurm_mpiexec.sh                                  # the defaults below
#   sbatch --export=ALL,INPUT=water.yaml,OUTPUT=water.json jobscripts/slurm_mpiexec.sh
#   sbatch --ntasks=129 --cpus-per-task=2 --time=12:00:00 jobscripts/slurm_mpiexec.sh   # flags beat #SBATCH lines
#   python jobscripts/render.py slurm_mpiexec --ranks 64 --threads 2 --time 04:00:00 --input water.yaml > job.sh
#
# Rank 0 is the master (plans, hands out and collects the QC tasks, does no QC itself), so
# --ntasks=N gives N-1 QC workers, each running its QC program with --cpus-per-task threads.
# See docs/hpc.md for choosing ranks, threads and memory, and for restarts.
#
# ---- resources (sbatch reads these lines; edit them, override them on the sbatch command line, or render) ----
#SBATCH --job-name=mbe_mpi
# MPI ranks: 1 master + N-1 workers.
#SBATCH --ntasks=16
# Threads per QC task (hybrid ranks x threads). Becomes OMP_NUM_THREADS and --threads-per-task below.
#SBATCH --cpus-per-task=1
# Memory per CPU; each task gets mem-per-cpu x cpus-per-task. MEMORY_PER_TASK (what the QC program is told it
# may use) is derived from it below, leaving 15% headroom for the Python worker itself.
#SBATCH --mem-per-cpu=2G
#SBATCH --time=04:00:00
# B: = signal only this batch shell, 120 s before the time limit; the trap below forwards it to mpiexec, which
# forwards it to every rank. The master then stops handing out work, waits up to execution.stop_grace (30 s)
# for running tasks, saves everything to the checkpoint and exits with code 4. SLURM may send the signal up to
# 60 s early; keep @ comfortably above stop_grace.
#SBATCH --signal=B:TERM@120
# Allow the job to be requeued (node failure, preemption, or AUTO_REQUEUE=1 below). A requeued or resubmitted job
# runs the same command again and resumes from the checkpoint beside the output: nothing computed is lost.
#SBATCH --requeue
# A requeued job keeps its job id: append to the log instead of overwriting the first attempt's.
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
# Site specific (remove one '#' to use):
##SBATCH --nodes=1
##SBATCH --partition=compute
##SBATCH --account=myproject

# ==== parameters: defaults below; any of them can be overridden from the environment ====
# (sbatch --export=ALL,NAME=value,... — keep ALL, or the job loses your PATH and modules)
INPUT=${INPUT:-input.yaml}                  # the MBE input (QCSchema JSON or friendly YAML/JSON)
OUTPUT=${OUTPUT:-}                          # result JSON; empty: INPUT's stem + .result.json beside INPUT
RANKS=${RANKS:-${SLURM_NTASKS:-16}}         # MPI ranks (1 master + RANKS-1 workers); default: --ntasks
THREADS_PER_TASK=${THREADS_PER_TASK:-${SLURM_CPUS_PER_TASK:-1}}   # default: --cpus-per-task
MEMORY_PER_TASK=${MEMORY_PER_TASK:-}        # GiB per QC task; empty: 85% of mem-per-cpu x threads (see below)
CACHE_DIR=${CACHE_DIR:-}                    # result cache shared between runs (e.g. max_nbody 2 then 3)
SCRATCH_DIR=${SCRATCH_DIR:-}                # node-local scratch for the QC programs (exported as TMPDIR)
PLUGINS=${PLUGINS:-}                        # space-separated modules, one --plugin each (site QCEngine harnesses)
EXTRA_ARGS=${EXTRA_ARGS:-}                  # further mbe_mpi flags, e.g. "--fresh" or "-v" or "--no-progress"
PYTHON=${PYTHON:-python}                    # the Python that has mbe_mpi (may be several words, e.g. a container)
MPIEXEC=${MPIEXEC:-mpiexec}                 # MPICH hydra's mpiexec (module load mpich, or the mpich wheel)
FORWARD_SIGNAL=${FORWARD_SIGNAL:-TERM}      # what the trap sends mpiexec; hydra forwards TERM and USR1 to all ranks
AUTO_REQUEUE=${AUTO_REQUEUE:-0}             # 1: after a clean early stop (exit code 4), scontrol requeue this job
MAX_REQUEUES=${MAX_REQUEUES:-10}            # ... but not more often than this (SLURM_RESTART_COUNT)
MBE_MPI_DRY_RUN=${MBE_MPI_DRY_RUN:-0}       # 1: print the commands instead of running them
# ==== end of parameters ====

log() { echo "[jobscript $(date '+%F %T')] $*"; }

# Run a command, or in dry-run mode print it, shell-quoted, after "+ ".
run() {
    if [ "$MBE_MPI_DRY_RUN" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

# OpenMP runtimes (PySCF, OpenBLAS, MKL, xtb) read OMP_NUM_THREADS once, when the rank starts, so it must be in
# mpiexec's environment already and must equal --threads-per-task (mbe_mpi warns when it caps the threads).
export OMP_NUM_THREADS="$THREADS_PER_TASK"

# Memory: mbe_mpi's default is an even share of the node's *physical* memory per worker, which is right for
# whole nodes. On a shared node SLURM's cgroup allows only mem-per-cpu x cpus-per-task per task, so derive the
# QC program's limit from that allocation (85%: the rest is for the Python worker process).
if [ -z "$MEMORY_PER_TASK" ] && [ -n "${SLURM_MEM_PER_CPU:-}" ]; then
    MEMORY_PER_TASK=$(awk -v mb="$SLURM_MEM_PER_CPU" -v cpus="${SLURM_CPUS_PER_TASK:-$THREADS_PER_TASK}" \
        'BEGIN { printf "%.2f", 0.85 * mb * cpus / 1024 }')
fi

# Scratch: the QC programs' temporary files go under TMPDIR (mbe_mpi's per-task scratch folders, PySCF's files),
# so point it at fast node-local disk; the folder must exist on every node. execution.scratch_dir in the input
# file does the same from mbe_mpi's side; no command-line flag is passed for it.
# Never put OUTPUT (and so the checkpoint) on node-local scratch: the rerun must find the checkpoint.
if [ -n "$SCRATCH_DIR" ]; then
    if [ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ]; then
        run srun --ntasks-per-node=1 --ntasks="$SLURM_JOB_NUM_NODES" mkdir -p "$SCRATCH_DIR"
    else
        run mkdir -p "$SCRATCH_DIR"
    fi
    export TMPDIR="$SCRATCH_DIR"
fi

# The mbe_mpi command line: only flags that `python -m mbe_mpi --help` lists.
read -r -a python_cmd <<< "$PYTHON"
cmd=("${python_cmd[@]}" -m mbe_mpi "$INPUT")
[ -n "$OUTPUT" ] && cmd+=(-o "$OUTPUT")
cmd+=(--threads-per-task "$THREADS_PER_TASK")
[ -n "$MEMORY_PER_TASK" ] && cmd+=(--memory-per-task "$MEMORY_PER_TASK")
[ -n "$CACHE_DIR" ] && cmd+=(--cache-dir "$CACHE_DIR")
for plugin in $PLUGINS; do cmd+=(--plugin "$plugin"); done
read -r -a extra_args <<< "$EXTRA_ARGS"
cmd+=("${extra_args[@]}")

# -disable-auto-cleanup: by default hydra kills every rank as soon as one exits abnormally; with it, mbe_mpi
# survives a worker rank that exits or hangs (its tasks go to the others). A rank killed by a signal (segfault,
# OOM killer) still ends the job: the checkpoint is the safety net there (rerun to resume).
# env -u: hydra starts one proxy per node with srun; if that srun inherited --cpus-per-task, all ranks of a
# node would be confined to the proxy's few cores. Ranks x threads come from OMP_NUM_THREADS instead.
launch=(env -u SLURM_CPUS_PER_TASK -u SRUN_CPUS_PER_TASK "$MPIEXEC" -disable-auto-cleanup -n "$RANKS" "${cmd[@]}")

# Where mbe_mpi puts the output and the checkpoint by default (for the log): OUT.json -> OUT.checkpoint.sqlite.
strip_suffix() {  # a path without its last suffix, like Python's Path.with_suffix("")
    local dir= base=$1
    case $1 in */*) dir=${1%/*}/ base=${1##*/} ;; esac
    [ -n "${base%.*}" ] && base=${base%.*}
    printf '%s' "$dir$base"
}
out=${OUTPUT:-$(strip_suffix "$INPUT").result.json}
checkpoint=$(strip_suffix "$out").checkpoint.sqlite
log "job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NUM_NODES:-?} node(s), attempt $(( ${SLURM_RESTART_COUNT:-0} + 1 ))"
log "ranks $RANKS (1 master + $(( RANKS - 1 )) workers) x OMP_NUM_THREADS=$OMP_NUM_THREADS," \
    "memory per task ${MEMORY_PER_TASK:-default} GiB"
log "output $out; checkpoint (unless the input moves it) $checkpoint"
[ -e "$checkpoint" ] && log "the checkpoint exists: this run resumes from it (EXTRA_ARGS=--fresh starts over)"

if [ "$MBE_MPI_DRY_RUN" = 1 ]; then
    run "${launch[@]}"
    exit 0
fi

# Start-up and a lost master (mbe_mpi itself; nothing to set here): if MPI has not started on every rank within
# startup_timeout (--startup-timeout in EXTRA_ARGS, default 120 s: a rank hung or its node down), every rank ends
# and the job fails at once ("MPI did not start on all ranks within 120 s"), not at the wall-clock limit; a
# worker not ready by then is declared lost and the others do its share. If rank 0 dies, the worker ranks end
# within heartbeat_timeout (default 60 s). A second job on the same output is refused (the checkpoint is locked).
# In each case rerun (resubmit) the same job to resume from the checkpoint.
# Run mpiexec in the background and wait, so that the batch shell can act on the signal at once: bash runs a
# trap only after the foreground command ends, and with B: only this shell receives the signal.
pid= stop=
forward() {
    log "received $1: asking mbe_mpi to stop cleanly (sending $FORWARD_SIGNAL to mpiexec)"
    stop=$1
    [ -n "$pid" ] && kill -s "$FORWARD_SIGNAL" "$pid" 2>/dev/null
}
trap 'forward TERM' TERM
trap 'forward USR1' USR1
"${launch[@]}" &
pid=$!
[ -n "$stop" ] && kill -s "$FORWARD_SIGNAL" "$pid" 2>/dev/null   # the signal came before $pid was known
# `wait` returns early (status > 128) when a trapped signal arrives: wait again until mpiexec has exited,
# then once more for its exit status (bash remembers it).
wait "$pid"
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
wait "$pid"
rc=$?
trap - TERM USR1

case $rc in
    0) log "finished: $out" ;;
    4) log "stopped early (exit code 4): rerun the same command (or resubmit this job) to resume from the checkpoint"
       if [ "$AUTO_REQUEUE" = 1 ]; then
           if [ "${SLURM_RESTART_COUNT:-0}" -lt "$MAX_REQUEUES" ]; then
               log "AUTO_REQUEUE=1: requeueing job ${SLURM_JOB_ID}"
               scontrol requeue "$SLURM_JOB_ID"
           else
               log "AUTO_REQUEUE=1, but the job was requeued $MAX_REQUEUES times already: not again"
           fi
       fi ;;
    1) log "a QC task failed (exit code 1): see the message above; completed results are in the checkpoint" ;;
    2) log "bad input or options (exit code 2): see the message above" ;;
    5) log "a file could not be written (exit code 5: disk full or over quota?): see the message above; make room" \
           "and rerun the same command (or resubmit this job) to resume from the checkpoint" ;;
    *) log "mbe_mpi ended with exit code $rc; completed results are in the checkpoint" ;;
esac
exit "$rc"
