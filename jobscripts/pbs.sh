#!/bin/bash
# mbe_mpi on PBS Pro / OpenPBS (and Torque, see the -l line below), launched with mpiexec.
#
#   qsub jobscripts/pbs.sh                                              # the defaults below
#   qsub -v INPUT=water.yaml,OUTPUT=water.json jobscripts/pbs.sh
#   qsub -l select=4:ncpus=64:mpiprocs=32:ompthreads=2 -l walltime=12:00:00 jobscripts/pbs.sh   # beat #PBS lines
#   python jobscripts/render.py pbs --nodes 2 --ranks 64 --threads 2 --time 04:00:00 --input water.yaml > job.sh
#
# Rank 0 is the master (plans, hands out and collects the QC tasks, does no QC itself), so N ranks give N-1
# QC workers, each running its QC program with ompthreads threads. See docs/hpc.md.
#
# ---- resources (qsub reads these lines; edit them, override them on the qsub command line, or render) ----
#PBS -N mbe_mpi
# One chunk per node: mpiprocs MPI ranks per node, ompthreads threads each, ncpus = mpiprocs x ompthreads.
# PBS Pro writes one line per rank into $PBS_NODEFILE and sets OMP_NUM_THREADS=ompthreads for the job.
# Add :mem=...gb per chunk if the site does not give whole nodes. Torque instead: #PBS -l nodes=1:ppn=16
#PBS -l select=1:ncpus=16:mpiprocs=16:ompthreads=1
#PBS -l walltime=04:00:00
# Rerunnable: after a node failure PBS may requeue the job; the rerun resumes from the checkpoint.
#PBS -r y
# One log for stdout and stderr.
#PBS -j oe
# Site specific (remove one '#' to use):
##PBS -q workq
##PBS -A myproject

# ==== parameters: defaults below; any of them can be overridden from the environment ====
# (qsub -v NAME=value,... or qsub -V)
INPUT=${INPUT:-input.yaml}                  # the MBE input (QCSchema JSON or friendly YAML/JSON)
OUTPUT=${OUTPUT:-}                          # result JSON; empty: INPUT's stem + .result.json beside INPUT
RANKS=${RANKS:-}                            # MPI ranks (1 master + RANKS-1 workers); empty: lines of $PBS_NODEFILE
THREADS_PER_TASK=${THREADS_PER_TASK:-${OMP_NUM_THREADS:-1}}   # default: ompthreads (PBS Pro sets OMP_NUM_THREADS)
MEMORY_PER_TASK=${MEMORY_PER_TASK:-}        # GiB per QC task; empty: an even share of the node per worker
CACHE_DIR=${CACHE_DIR:-}                    # result cache shared between runs (e.g. max_nbody 2 then 3)
SCRATCH_DIR=${SCRATCH_DIR:-}                # node-local scratch for the QC programs (exported as TMPDIR)
PLUGINS=${PLUGINS:-}                        # space-separated modules, one --plugin each (site QCEngine harnesses)
EXTRA_ARGS=${EXTRA_ARGS:-}                  # further mbe_mpi flags, e.g. "--fresh" or "-v" or "--no-progress"
PYTHON=${PYTHON:-python}                    # the Python that has mbe_mpi (may be several words, e.g. a container)
MPIEXEC=${MPIEXEC:-mpiexec}                 # the MPI launcher mpi4py was built for
MPIEXEC_FLAGS=${MPIEXEC_FLAGS--disable-auto-cleanup}   # MPICH hydra; Open MPI: "" or "-x OMP_NUM_THREADS -x TMPDIR"
FORWARD_SIGNAL=${FORWARD_SIGNAL:-TERM}      # what the script sends mpiexec to stop cleanly (Open MPI mpirun: USR1)
STOP_BEFORE=${STOP_BEFORE:-120}             # seconds before the walltime at which to ask mbe_mpi to stop
WALLTIME=${WALLTIME:-}                      # [[hh:]mm:]ss; empty: asked from PBS (PBS_WALLTIME or qstat -f)
AUTO_RESUBMIT=${AUTO_RESUBMIT:-0}           # 1: after a clean early stop (exit code 4), qsub JOB_SCRIPT again
JOB_SCRIPT=${JOB_SCRIPT:-}                  # this script's path, for AUTO_RESUBMIT (PBS runs a copy of it)
MAX_RESUBMITS=${MAX_RESUBMITS:-10}          # ... but not more often than this
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

