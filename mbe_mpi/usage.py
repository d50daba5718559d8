"""The command lines' argument parser: a bad flag is one line on stderr, written once under mpiexec, exit code 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .errors import EXIT_INPUT_ERROR
from .transports import launcher_rank


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with mbe_mpi's error line.

    argparse's own ``error`` prints the whole usage (a dozen lines) on every rank: a typo under
    ``mpiexec -n 512`` would fill the job's log with thousands of lines. Here rank 0 writes one line,
    like every other input error, and every rank exits with the input-error code.
    """

    def error(self, message: str) -> NoReturn:
        if launcher_rank() == 0:
            print(f"mbe_mpi: error: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)
