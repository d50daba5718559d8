"""A model chemistry as the user writes it: ``{program, method, basis, keywords}``, checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InputError
from .text import check_keys, type_name

MODEL_KEYS = ("program", "method", "basis", "keywords")


def model_chemistry(value: Any, name: str, where: str) -> dict[str, Any]:
    """A friendly model chemistry mapping checked: program and method (lower-cased), basis, keywords."""
    if not isinstance(value, Mapping):
        raise InputError(
            f"{where}{name} must be a mapping such as {{program: pyscf, method: hf, basis: cc-pvdz}}, "
            f"not a {type_name(value)}"
        )
    check_keys(value, MODEL_KEYS, f"in {name}", where)
    chemistry: dict[str, Any] = {}
    for key in ("program", "method"):
        text = value.get(key)
        if text is None:
            raise InputError(f"{where}{name} has no {key}; add {key}: <name> (e.g. program: pyscf, method: hf)")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}{name}.{key} must be a non-empty name, got {text!r}")
        chemistry[key] = text.strip().lower()
    basis = value.get("basis")
    if basis is not None and (not isinstance(basis, str) or not basis.strip()):
        raise InputError(f"{where}{name}.basis must be a basis set name such as cc-pvdz, got {basis!r}")
    chemistry["basis"] = basis.strip().lower() if basis is not None else None
    keywords = value.get("keywords")
    if keywords is not None and not isinstance(keywords, Mapping):
        raise InputError(f"{where}{name}.keywords must be a mapping of program keywords, got {keywords!r}")
    chemistry["keywords"] = dict(keywords or {})
    return chemistry
