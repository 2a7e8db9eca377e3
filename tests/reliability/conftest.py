"""Kill-harness bookkeeping: every kill point stores its JSON record; the session ends with a one-line tally."""

from __future__ import annotations

import json
from typing import Any

import pytest

KILL_RECORDS = pytest.StashKey[list]()


@pytest.fixture
def kill_records(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The session's kill-point records (appended to by tests/reliability/test_kill_harness.py)."""
    return request.config.stash.setdefault(KILL_RECORDS, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    records: list[dict[str, Any]] = config.stash.get(KILL_RECORDS, [])
    if not records:
        return
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    identical = sum(r["identical"] for r in records)
    parts = ", ".join(f"{k} {sum(r['identical'] for r in v)}/{len(v)}" for k, v in sorted(by_kind.items()))
    no_progress = sum(r["kills"][0]["no_progress"] for r in records)
    kills = sum(len(r["kills"]) for r in records)
    terminalreporter.write_line(
        f"kill harness: {len(records)} kill points ({kills} SIGKILLs, {no_progress} before anything was written), "
        f"{identical} identical to the uninterrupted run ({parts})")
    landed: dict[str, int] = {}
    for r in records:
        for k in r["kills"]:
            landed[k["landed"]] = landed.get(k["landed"], 0) + 1
    terminalreporter.write_line(f"kill harness: kills landed in {json.dumps(landed, sort_keys=True)}")
