"""Stop requests by signal, caught from the first moment of a command-line run.

SIGTERM/SIGUSR1 are what a batch system sends before the time limit: the master stops dispatching,
saves, and exits 4 with a message saying how to resume. A signal that arrives while the run is
still starting (imports, reading the input, starting workers) must mean the same, not a silent
death (exit 143), so ``python -m mbe_mpi`` installs these handlers before it imports anything
heavy (:func:`install_early`, called from the package's ``__init__``) and the run then asks them.

Under MPICH's ``mpiexec -disable-auto-cleanup`` hydra sends SIGUSR1 when a rank ends, so there only
SIGTERM (which hydra forwards to every rank) means stop; SIGUSR1 is ignored until the MPI
transport counts those notices. Standard library only: this runs before the heavy imports.

Ctrl-C in that window (the package's imports take a second or more) would otherwise end in the
``KeyboardInterrupt`` traceback of an interrupted import: there nothing has started that could be
saved, so the early handler says so and exits 130, and the run hands SIGINT back to Python
(:func:`hand_over_interrupt`) where it catches ``KeyboardInterrupt`` itself.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

#: the handlers ``python -m mbe_mpi`` installed before anything else (None in any other program)
early: StopSignals | None = None


def launched_by_hydra() -> bool:
    """Started by MPICH's ``mpiexec`` (hydra), which gives every rank its control descriptor."""
    return "HYDI_CONTROL_FD" in os.environ


class StopSignals:
    """Handlers that record a stop request; calling the object returns its reason (or None)."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> None:
        self.signals = signals
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.reason = f"received {signal.Signals(signum).name}"

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __call__(self) -> str | None:
        return self.reason


def stop_signals(hydra: bool | None = None) -> StopSignals:
    """The stop handlers for this process (under hydra: SIGTERM only; SIGUSR1 is its notice of a rank's end)."""
    hydra = launched_by_hydra() if hydra is None else hydra
    return StopSignals((signal.SIGTERM,) if hydra else (signal.SIGTERM, signal.SIGUSR1))


def launched_as_cli(argv: list[str] | None = None) -> bool:
    """Whether this interpreter was started as ``python -m mbe_mpi`` (also under mpiexec)."""
    argv = list(getattr(sys, "orig_argv", []) if argv is None else argv)
    return any(arg == "-m" and argv[i + 1:i + 2] == ["mbe_mpi"] for i, arg in enumerate(argv))


#: what Ctrl-C says while ``python -m mbe_mpi`` is still importing
INTERRUPTED_STARTING = "mbe_mpi: interrupted before any QC task started; nothing to resume\n"


def _interrupted_starting(signum: int, frame: Any) -> None:
    """Ctrl-C during the imports: nothing to save or flush; exit as an interrupted run does (130)."""
    os.write(2, INTERRUPTED_STARTING.encode())
    os._exit(128 + signal.SIGINT)


def install_early() -> None:
    """``python -m mbe_mpi``: catch stop signals now, before a second of imports (no-op elsewhere)."""
    global early
    if early is not None or not launched_as_cli() or threading.current_thread() is not threading.main_thread():
        return
    if launched_by_hydra():
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the shell made it ignored
        signal.signal(signal.SIGINT, _interrupted_starting)
    early = stop_signals().__enter__()


def hand_over_interrupt() -> None:
    """From here the run catches ``KeyboardInterrupt`` itself (it keeps what is done and says how to resume)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _interrupted_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
