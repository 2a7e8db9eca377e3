"""Kill-harness bookkeeping: every kill point's JSON record travels on its test report (so that it reaches the
pytest-xdist controller too); tests/conftest.py::pytest_terminal_summary ends the session with a tally."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def kill_records(request: pytest.FixtureRequest):
    """This test's kill-point records (appended to by tests/reliability/test_kill_harness.py), attached to its
    teardown report as ``("killpoint", record)`` user properties."""
    records: list[dict[str, Any]] = []
    yield records
    request.node.user_properties.extend(("killpoint", r) for r in records)
