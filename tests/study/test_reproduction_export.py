"""The committed reproduction (docs/reproduction.md, issue 16) rebuilds from its exported small files: today's
`plasticity report` gives the very numbers the doc quotes (report/summary.json), so a change to the report's
arithmetic cannot silently drift away from the published tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import REPO, run_cli

EXPORT = REPO / "docs" / "reproduction"
STUDY = "reproduction-wd-20tpp"


def test_committed_reproduction_rebuilds_the_same_numbers(tmp_path: Path) -> None:
    copy = tmp_path / "reproduction"
    shutil.copytree(EXPORT, copy, ignore=shutil.ignore_patterns("report"))  # rebuild the report from scratch
    r = run_cli("report", str(copy / STUDY))
    assert r.returncode == 0, r.stderr[-3000:]
    committed = json.loads((EXPORT / STUDY / "report" / "summary.json").read_text())
    rebuilt = json.loads((copy / STUDY / "report" / "summary.json").read_text())
    assert rebuilt == committed
    assert committed["n_runs"] == 10 and committed["weight_decays"] == [0.0, 0.1, 0.3, 1.0, 3.0]
    downstream = EXPORT / STUDY / "report" / "downstream.csv"
    if downstream.exists():  # absent from the interim export, which had no finished fine-tuning
        assert (copy / STUDY / "report" / "downstream.csv").read_bytes() == downstream.read_bytes()