# PBS starts the job in the home directory: go where qsub was run, so relative INPUT/OUTPUT paths work.
[ -n "${PBS_O_WORKDIR:-}" ] && cd "$PBS_O_WORKDIR"

if [ -z "$RANKS" ]; then
    if [ -r "${PBS_NODEFILE:-}" ]; then RANKS=$(wc -l < "$PBS_NODEFILE"); else RANKS=16; fi
fi
RANKS=$(( RANKS + 0 ))

# OpenMP runtimes (PySCF, OpenBLAS, MKL, xtb) read OMP_NUM_THREADS once, when the rank starts, so it must be in
# mpiexec's environment already and must equal --threads-per-task (mbe_mpi warns when it caps the threads).
export OMP_NUM_THREADS="$THREADS_PER_TASK"

# Scratch: the QC programs' temporary files go under TMPDIR (mbe_mpi's per-task scratch folders, PySCF's files),
# so point it at fast node-local disk (many sites give a per-job one, e.g. $TMPDIR or /local/$PBS_JOBID); it
# must exist on every node. execution.scratch_dir in the input file does the same from mbe_mpi's side; no
# command-line flag is passed for it. Never put OUTPUT (and so the checkpoint) on node-local scratch.
if [ -n "$SCRATCH_DIR" ]; then
    run mkdir -p "$SCRATCH_DIR"
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

# MPICH's hydra finds the nodes in $PBS_NODEFILE by itself. -disable-auto-cleanup: by default hydra kills every
# rank as soon as one exits abnormally; with it, mbe_mpi survives a worker rank that exits or hangs (its tasks
# go to the others). A rank killed by a signal (segfault, OOM killer) still ends the job: the checkpoint is the
# safety net there. Open MPI's mpirun (built with PBS/TM support) finds the nodes too, but needs -x to pass
# variables to remote nodes; with --with-ft ulfm (Open MPI 5) even a rank killed by a signal is survived.
read -r -a mpiexec_flags <<< "$MPIEXEC_FLAGS"
launch=("$MPIEXEC" "${mpiexec_flags[@]}" -n "$RANKS" "${cmd[@]}")

