"""``python -m mbe_mpi plan INPUT --ranks P``: what a run will do and how long it should take.

Counts the QC tasks per n-body level and model chemistry, sums their expected cost, and runs the
scheduler on a virtual clock (:mod:`mbe_mpi.simulate`) for P ranks (P-1 workers) to predict the
wall time and parallel efficiency -- without running any QC. Expected seconds come from the
program when it states them (the ``synthetic`` program) or from ``--seconds-per-unit`` times the
plan's relative cost estimate; without either, costs are shown in relative units and only the
efficiency is predicted.

A screened input (``screening``) is forecast as screened: distance cutoffs are known before any QC,
so the counts and times are those of the n-mers within them; energy rules and a prescreen decide
during the run, so for the requested model chemistry that is the most the run can compute; a
prescreen's own (cheap) expansion is forecast beside it.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable

from .costs import program_estimates
from .plan import Plan, Task, build_plan, collector_paused
from .report import format_screening
from .scheduling import SchedulePolicy
from .scheduling.simulate import SimulationResult, simulate
from .screened import Prescreen
from .screening import ScreenedExpansion, screening_of

#: What each task costs besides the QC program itself: building the fragment molecule and QCEngine's
#: own set-up (~1-3 ms measured on a 2-core VM); added to every task's expected duration.
TASK_OVERHEAD_SECONDS = 0.003

#: from this many tasks the two simulations run side by side (a fork costs ~10 ms; below, each takes < 1 s)
PARALLEL_FROM = 20_000


def _durations(plan: Plan, seconds_per_unit: float | None, tasks: list[Task], overhead: float,
               ) -> tuple[list[float], bool]:
    """Each task's expected duration by ``Task.index`` (``overhead`` added to seconds), and whether in seconds.

    A list made once: the table, the bounds and both simulations read a task's duration ~10 times.
    Seconds when the program states every computed task's cost, or from ``seconds_per_unit``; else
    the plan's relative units. (A task outside ``tasks`` without a stated cost is never read: NaN.)
    """
    absolute = program_estimates(plan)
    stated = [absolute(task) for task in plan.tasks]
    if tasks and (None not in stated if tasks is plan.tasks else all(stated[t.index] is not None for t in tasks)):
        return [math.nan if value is None else value + overhead for value in stated], True
    if seconds_per_unit:
        return [task.cost * seconds_per_unit + overhead for task in plan.tasks], True
    return [task.cost for task in plan.tasks], False


def _fmt(value: float, seconds: bool) -> str:
    if not seconds:
        return f"{value:.3g} units"
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.3g} s"


def forecast(plan: Plan, ranks: int, *, seconds_per_unit: float | None = None,
             policy: SchedulePolicy | None = None, latency: float = 50e-6,
             master_seconds: float = 20e-6, per_task_overhead: float = TASK_OVERHEAD_SECONDS,
             tasks: list[Task] | None = None) -> tuple[str, dict[str, SimulationResult]]:
    """The plan report text, and the simulations behind it (with and without the level barrier).

    ``tasks`` (default: all of the plan) are the ones the run computes (a screened run's).
    """
    policy = policy or SchedulePolicy()
    tasks = plan.tasks if tasks is None else tasks
    durations, in_seconds = _durations(plan, seconds_per_unit, tasks, per_task_overhead)
    duration = lambda task: durations[task.index]  # noqa: E731
    workers = max(1, ranks - 1)
    by_level = plan.by_level(tasks)
    mcs = plan.model_chemistries
    lines = [f"{len(tasks)} QC tasks in {len(by_level)} levels; predicted for {ranks} ranks "
             f"({workers} workers; rank 0 is the master)", ""]
    lines.append(f"  {'level':>5}  {'model chemistry':<28} {'tasks':>9} {'expected cost':>16}")
    for level, level_tasks in by_level.items():
        for mc_index, mc in enumerate(mcs):
            mine = level_tasks if len(mcs) == 1 else [t for t in level_tasks if t.mc_index == mc_index]
            if mine:
                cost = sum(map(duration, mine))
                lines.append(f"  {level:>5}  {mc:<28} {len(mine):>9} {_fmt(cost, in_seconds):>16}")
    total = sum(map(duration, tasks))
    lines.append(f"  {'all':>5}  {'':<28} {len(tasks):>9} {_fmt(total, in_seconds):>16}")
    lines.append("")
    variants = {"level barrier": dataclasses.replace(policy, level_barrier=True),
                "no level barrier": dataclasses.replace(policy, level_barrier=False)}
    costs = {"latency": latency if in_seconds else 0.0, "master_seconds": master_seconds if in_seconds else 0.0}
    timed = _simulations(by_level, workers, duration, variants, costs, parallel=len(tasks) >= PARALLEL_FROM)
    results = {}
    for name, (result, seconds) in timed.items():
        results[name] = result
        bound = result.bound_barrier if variants[name].level_barrier else result.bound_global
        lines.append(
            f"  {name + ':':<18} wall {_fmt(result.makespan, in_seconds)}, efficiency {result.efficiency:.1%} "
            f"(lower bound {_fmt(bound, in_seconds)}; simulated in {seconds:.1f} s)")
    if not in_seconds:
        lines.append("  (costs in relative units: give --seconds-per-unit to predict wall times)")
    return "\n".join(lines), results


def _timed(by_level: dict[int, list[Task]], workers: int, duration: Callable[[Task], float], policy: SchedulePolicy,
           costs: dict[str, float]) -> tuple[SimulationResult, float]:
    started = time.perf_counter()
    result = simulate(by_level, workers, duration, policy, **costs)
    return result, time.perf_counter() - started


def _simulations(by_level: dict[int, list[Task]], workers: int, duration: Callable[[Task], float],
                 variants: dict[str, SchedulePolicy], costs: dict[str, float], parallel: bool,
                 ) -> dict[str, tuple[SimulationResult, float]]:
    """Each variant's simulation and the seconds it took.

    They are independent and each takes ~10 s for a million tasks, so with ``parallel`` and more
    than one core the variants after the first run at the same time in forked children, which
    send their (small) result back through a pipe. Fork is safe here only because nothing else
    runs: with another thread alive (a lock it holds would stay held in the child), or without
    fork, they run one after another -- as they do when a child fails.
    """
    from .options import usable_cores

    names = list(variants)
    children: dict[str, tuple[int, int]] = {}
    if parallel and hasattr(os, "fork") and threading.active_count() == 1 and usable_cores() > 1:
        gc.freeze()  # the children's collector would otherwise touch, and so copy, every page of the plan
        try:
            for name in names[1:]:
                read, write = os.pipe()
                pid = os.fork()
                if pid == 0:  # the child: simulate, send, and leave without running any clean-up of the parent's
                    os.close(read)
                    try:
                        payload = pickle.dumps(_timed(by_level, workers, duration, variants[name], costs))
                    except BaseException:
                        payload = b""
                    with os.fdopen(write, "wb") as pipe:
                        pipe.write(payload)
                    os._exit(0)
                os.close(write)
                children[name] = (pid, read)
        finally:
            gc.unfreeze()
    timed = {name: _timed(by_level, workers, duration, variants[name], costs) for name in names
             if name not in children}
    for name, (pid, read) in children.items():
        with os.fdopen(read, "rb") as pipe:
            payload = pipe.read()
        os.waitpid(pid, 0)
        timed[name] = pickle.loads(payload) if payload else _timed(by_level, workers, duration, variants[name], costs)
    return {name: timed[name] for name in names}


def main(argv: list[str]) -> int:
    from .errors import EXIT_INPUT_ERROR, InputError
    from .inputs import load_input
    from .usage import ArgumentParser

    parser = ArgumentParser(prog="python -m mbe_mpi plan",
                            description="Count the QC tasks of INPUT and predict the wall time on P ranks "
                            "(a dry run: no QC is run).")
    parser.add_argument("input", metavar="INPUT")
    parser.add_argument("--ranks", type=int, default=None, metavar="P",
                        help="MPI ranks (P-1 workers); default: usable cores + 1")
    parser.add_argument("--seconds-per-unit", type=float, metavar="S",
                        help="seconds per unit of the plan's relative cost estimate (calibrate from a small run)")
    args = parser.parse_args(argv)
    try:
        mbi, options = load_input(args.input)
        if args.ranks is not None and args.ranks < 2:
            raise InputError(f"--ranks must be at least 2 (a master and a worker), got {args.ranks}")
    except InputError as exc:
        print(f"mbe_mpi: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    from .options import usable_cores

    ranks = args.ranks or (options.n_workers or usable_cores()) + 1
    policy = SchedulePolicy.from_options(options)
    # The simulations' millions of events are acyclic too: the collector stays paused for all of the dry run
    # (its passes cost a quarter of the time at 2.7 M tasks: the plan 12.6 -> 9.4 s).
    with collector_paused():
        plan = build_plan(mbi)
        rules = screening_of(mbi)
        if rules is None:
            text, _ = forecast(plan, ranks, seconds_per_unit=args.seconds_per_unit, policy=policy)
            print(f"Plan for {args.input}: " + text)
        else:
            print(f"Plan for {args.input} (screened): " + screened_forecast(mbi, plan, rules, ranks,
                                                                             args.seconds_per_unit, policy))
        return _leave(0)


def _leave(code: int) -> int:
    """End the process here when it is ``python -m mbe_mpi plan``; else return ``code``.

    Nothing is left to clean up, and freeing the plan's objects one by one on the way out would take
    6 s for 2.7 M tasks. Called from Python (the tests), it returns.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == "mbe_mpi.__main__":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def screened_forecast(mbi, plan: Plan, rules, ranks: int, seconds_per_unit: float | None,
                      policy: SchedulePolicy) -> str:
    """The forecast of a screened input: the n-mers within the distance cutoffs, and a prescreen's expansion."""
    expansion = ScreenedExpansion(plan, rules, energy_rules=False)
    expansion.decide_all()
    tasks = expansion.needed()
    text, _ = forecast(plan, ranks, seconds_per_unit=seconds_per_unit, policy=policy, tasks=tasks)
    lines = [text, "", *format_screening({**expansion.report(), "rules": rules.to_dict()})]
    if rules.energy or rules.prescreen:
        lines.append("  (distance cutoffs only: energy rules and the prescreen decide during the run, so these "
                     "counts and times are the most it can take)")
    if rules.prescreen is not None:
        cheap = Prescreen.of(mbi, plan, rules)
        cheap_text, _ = forecast(cheap.plan, ranks, policy=policy, tasks=cheap.expansion.needed())
        lines += ["", f"Prescreen {rules.prescreen.name} ({cheap.expansion.first}), computed first: " + cheap_text]
    return "\n".join(lines)
