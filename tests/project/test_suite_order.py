"""The test suite's own scheduling list stays true to the files it names."""

from __future__ import annotations

from tests.conftest import LONG_FILES_FIRST, REPO


def test_long_files_first_names_existing_test_files() -> None:
    """A renamed or deleted file in tests/conftest.py::LONG_FILES_FIRST would silently stop running first."""
    missing = [f for f in LONG_FILES_FIRST if not (REPO / f).is_file()]
    assert not missing, f"tests/conftest.py LONG_FILES_FIRST names files that do not exist: {missing}"