# PBS has no early warning signal: on qdel or at the walltime it sends SIGTERM to the whole job and SIGKILL
# kill_delay seconds later (a queue setting, often only 10 s; Torque: qdel -W SECONDS). That is too short for
# mbe_mpi's stop_grace, so this script asks for the clean stop itself, STOP_BEFORE seconds before the walltime.
to_seconds() {  # [[hh:]mm:]ss -> seconds
    local IFS=: part total=0
    for part in $1; do total=$(( total * 60 + 10#${part:-0} )); done
    echo "$total"
}
if [ -z "$WALLTIME" ]; then
    if [ -n "${PBS_WALLTIME:-}" ]; then  # Torque: seconds
        WALLTIME=$PBS_WALLTIME
    elif [ -n "${PBS_JOBID:-}" ] && command -v qstat > /dev/null; then
        WALLTIME=$(qstat -f "$PBS_JOBID" 2>/dev/null | awk -F' = ' '/Resource_List.walltime/ { print $2; exit }')
    fi
fi
stop_after=
if [ -n "$WALLTIME" ]; then
    stop_after=$(( $(to_seconds "$WALLTIME") - STOP_BEFORE - SECONDS ))
    [ "$stop_after" -lt 0 ] && stop_after=0
fi

# Where mbe_mpi puts the output and the checkpoint by default (for the log): OUT.json -> OUT.checkpoint.sqlite.
strip_suffix() {  # a path without its last suffix, like Python's Path.with_suffix("")
    local dir= base=$1
    case $1 in */*) dir=${1%/*}/ base=${1##*/} ;; esac
    [ -n "${base%.*}" ] && base=${base%.*}
    printf '%s' "$dir$base"
}
out=${OUTPUT:-$(strip_suffix "$INPUT").result.json}
checkpoint=$(strip_suffix "$out").checkpoint.sqlite
log "job ${PBS_JOBID:-?}, attempt $(( ${MBE_MPI_RESUBMITS:-0} + 1 ))"
log "ranks $RANKS (1 master + $(( RANKS - 1 )) workers) x OMP_NUM_THREADS=$OMP_NUM_THREADS," \
    "memory per task ${MEMORY_PER_TASK:-default} GiB"
log "output $out; checkpoint (unless the input moves it) $checkpoint"
[ -e "$checkpoint" ] && log "the checkpoint exists: this run resumes from it (EXTRA_ARGS=--fresh starts over)"
if [ -n "$stop_after" ]; then
    log "walltime $WALLTIME: mbe_mpi will be asked to stop in $stop_after s"
else
    log "walltime unknown (set WALLTIME): no clean stop before the walltime; the checkpoint still keeps every result"
fi

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
# mpiexec runs in the background so that this shell can act on signals at once (bash runs a trap only after the
# foreground command ends). A TERM or USR1 to this shell (qsig -s TERM JOBID, or qdel) is forwarded to mpiexec,
# which forwards it to every rank (MPICH hydra: TERM and USR1; Open MPI mpirun: USR1 only, TERM kills).
pid= stop= timer=
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
if [ -n "$stop_after" ]; then
    (
        trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
        sleep "$stop_after" & sleeper=$!
        wait "$sleeper"
        log "$STOP_BEFORE s before the walltime: asking mbe_mpi to stop cleanly (sending $FORWARD_SIGNAL)"
        kill -s "$FORWARD_SIGNAL" "$pid" 2>/dev/null
    ) &
    timer=$!
fi
# `wait` returns early (status > 128) when a trapped signal arrives: wait again until mpiexec has exited,
# then once more for its exit status (bash remembers it).
wait "$pid"
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
wait "$pid"
rc=$?
trap - TERM USR1
[ -n "$timer" ] && kill "$timer" 2>/dev/null

case $rc in
    0) log "finished: $out" ;;
    4) log "stopped early (exit code 4): rerun the same command (or resubmit this job) to resume from the checkpoint"
       if [ "$AUTO_RESUBMIT" = 1 ]; then
           if [ -z "$JOB_SCRIPT" ]; then
               log "AUTO_RESUBMIT=1 needs JOB_SCRIPT=path/of/this/script: not resubmitted"
           elif [ "${MBE_MPI_RESUBMITS:-0}" -lt "$MAX_RESUBMITS" ]; then
               export MBE_MPI_RESUBMITS=$(( ${MBE_MPI_RESUBMITS:-0} + 1 ))
               log "AUTO_RESUBMIT=1: qsub -V $JOB_SCRIPT"
               qsub -V "$JOB_SCRIPT"
           else
               log "AUTO_RESUBMIT=1, but the job was resubmitted $MAX_RESUBMITS times already: not again"
           fi
       fi ;;
    1) log "a QC task failed (exit code 1): see the message above; completed results are in the checkpoint" ;;
    2) log "bad input or options (exit code 2): see the message above" ;;
    5) log "a file could not be written (exit code 5: disk full or over quota?): see the message above; make room" \
           "and rerun the same command (or resubmit this job) to resume from the checkpoint" ;;
    *) log "mbe_mpi ended with exit code $rc; completed results are in the checkpoint" ;;
esac
exit "$rc"
