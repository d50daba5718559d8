"""Reading input files: JSON or YAML text into plain data, with one readable line for every mistake.

Input files come from users and sometimes from scripts gone wrong, so reading is bounded: only
regular files of at most :data:`MAX_FILE_BYTES`, nesting at most :data:`MAX_DEPTH` deep, and at most
:data:`MAX_ELEMENTS` values once YAML aliases are expanded (an "alias bomb" of ten levels of
``[*a, *a, ...]`` is a few lines that expand to billions of values).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from .text import one_line

#: the largest input or xyz file read (an xyz of a million atoms is ~50 MB)
MAX_FILE_BYTES = 256 * 1024**2
MAX_DEPTH = 64
MAX_ELEMENTS = 10_000_000


def read_text(path: Path, what: str) -> str:
    """A regular UTF-8 text file's content, or one line saying why it cannot be used."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{what}: is a directory; give the file inside it")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{what}: is not a regular file (a device or a pipe?); give a text file")
        if info.st_size > MAX_FILE_BYTES:
            raise InputError(f"{what}: is {info.st_size / 1024**2:.0f} MB, more than the "
                             f"{MAX_FILE_BYTES // 1024**2} MB an input file may have; check the path")
        with open(path, encoding="utf-8") as file:
            return file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{what}: no such file; check the path and the current directory") from None
    except UnicodeDecodeError:
        raise InputError(f"{what}: is not a UTF-8 text file; give a JSON, YAML or xyz text file") from None
    except OSError as exc:
        raise InputError(f"{what}: cannot be read ({exc.strerror}); check the path and its permissions") from None


def read_document(path: str | os.PathLike) -> Any:
    """The plain data of a JSON (``.json``) or YAML (anything else) file, bounded in size and depth."""
    source = os.fspath(path)
    text = read_text(Path(path), source)
    try:
        data = _parse_json(text, source) if Path(path).suffix.lower() == ".json" else _parse_yaml(text, source)
    except RecursionError:
        data = None
        deep = True
    else:
        deep = False
    if deep or not _bounded(data):
        raise InputError(f"{source}: is nested more than {MAX_DEPTH} levels deep or expands to more than "
                         f"{MAX_ELEMENTS:,} values (YAML aliases); an input file is a few small sections")
    return data


def _bounded(data: Any) -> bool:
    """Whether ``data`` is at most MAX_DEPTH deep and MAX_ELEMENTS large, counted as if aliases were copies.

    Iterative and stopping at the first bound, so a hostile document costs at most MAX_ELEMENTS steps.
    """
    stack = [(data, 0)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_ELEMENTS or depth > MAX_DEPTH:
            return False
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value)
    return True


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


class _DuplicateKeyError(ValueError):
    pass


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{source}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
            "fix the syntax there (JSON needs double quotes and no trailing commas)"
        ) from None
    except _DuplicateKeyError as exc:
        raise InputError(f"{source}: the key {exc.args[0]!r} appears twice in one object; keep only one") from None


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads 1e-10 as a float (YAML 1.2) and refuses duplicate keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable key: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"the key {key!r} appears twice",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        advice = "keep only one" if "appears twice" in problem else "fix the indentation, quoting or syntax there"
        raise InputError(one_line(f"{source}: malformed YAML{where}: {problem}; {advice}")) from None
