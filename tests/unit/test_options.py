"""Execution options: validation and how file values and flags combine."""

from __future__ import annotations

import pytest

from mbe_mpi.errors import InputError
from mbe_mpi.options import ExecutionOptions


def test_flags_override_file_values_and_plugins_add_up():
    from_file = ExecutionOptions.from_mapping({"n_workers": 4, "plugins": ["a"], "memory_per_task": 2})
    merged = from_file.merged(n_workers=2, threads_per_task=None, plugins=("b",))
    assert merged.n_workers == 2
    assert merged.memory_per_task == 2.0
    assert merged.plugins == ("a", "b")
    assert from_file.merged(plugins=()).plugins == ("a",)  # no flag keeps the file's plugins


@pytest.mark.parametrize("values, message", [
    ({"n_workers": 0}, "n_workers"),
    ({"n_workers": 2.5}, "n_workers"),
    ({"threads_per_task": "two"}, "threads_per_task"),
    ({"memory_per_task": -1}, "memory_per_task"),
    ({"plugins": [3]}, "plugins"),
    ({"workers": 2}, "unknown option 'workers'"),
])
def test_nonsense_is_refused(values, message):
    with pytest.raises(InputError, match=message):
        ExecutionOptions.from_mapping(values)
