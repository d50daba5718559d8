"""Input files -> ``(ManyBodyInput, ExecutionOptions)``, with one readable sentence for every mistake.

Two formats are read, from ``.json`` files (JSON) or any other file (YAML, a superset of JSON), and
told apart automatically.

**QCSchema** -- a QCManyBody ``ManyBodyInput`` exactly as ``ManyBodyInput.model_dump_json()`` writes
it. It is recognised by ``schema_name: qcschema_many_body_input`` or by top-level ``specification``
and ``molecule`` keys with ``specification.keywords``; a v1 ``qcschema_manybodyinput`` is converted
to v2. One key may be added beside the schema fields: ``execution`` (same as below), which is
removed before the model is validated. A hand-written molecule with fragments but with none of
``molecular_charge``, ``fragment_charges``, ``molecular_multiplicity`` and
``fragment_multiplicities`` gets neutral fragments of lowest multiplicity filled in -- exactly the
answer QCElemental would reach, without its combinatorial search (minutes for 30 fragments).

**Friendly format** -- these top-level keys and no others::

    molecule:                       # required
      xyz: water3.xyz               # a standard .xyz file (count line, comment line, atoms; Angstrom),
                                    #   path relative to this input file; OR
      geometry: |                   # inline "Symbol x y z" lines ("#" comments and blank lines ignored)
        O  -1.55   0.11  0.00
        H  -1.93  -0.75  0.00
        H  -0.59  -0.05  0.00
        --                          # a line of only "--" separates fragments (also allowed in xyz files)
        O   1.35  -0.11  0.00
        ...
      units: angstrom               # angstrom (default) or bohr; applies to geometry and xyz alike
      fragments: [[0, 1, 2], [3, 4, 5]]  # 0-based atom indices; OR
      atoms_per_fragment: 3         # consecutive fragments of this size; OR the "--" lines above
      fragment_charges: [0, 0]      # default: all 0
      fragment_multiplicities: [1, 1]  # default: lowest for each fragment's electron count (1 even, 2 odd)
    model: {program: pyscf, method: mp2, basis: cc-pvdz, keywords: {conv_tol: 1.0e-10}}  # OR
    levels:                         # the model chemistry of each n-body level's contribution
      1: {program: pyscf, method: mp2, basis: cc-pvdz}
      2: {program: pyscf, method: mp2, basis: cc-pvdz}
      3: {program: pyscf, method: hf, basis: cc-pvdz}
      supersystem: {program: pyscf, method: hf, basis: cc-pvdz}   # optional
    bsse: [cp]                      # nocp, cp, vmfc: one, or a list (the first is the returned one); default cp
    max_nbody: 3                    # default: the number of fragments (or the highest level in levels)
    driver: energy                  # energy (default), gradient or hessian
    return_total_data: true         # optional; QCManyBody's default if absent (false for energy)
    supersystem_ie_only: false      # optional
    cluster_results: none           # none (default) or all: keep every fragment's AtomicResult
    embedding_charges: {1: [-0.834, 0.417, 0.417], 2: [...]}   # optional; psi4 only (QCManyBody's rule)
    execution: {n_workers: 2, threads_per_task: 1, memory_per_task: 2.0, plugins: [my_module]}

A model chemistry has the keys ``program`` and ``method`` (required), ``basis`` and ``keywords``
(optional). Program, method and basis are lower-cased, as QCEngine and QCManyBody treat them
case-insensitively; keywords are passed on untouched. With ``model`` the single specification is
stored under QCManyBody's own label ``(auto)`` with ``levels`` left absent and ``max_nbody`` set.
With ``levels`` (contiguous from 1), consecutive levels with the same model chemistry are merged
into one QCManyBody level keyed by its highest n (``1: mp2, 2: mp2, 3: hf`` becomes
``{2: "mp2/cc-pvdz", 3: "hf/cc-pvdz"}``), because QCManyBody's keys mean "this model chemistry up
to n-body" and forbid duplicates. Specification labels read ``method/basis``, with
``program-`` in front when two programs share one, and ``(n-body)``/``(supersystem)`` behind a
model chemistry reused for a non-adjacent level or the supersystem.

The molecule keeps the geometry exactly as given (Angstrom converted with QCElemental's factor;
``fix_com`` and ``fix_orientation`` true) and always carries explicit fragment and total charges and
multiplicities (total multiplicity: the high-spin sum, as QCElemental's ``get_fragment`` uses), so
that QCElemental never searches charge/multiplicity combinations.

YAML notes: ``1e-10`` is read as a number (plain PyYAML would read a string) and a key given twice
is an error rather than silently the last one.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import yaml
from qcelemental import constants, periodictable
from qcelemental.models.v2 import Molecule
from qcmanybody.models.v2 import ManyBodyInput
from qcmanybody.v2.computer import ManyBodyComputer

from .errors import InputError
from .harnesses import check_model_chemistry, import_plugins
from .options import ExecutionOptions

__all__ = ["load_input", "parse_input", "validate_manybody_input"]

TOP_LEVEL_KEYS = (
    "molecule",
    "model",
    "levels",
    "bsse",
    "max_nbody",
    "driver",
    "return_total_data",
    "supersystem_ie_only",
    "cluster_results",
    "embedding_charges",
    "execution",
)
MOLECULE_KEYS = (
    "xyz",
    "geometry",
    "units",
    "fragments",
    "atoms_per_fragment",
    "fragment_charges",
    "fragment_multiplicities",
)
MODEL_KEYS = ("program", "method", "basis", "keywords")
DRIVERS = ("energy", "gradient", "hessian")
BSSE_TYPES = ("nocp", "cp", "vmfc")
CLUSTER_RESULTS = ("none", "all")
UNITS = ("angstrom", "bohr")

# The label ManyBodySpecification gives a lone AtomicSpecification, and the one the computer
# looks up when `levels` is absent.
SINGLE_MODEL_LABEL = "(auto)"
QCSCHEMA_NAME = "qcschema_many_body_input"
QCSCHEMA_V1_NAME = "qcschema_manybodyinput"

ANGSTROM_TO_BOHR = constants.conversion_factor("angstrom", "bohr")

# symbol (upper case) -> (canonical symbol, Z); "X" (dummy, Z=0) is no element
_ELEMENTS = {sym.upper(): (sym, z) for z, sym in enumerate(periodictable.E) if z > 0}


# ====  reading files  =========================================================


def load_input(path: str | os.PathLike) -> tuple[ManyBodyInput, ExecutionOptions]:
    """Read a QCSchema or friendly input file (``.json``: JSON, otherwise YAML) and validate it."""
    source = os.fspath(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{source}: no such file; check the path and the current directory") from None
    except IsADirectoryError:
        raise InputError(f"{source}: is a directory; give the input file inside it") from None
    except UnicodeDecodeError:
        raise InputError(f"{source}: is not a UTF-8 text file; give a JSON or YAML input file") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot be read ({exc.strerror}); check the path and its permissions") from None
    if file.suffix.lower() == ".json":
        data = _parse_json(text, source)
    else:
        data = _parse_yaml(text, source)
    return parse_input(data, file.parent, source)


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
        raise InputError(_one_line(f"{source}: malformed YAML{where}: {problem}; {advice}")) from None


# ====  parsing data  ==========================================================


def parse_input(
    data: Mapping, base_dir: str | os.PathLike | None = None, source: str = "<input>"
) -> tuple[ManyBodyInput, ExecutionOptions]:
    """Turn already-loaded file content into a validated ``(ManyBodyInput, ExecutionOptions)``.

    ``base_dir`` is where relative ``molecule.xyz`` paths are looked up (the input file's folder).
    Plugins named in ``execution.plugins`` are imported before model chemistries are checked.
    """
    where = _prefix(source)
    if data is None:
        raise InputError(f"{where}the input is empty; give a molecule and a model (or a QCSchema ManyBodyInput)")
    if not isinstance(data, Mapping):
        raise InputError(
            f"{where}the top level must be a mapping of keys to values (like molecule:, model:), "
            f"not a {_type_name(data)}"
        )
    data = dict(data)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if _is_qcschema(data, where):
        options = _execution_options(data.pop("execution", None), where)
        _import_plugins(options, where)
        mbi = _qcschema_input(data, where)
    else:
        options = _execution_options(data.get("execution"), where)
        _import_plugins(options, where)
        mbi = _friendly_input(data, base, where)
    validate_manybody_input(mbi, source)
    return mbi, options


def _import_plugins(options: ExecutionOptions, where: str) -> None:
    try:
        import_plugins(options.plugins)
    except InputError as exc:
        raise InputError(f"{where}{exc}") from None


def _is_qcschema(data: dict, where: str) -> bool:
    schema_name = data.get("schema_name")
    if schema_name in (QCSCHEMA_NAME, QCSCHEMA_V1_NAME):
        return True
    if schema_name is not None:
        raise InputError(
            f"{where}schema_name {schema_name!r} is not a many-body input; give a {QCSCHEMA_NAME!r} "
            "or the friendly format (molecule, model, ...)"
        )
    spec = data.get("specification")
    return "molecule" in data and isinstance(spec, Mapping) and "keywords" in spec


def _execution_options(values: Any, where: str) -> ExecutionOptions:
    if values is None:
        return ExecutionOptions()
    if not isinstance(values, Mapping):
        raise InputError(f"{where}execution must be a mapping such as {{n_workers: 4}}, not a {_type_name(values)}")
    try:
        return ExecutionOptions.from_mapping(values, where="execution")
    except InputError as exc:
        raise InputError(_one_line(f"{where}{exc}")) from None


# ----  QCSchema  --------------------------------------------------------------


def _qcschema_input(data: dict, where: str) -> ManyBodyInput:
    molecule = data.get("molecule")
    if isinstance(molecule, Mapping):
        data["molecule"] = _with_default_chgmult(dict(molecule))
    try:
        if data.get("schema_name") == QCSCHEMA_V1_NAME:
            from qcmanybody.models.v1 import ManyBodyInput as ManyBodyInputV1

            return ManyBodyInputV1(**data).convert_v(2)
        return ManyBodyInput(**data)
    except Exception as exc:  # pydantic, QCElemental and numpy all raise their own types for bad data
        extra = callable(getattr(exc, "errors", None)) and exc.errors()[0].get("type") == "extra_forbidden"
        raise InputError(
            _one_line(
                f"{where}invalid QCSchema ManyBodyInput: {_error_text(exc)}; "
                f"{'remove that field' if extra else 'fix that field'}"
            )
        ) from None


def _with_default_chgmult(molecule: dict) -> dict:
    """Fill neutral, lowest-multiplicity fragments when no charge/multiplicity is given at all.

    With all four fields absent, QCElemental's search (``validate_and_fill_chgmult``) tries every
    combination of fragment multiplicities 1 and 2 and returns exactly this answer, in time
    exponential in the number of fragments. Anything else is left for QCElemental to decide.
    """
    chgmult = ("molecular_charge", "fragment_charges", "molecular_multiplicity", "fragment_multiplicities")
    if molecule.get("validated") or any(molecule.get(key) is not None for key in chgmult):
        return molecule
    try:
        fragments = [[int(i) for i in fragment] for fragment in molecule["fragments"]]
        symbols = list(molecule["symbols"])
        real = molecule.get("real")
        if real is not None and not all(real):
            return molecule
        numbers = molecule.get("atomic_numbers")
        if numbers is None:
            numbers = [_ELEMENTS[str(symbol).upper()][1] for symbol in symbols]
        electrons = [sum(int(numbers[i]) for i in fragment) for fragment in fragments]
    except (KeyError, TypeError, ValueError, IndexError):
        return molecule  # malformed: QCElemental's validation names the problem
    if len(fragments) < 2:
        return molecule
    multiplicities = [1 if n % 2 == 0 else 2 for n in electrons]
    molecule.update(
        molecular_charge=0.0,
        fragment_charges=[0.0] * len(fragments),
        molecular_multiplicity=sum(m - 1 for m in multiplicities) + 1,
        fragment_multiplicities=multiplicities,
    )
    return molecule


# ----  friendly format  ---------------------------------------------------------


def _friendly_input(data: dict, base_dir: Path, where: str) -> ManyBodyInput:
    _check_keys(data, TOP_LEVEL_KEYS, "at the top level", where)
    if "molecule" not in data:
        raise InputError(f"{where}no molecule given; add a molecule section with xyz: <file> or geometry: <lines>")
    molecule = _friendly_molecule(data["molecule"], base_dir, where)
    nfragments = len(molecule.fragments)

    driver = data.get("driver", "energy")
    if not isinstance(driver, str) or driver.lower() not in DRIVERS:
        raise InputError(f"{where}unknown driver {driver!r}; use one of: {', '.join(DRIVERS)}")
    driver = driver.lower()

    keywords: dict[str, Any] = {}
    max_nbody = data.get("max_nbody")
    if max_nbody is not None:
        if isinstance(max_nbody, bool) or not isinstance(max_nbody, int):
            raise InputError(f"{where}max_nbody must be a whole number, got {max_nbody!r}")
        if not 1 <= max_nbody <= nfragments:
            raise InputError(
                f"{where}max_nbody {max_nbody} is out of range for {nfragments} fragments; "
                f"use a value from 1 to {nfragments}"
            )

    has_model, has_levels = data.get("model") is not None, data.get("levels") is not None
    if has_model == has_levels:
        raise InputError(
            f"{where}{'both model and levels are' if has_model else 'neither model nor levels is'} given; "
            "give either model (one model chemistry) or levels (one per n-body level)"
        )
    if has_model:
        model = _model_chemistry(data["model"], "model", where)
        specification = {SINGLE_MODEL_LABEL: _atomic_specification(model, driver)}
        keywords["max_nbody"] = max_nbody if max_nbody is not None else nfragments
    else:
        levels, labelled = _friendly_levels(data["levels"], nfragments, where)
        highest = max(n for n in levels if n != "supersystem")
        if max_nbody is not None and max_nbody != highest:
            raise InputError(
                f"{where}max_nbody {max_nbody} contradicts levels, which go up to {highest}-body; "
                f"drop max_nbody or make it {highest}"
            )
        specification = {label: _atomic_specification(model, driver) for label, model in labelled.items()}
        keywords["levels"] = levels
        keywords["max_nbody"] = highest

    if "bsse" in data:
        keywords["bsse_type"] = _bsse_types(data["bsse"], where)
    for flag in ("return_total_data", "supersystem_ie_only"):
        value = data.get(flag)
        if value is not None:
            if not isinstance(value, bool):
                raise InputError(f"{where}{flag} must be true or false, got {value!r}")
            keywords[flag] = value
    if data.get("embedding_charges") is not None:
        keywords["embedding_charges"] = _embedding_charges(data["embedding_charges"], where)

    many_body_spec: dict[str, Any] = {"driver": driver, "keywords": keywords, "specification": specification}
    cluster_results = data.get("cluster_results")
    if cluster_results is not None:
        if not isinstance(cluster_results, str) or cluster_results.lower() not in CLUSTER_RESULTS:
            raise InputError(f"{where}unknown cluster_results {cluster_results!r}; use none (default) or all")
        many_body_spec["protocols"] = {"cluster_results": cluster_results.lower()}
    try:
        return ManyBodyInput(specification=many_body_spec, molecule=molecule)
    except Exception as exc:
        raise InputError(_one_line(f"{where}{_error_text(exc)}")) from None


def _check_keys(values: Mapping, allowed: tuple[str, ...], place: str, where: str) -> None:
    for key in values:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{where}unknown key {key!r} {place}{hint}; allowed keys are: {', '.join(allowed)}")


def _model_chemistry(value: Any, name: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(
            f"{where}{name} must be a mapping such as {{program: pyscf, method: hf, basis: cc-pvdz}}, "
            f"not a {_type_name(value)}"
        )
    _check_keys(value, MODEL_KEYS, f"in {name}", where)
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


def _atomic_specification(chemistry: dict[str, Any], driver: str) -> dict[str, Any]:
    return {
        "program": chemistry["program"],
        "driver": driver,  # QCManyBody overrides it with the many-body driver anyway
        "model": {"method": chemistry["method"], "basis": chemistry["basis"]},
        "keywords": chemistry["keywords"],
    }


def _chemistry_key(chemistry: dict[str, Any]) -> tuple:
    return (
        chemistry["program"],
        chemistry["method"],
        chemistry["basis"],
        json.dumps(chemistry["keywords"], sort_keys=True, default=repr),
    )


def _friendly_levels(value: Any, nfragments: int, where: str) -> tuple[dict, dict[str, dict]]:
    """Per-level model chemistries -> (QCManyBody levels, label -> model chemistry)."""
    if not isinstance(value, Mapping) or not value:
        raise InputError(
            f"{where}levels must be a mapping of n-body level to model chemistry, "
            "such as {1: {program: pyscf, method: mp2, basis: cc-pvdz}, 2: {...}}"
        )
    per_level: dict[int, dict] = {}
    supersystem = None
    for key, chemistry in value.items():
        if isinstance(key, str) and key.strip().lower() == "supersystem":
            supersystem = _model_chemistry(chemistry, "levels.supersystem", where)
            continue
        level = _level_number(key)
        if level is None:
            raise InputError(
                f"{where}levels key {key!r} is not an n-body level; use whole numbers from 1 or 'supersystem'"
            )
        if level in per_level:
            raise InputError(f"{where}levels gives level {level} twice; keep only one")
        per_level[level] = _model_chemistry(chemistry, f"levels.{level}", where)
    if not per_level:
        raise InputError(f"{where}levels has only a supersystem entry; give the model chemistry of levels 1, 2, ...")
    highest = max(per_level)
    missing = [n for n in range(1, highest + 1) if n not in per_level]
    if missing:
        raise InputError(
            f"{where}levels must be contiguous from 1 to {highest}, but "
            f"{'level' if len(missing) == 1 else 'levels'} {', '.join(map(str, missing))} "
            f"{'is' if len(missing) == 1 else 'are'} missing; "
            "give every n-body level its model chemistry"
        )
    if highest > nfragments:
        raise InputError(
            f"{where}levels go up to {highest}-body but the molecule has only {nfragments} fragments; "
            f"remove the levels above {nfragments}"
        )

    # runs of consecutive levels with one model chemistry: (first n, last n, chemistry)
    runs: list[tuple[int, int, dict]] = []
    for n in range(1, highest + 1):
        if runs and _chemistry_key(runs[-1][2]) == _chemistry_key(per_level[n]):
            runs[-1] = (runs[-1][0], n, runs[-1][2])
        else:
            runs.append((n, n, per_level[n]))
    entries: list[tuple[int | str, str, dict]] = [
        (last, f"{first}-body" if first == last else f"{first}-{last}-body", chem) for first, last, chem in runs
    ]
    if supersystem is not None:
        entries.append(("supersystem", "supersystem", supersystem))

    names = _chemistry_labels([chem for _, _, chem in entries])
    levels: dict[int | str, str] = {}
    labelled: dict[str, dict] = {}
    for key, span, chem in entries:
        label = names[_chemistry_key(chem)]
        if label in labelled:
            # QCManyBody refuses one label on non-adjacent levels or twice in levels: the
            # same model chemistry gets a second name, as its error message recommends.
            label = f"{label} ({span})"
        labelled[label] = chem
        levels[key] = label
    return levels, labelled


def _level_number(key: Any) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key >= 1 else None
    if isinstance(key, str) and key.strip().isdigit() and int(key) >= 1:
        return int(key)
    return None


def _chemistry_labels(chemistries: list[dict]) -> dict[tuple, str]:
    """Readable, distinct labels: method/basis, program-method/basis if programs share it, then #n."""
    distinct: dict[tuple, dict] = {}
    for chem in chemistries:
        distinct.setdefault(_chemistry_key(chem), chem)

    def short(chem):
        return f"{chem['method']}/{chem['basis']}" if chem["basis"] else chem["method"]

    shorts = [short(chem) for chem in distinct.values()]
    labels: dict[tuple, str] = {}
    used: dict[str, int] = {}
    for key, chem in distinct.items():
        label = short(chem)
        if shorts.count(label) > 1:
            label = f"{chem['program']}-{label}"
        used[label] = used.get(label, 0) + 1
        if used[label] > 1:  # same program/method/basis, different keywords
            label = f"{label} #{used[label]}"
        labels[key] = label
    return labels


def _bsse_types(value: Any, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise InputError(f"{where}bsse must be one of {', '.join(BSSE_TYPES)} or a list of them, got {value!r}")
    result: list[str] = []
    for item in values:
        if not isinstance(item, str) or item.lower() not in BSSE_TYPES:
            raise InputError(f"{where}unknown bsse type {item!r}; use any of: {', '.join(BSSE_TYPES)}")
        if item.lower() not in result:
            result.append(item.lower())
    return result


def _embedding_charges(value: Any, where: str) -> dict[int, list[float]]:
    if not isinstance(value, Mapping):
        raise InputError(
            f"{where}embedding_charges must map each fragment number (from 1) to its atoms' charges, got {value!r}"
        )
    charges: dict[int, list[float]] = {}
    for key, values in value.items():
        fragment = _level_number(key)
        if fragment is None:
            raise InputError(f"{where}embedding_charges key {key!r} is not a fragment number (1, 2, ...)")
        if not isinstance(values, list) or not all(_is_number(q) for q in values):
            raise InputError(
                f"{where}embedding_charges for fragment {fragment} must be a list of numbers, got {values!r}"
            )
        charges[fragment] = [float(q) for q in values]
    return charges


# ----  molecule  ----------------------------------------------------------------


def _friendly_molecule(value: Any, base_dir: Path, where: str) -> Molecule:
    if not isinstance(value, Mapping):
        raise InputError(
            f"{where}molecule must be a mapping with xyz: <file> or geometry: <lines>, not a {_type_name(value)}"
        )
    _check_keys(value, MOLECULE_KEYS, "in molecule", where)

    units = value.get("units", "angstrom")
    if not isinstance(units, str) or units.lower() not in UNITS:
        raise InputError(f"{where}unknown molecule.units {units!r}; use angstrom or bohr")

    has_xyz, has_geometry = value.get("xyz") is not None, value.get("geometry") is not None
    if has_xyz and has_geometry:
        raise InputError(f"{where}molecule has both xyz and geometry; give only one of them")
    if has_xyz:
        symbols, coordinates, breaks = _read_xyz_file(value["xyz"], base_dir, where)
    elif has_geometry:
        if not isinstance(value["geometry"], str):
            raise InputError(
                f"{where}molecule.geometry must be text with one 'Symbol x y z' line per atom, "
                f"not a {_type_name(value['geometry'])}"
            )
        symbols, coordinates, breaks = _read_atom_lines(
            value["geometry"].splitlines(), 1, f"{where}molecule.geometry line"
        )
        if not symbols:
            raise InputError(f"{where}molecule.geometry has no atoms; give one 'Symbol x y z' line per atom")
    else:
        raise InputError(f"{where}molecule has no atoms; give xyz: <file> or geometry: <lines>")

    natom = len(symbols)
    fragments = _friendly_fragments(value, natom, breaks, where)
    check_fragments(fragments, natom, where)
    charges, multiplicities = _charges_and_multiplicities(value, symbols, fragments, where)

    geometry = np.array(coordinates, dtype=float).reshape(natom, 3)
    if units.lower() == "angstrom":
        geometry = geometry * ANGSTROM_TO_BOHR
    try:
        return Molecule(
            symbols=symbols,
            geometry=geometry,
            fragments=fragments,
            fragment_charges=charges,
            fragment_multiplicities=multiplicities,
            # explicit totals consistent with the fragments: QCElemental then checks, never searches
            molecular_charge=float(sum(charges)),
            molecular_multiplicity=sum(m - 1 for m in multiplicities) + 1,
            fix_com=True,
            fix_orientation=True,
        )
    except Exception as exc:
        raise InputError(_one_line(f"{where}the molecule is invalid: {_error_text(exc)}")) from None


def _read_xyz_file(name: Any, base_dir: Path, where: str) -> tuple[list[str], list[list[float]], list[int]]:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}molecule.xyz must be a file name, got {name!r}")
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(
            f"{where}molecule.xyz file {os.fspath(path)!r} not found; the path is relative to the input file's folder"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}molecule.xyz file {os.fspath(path)!r} cannot be read ({exc})") from None
    label = f"{where}{name}"
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"{label} is empty; an xyz file starts with the number of atoms, then a comment line")
    first = lines[0].split()
    if len(first) != 1 or not first[0].isdigit():
        raise InputError(
            f"{label} line 1 should be the number of atoms, got {lines[0].strip()!r}; "
            "an xyz file starts with the atom count, then a comment line, then 'Symbol x y z' lines"
        )
    count = int(first[0])
    symbols, coordinates, breaks = _read_atom_lines(lines[2:], 3, f"{label} line")
    if count != len(symbols):
        raise InputError(
            f"{label} line 1 says {count} atoms but the file has {len(symbols)} atom lines; "
            "fix the count (separator lines '--' are not atoms)"
        )
    return symbols, coordinates, breaks


