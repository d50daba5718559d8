"""Input files -> ``(ManyBodyInput, ExecutionOptions)``, with one readable sentence for every mistake.

Two formats are read, from ``.json`` files (JSON) or any other file (YAML, a superset of JSON), and
told apart automatically.

**QCSchema** -- a QCManyBody ``ManyBodyInput`` exactly as ``ManyBodyInput.model_dump_json()`` writes
it. It is recognised by ``schema_name: qcschema_many_body_input`` or by top-level ``specification``
and ``molecule`` keys with ``specification.keywords``; a v1 ``qcschema_manybodyinput`` is converted
to v2. Two keys may be added beside the schema fields: ``execution`` and ``screening`` (same as
below), which are removed before the model is validated (the screening rules are then stored in
``specification.extras["mbe_mpi"]["screening"]``, where a ManyBodyInput may also carry them). A hand-written molecule with fragments but with none of
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
    screening:                      # optional: compute only the n-mers these rules keep (docs/screening.md)
      distance: {2: 8.0, 3: 6.0}    # Angstrom: closest atom-atom contact of every pair of fragments
      energy: {3: 1.0e-5}           # Eh: largest |increment| of the (n-1)-body sub-clusters (n >= 3)
      prescreen: {model: {program: tblite, method: gfn2-xtb}, threshold: {2: 1.0e-5, 3: 1.0e-5}}

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

from .parse import attach_screening, load_input, parse_input
from .validate import validate_manybody_input

__all__ = ["attach_screening", "load_input", "parse_input", "validate_manybody_input"]
