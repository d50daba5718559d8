"""Small helpers for one-line, readable input error messages."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InputError


def prefix(source: str) -> str:
    return f"{source}: " if source and source != "<input>" else ""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_text(exc: BaseException) -> str:
    """One line for a pydantic/QCElemental/other error: the first error's location and message."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            details = errors()
        except Exception:
            details = None
        if details:
            first = details[0]
            location = ".".join(str(part) for part in first.get("loc", ()))
            message = re.sub(r"^(Value error|Assertion failed), ", "", str(first.get("msg", ""))).rstrip(".")
            value = first.get("input")
            shown = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) and len(repr(value)) < 60 else ""
            more = f" (and {len(details) - 1} more problems)" if len(details) > 1 else ""
            return one_line(f"{location}: {message}{shown}{more}" if location else f"{message}{shown}{more}")
    name = type(exc).__name__
    if name == "NotAnElementError":
        return f"unknown element symbol {str(exc)!r}"
    text = str(getattr(exc, "message", None) or exc) or name
    if isinstance(exc, KeyError):
        text = f"missing entry {exc.args[0]!r}" if exc.args else name
    return one_line(text)


def type_name(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_float(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


def formula(symbols: list[str]) -> str:
    counts: dict[str, int] = {}
    for symbol in symbols:
        counts[symbol] = counts.get(symbol, 0) + 1
    return "".join(f"{symbol}{count if count > 1 else ''}" for symbol, count in counts.items())


def show(value: Any) -> str:
    if isinstance(value, list) and len(value) > 8:
        return f"a list of {len(value)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def short_list(values: list[int]) -> str:
    return "[" + ", ".join(map(str, values[:8])) + (", ...]" if len(values) > 8 else "]")


def check_keys(values: Mapping, allowed: tuple[str, ...], place: str, where: str) -> None:
    for key in values:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{where}unknown key {key!r} {place}{hint}; allowed keys are: {', '.join(allowed)}")