def _read_atom_lines(lines: list[str], first_line: int, label: str) -> tuple[list[str], list[list[float]], list[int]]:
    """'Symbol x y z' lines, '--' separators -> symbols, coordinates, atom counts at each separator."""
    symbols: list[str] = []
    coordinates: list[list[float]] = []
    breaks: list[int] = []
    for number, line in enumerate(lines, start=first_line):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if text == "--":
            breaks.append(len(symbols))
            continue
        fields = text.split()
        if len(fields) != 4:
            raise InputError(f"{label} {number}: expected 'Symbol x y z', got {line.strip()!r}")
        symbols.append(_element(fields[0], f"{label} {number}"))
        bad = [x for x in fields[1:] if not _is_float(x)]
        if bad:
            raise InputError(f"{label} {number}: coordinate {bad[0]!r} is not a number; atom lines are 'Symbol x y z'")
        coordinates.append([float(x) for x in fields[1:]])
    return symbols, coordinates, breaks


def _element(token: str, label: str) -> str:
    if token.isdigit() and 0 < int(token) < len(periodictable.E):
        return periodictable.E[int(token)]
    found = _ELEMENTS.get(token.upper())
    if found is None:
        raise InputError(
            f"{label}: unknown element symbol {token!r}; use a symbol from the periodic table such as H, C, O or He"
        )
    return found[0]


