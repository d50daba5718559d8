"""The code stays readable in small pieces: no function over ~60 lines or ~12 branches without a reason.

A longer function is allowed when a comment right above its ``def`` says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mbe_mpi"
MAX_LINES = 60
MAX_BRANCHES = 12


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                explained = first >= 2 and lines[first - 2].strip().startswith("#")
                yield path.relative_to(PACKAGE.parent), node, explained


def test_functions_are_short_or_say_why():
    long = []
    for path, node, explained in _functions():
        size = node.end_lineno - node.lineno + 1
        branches = sum(isinstance(n, (ast.If, ast.For, ast.While, ast.ExceptHandler, ast.IfExp))
                       for n in ast.walk(node))
        if (size > MAX_LINES or branches > MAX_BRANCHES) and not explained:
            long.append(f"{path}:{node.lineno} {node.name} ({size} lines, {branches} branches)")
    assert not long, "split these or say why above the def:\n" + "\n".join(long)