def _friendly_fragments(value: Mapping, natom: int, breaks: list[int], where: str) -> list[list[int]]:
    given = [key for key in ("fragments", "atoms_per_fragment") if value.get(key) is not None]
    if breaks:
        given.append("'--' separator lines")
    if len(given) > 1:
        raise InputError(f"{where}molecule gives both {given[0]} and {given[1]}; define the fragments one way only")
    if not given:
        raise InputError(
            f"{where}molecule has no fragments; give molecule.fragments, molecule.atoms_per_fragment, "
            "or separate fragments with '--' lines"
        )
    if breaks:
        bounds = [0, *breaks, natom]
        fragments = [list(range(start, stop)) for start, stop in zip(bounds, bounds[1:], strict=False)]
        if any(not fragment for fragment in fragments):
            raise InputError(
                f"{where}the '--' lines leave an empty fragment (a '--' first, last or twice in a row); "
                "remove the extra '--'"
            )
        return fragments
    if value.get("atoms_per_fragment") is not None:
        size = value["atoms_per_fragment"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InputError(f"{where}molecule.atoms_per_fragment must be a whole number of at least 1, got {size!r}")
        if natom % size:
            raise InputError(
                f"{where}molecule.atoms_per_fragment {size} does not divide the {natom} atoms into whole fragments; "
                "fix atoms_per_fragment or use molecule.fragments"
            )
        return [list(range(start, start + size)) for start in range(0, natom, size)]
    fragments = value["fragments"]
    if not isinstance(fragments, list) or not all(
        isinstance(fragment, list) and all(_is_index(i) for i in fragment) for fragment in fragments
    ):
        raise InputError(
            f"{where}molecule.fragments must be a list of lists of 0-based atom indices, such as [[0, 1, 2], [3, 4, 5]]"
        )
    return fragments


def check_fragments(fragments: list[list[int]], natom: int, where: str = "") -> None:
    """Each atom in exactly one fragment, and fragments are consecutive runs in atom order.

    QCManyBody needs the latter (``ManyBodyCore`` refuses "non-contiguous fragments"). Fragments
    are numbered from 1 in messages (as in QCManyBody labels), atoms by their 0-based index.
    """
    owner: dict[int, int] = {}
    for number, fragment in enumerate(fragments, start=1):
        if not fragment:
            raise InputError(f"{where}fragment {number} is empty; every fragment needs at least one atom")
        for atom in fragment:
            if not 0 <= atom < natom:
                raise InputError(
                    f"{where}fragment {number} contains atom {atom}, but the molecule has {natom} atoms "
                    f"(indices 0 to {natom - 1}); atom indices count from 0"
                )
            if atom in owner:
                other = owner[atom]
                raise InputError(
                    f"{where}fragment {number} contains atom {atom}, which is "
                    f"{'also in fragment ' + str(other) if other != number else 'listed twice in it'}; "
                    "every atom must belong to exactly one fragment"
                )
            owner[atom] = number
    unassigned = [atom for atom in range(natom) if atom not in owner]
    if unassigned:
        shown = ", ".join(map(str, unassigned[:10])) + (", ..." if len(unassigned) > 10 else "")
        raise InputError(
            f"{where}atom{'s' if len(unassigned) > 1 else ''} {shown} {'are' if len(unassigned) > 1 else 'is'} "
            "in no fragment; every atom must belong to exactly one fragment"
        )
    start = 0
    for number, fragment in enumerate(fragments, start=1):
        if list(fragment) != list(range(start, start + len(fragment))):
            raise InputError(
                f"{where}fragment {number} is atoms {_short_list(fragment)}, but QCManyBody needs each fragment "
                f"to be a run of consecutive atoms in file order, fragment 1 first (here atoms "
                f"{start} to {start + len(fragment) - 1}); reorder the atoms so each fragment's atoms are together"
            )
        start += len(fragment)


def _charges_and_multiplicities(
    value: Mapping, symbols: list[str], fragments: list[list[int]], where: str
) -> tuple[list[float], list[int]]:
    nfragments = len(fragments)
    charges = value.get("fragment_charges")
    if charges is None:
        charges = [0] * nfragments
    elif not isinstance(charges, list) or len(charges) != nfragments:
        raise InputError(
            f"{where}molecule.fragment_charges must list one charge per fragment ({nfragments}), got {_show(charges)}"
        )
    for number, charge in enumerate(charges, start=1):
        if not _is_number(charge) or not float(charge).is_integer():
            raise InputError(f"{where}fragment {number} charge must be a whole number, got {charge!r}")
    charges = [int(charge) for charge in charges]

    neutral_electrons = [sum(_ELEMENTS[symbols[i].upper()][1] for i in fragment) for fragment in fragments]
    electrons = [n - charge for n, charge in zip(neutral_electrons, charges, strict=True)]
    multiplicities = value.get("fragment_multiplicities")
    if multiplicities is None:
        multiplicities = [1 if n % 2 == 0 else 2 for n in electrons]
    elif isinstance(multiplicities, list) and len(multiplicities) == nfragments:
        # 1.0 from a JSON writer is a fine multiplicity 1
        multiplicities = [int(m) if _is_number(m) and float(m).is_integer() else m for m in multiplicities]
    else:
        raise InputError(
            f"{where}molecule.fragment_multiplicities must list one multiplicity per fragment ({nfragments}), "
            f"got {_show(multiplicities)}"
        )

    for number, (fragment, charge, neutral, n, mult) in enumerate(
        zip(fragments, charges, neutral_electrons, electrons, multiplicities, strict=True), start=1
    ):
        what = f"fragment {number} ({_formula([symbols[i] for i in fragment])}"
        if isinstance(mult, bool) or not isinstance(mult, int) or mult < 1:
            raise InputError(f"{where}{what}) multiplicity must be a whole number of at least 1, got {mult!r}")
        if n < 0:
            raise InputError(
                f"{where}{what}) has only {neutral} electrons when neutral, so it cannot have charge {charge}; "
                "fix molecule.fragment_charges"
            )
        if mult - 1 > n:
            raise InputError(
                f"{where}{what}, charge {charge}) has {n} electrons, too few for multiplicity {mult}; "
                "fix molecule.fragment_multiplicities or molecule.fragment_charges"
            )
        if (n - (mult - 1)) % 2:
            parity = "odd (1, 3, ...)" if n % 2 == 0 else "even (2, 4, ...)"
            raise InputError(
                f"{where}{what}, charge {charge}) has {n} electrons, so its multiplicity must be {parity}, "
                f"not {mult}; fix molecule.fragment_multiplicities or molecule.fragment_charges"
            )
    return [float(charge) for charge in charges], list(multiplicities)


# ====  validation of any ManyBodyInput  =======================================


def validate_manybody_input(mbi: ManyBodyInput, source: str = "<input>") -> None:
    """Refuse a ManyBodyInput that QCManyBody or a QC program would fail on, before any QC work.

    Checks the fragments, levels and max_nbody, embedding charges (psi4 only), builds
    QCManyBody's ``ManyBodyComputer`` (without tasks) so its own validators run, and checks every
    model chemistry with its program (``check_model_chemistry``).
    """
    where = _prefix(source)
    spec = mbi.specification
    keywords = spec.keywords
    molecule = mbi.molecule
    driver = spec.driver.value if hasattr(spec.driver, "value") else str(spec.driver)
    if driver not in DRIVERS:
        raise InputError(f"{where}driver {driver!r} cannot be expanded in fragments; use one of: {', '.join(DRIVERS)}")

    natom = len(molecule.symbols)
    fragments = [[int(i) for i in fragment] for fragment in molecule.fragments]
    nfragments = len(fragments)
    if nfragments < 2:
        raise InputError(
            f"{where}the molecule has only one fragment, so there is nothing to expand; define at least two fragments"
        )
    check_fragments(fragments, natom, where)

    if keywords.max_nbody is not None and not 1 <= keywords.max_nbody <= nfragments:
        raise InputError(
            f"{where}max_nbody {keywords.max_nbody} is out of range for {nfragments} fragments; "
            f"use a value from 1 to {nfragments}"
        )

    labels = list(spec.specification)
    if keywords.levels is None:
        if SINGLE_MODEL_LABEL not in spec.specification:
            raise InputError(
                f"{where}without keywords.levels QCManyBody uses the specification labelled "
                f"{SINGLE_MODEL_LABEL!r}, but the labels are {', '.join(map(repr, labels))}; "
                "add keywords.levels naming them, or give a single specification"
            )
        used = [SINGLE_MODEL_LABEL]
    else:
        numeric = [n for n in keywords.levels if n != "supersystem"]
        if not numeric:
            raise InputError(f"{where}keywords.levels has no n-body level, only 'supersystem'; add levels 1, 2, ...")
        for level, label in keywords.levels.items():
            if label not in spec.specification:
                raise InputError(
                    f"{where}keywords.levels[{level!r}] names model chemistry {label!r}, which is not in "
                    f"specification; use one of: {', '.join(map(repr, labels))}"
                )
        highest = max(numeric)
        if highest > nfragments:
            raise InputError(
                f"{where}keywords.levels go up to {highest}-body but the molecule has only {nfragments} fragments; "
                f"remove the levels above {nfragments}"
            )
        if keywords.max_nbody is not None and keywords.max_nbody != highest:
            # QCManyBody would silently replace levels by {max_nbody: "(auto)"}
            raise InputError(
                f"{where}max_nbody {keywords.max_nbody} contradicts keywords.levels, which go up to {highest}-body; "
                f"drop max_nbody or make it {highest}"
            )
        used = list(dict.fromkeys(keywords.levels.values()))

    if keywords.embedding_charges:
        for label in used:
            program = spec.specification[label].program
            if program.lower() != "psi4":
                raise InputError(
                    f"{where}embedding_charges work only with program psi4 (QCManyBody passes them to Psi4 alone), "
                    f"but model chemistry {label!r} uses {program!r}; remove embedding_charges or use psi4"
                )
        expected = set(range(1, nfragments + 1))
        if set(keywords.embedding_charges) != expected:
            raise InputError(
                f"{where}embedding_charges must have an entry for every fragment 1 to {nfragments}, "
                f"got fragments {sorted(keywords.embedding_charges)}"
            )
        for number, charges in sorted(keywords.embedding_charges.items()):
            if len(charges) != len(fragments[number - 1]):
                raise InputError(
                    f"{where}embedding_charges for fragment {number} has {len(charges)} charges but the fragment "
                    f"has {len(fragments[number - 1])} atoms; give one charge per atom"
                )

    try:
        ManyBodyComputer.from_manybodyinput(mbi, build_tasks=False)
    except (pydantic.ValidationError, ValueError, AssertionError, RuntimeError, KeyError, TypeError) as exc:
        raise InputError(_one_line(f"{where}QCManyBody refuses this input: {_error_text(exc)}")) from None

    for label, atomic in spec.specification.items():
        basis = atomic.model.basis
        if basis is not None and not isinstance(basis, str):
            basis = getattr(basis, "name", str(basis))
        try:
            check_model_chemistry(atomic.program, atomic.model.method, basis, driver, dict(atomic.keywords))
        except InputError as exc:
            raise InputError(_one_line(f"{where}model chemistry {label!r}: {exc}")) from None


# ====  small helpers  =========================================================


def _prefix(source: str) -> str:
    return f"{source}: " if source and source != "<input>" else ""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_text(exc: BaseException) -> str:
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
            return _one_line(f"{location}: {message}{shown}{more}" if location else f"{message}{shown}{more}")
    name = type(exc).__name__
    if name == "NotAnElementError":
        return f"unknown element symbol {str(exc)!r}"
    text = str(getattr(exc, "message", None) or exc) or name
    if isinstance(exc, KeyError):
        text = f"missing entry {exc.args[0]!r}" if exc.args else name
    return _one_line(text)


def _type_name(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


def _formula(symbols: list[str]) -> str:
    counts: dict[str, int] = {}
    for symbol in symbols:
        counts[symbol] = counts.get(symbol, 0) + 1
    return "".join(f"{symbol}{count if count > 1 else ''}" for symbol, count in counts.items())


def _show(value: Any) -> str:
    if isinstance(value, list) and len(value) > 8:
        return f"a list of {len(value)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _short_list(values: list[int]) -> str:
    return "[" + ", ".join(map(str, values[:8])) + (", ...]" if len(values) > 8 else "]")
