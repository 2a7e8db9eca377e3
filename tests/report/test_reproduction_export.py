"""The committed reproduction (docs/reproduction.md, issue 16) rebuilds from its exported small files: today's
`plasticity report` gives the very numbers the doc quotes (report/summary.json, report/downstream.csv, and the
post-hoc view with the template-scored sst2 accuracy), so a change to the report's arithmetic cannot silently
drift away from the published tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import REPO, run_cli

EXPORT = REPO / "docs" / "reproduction"
STUDY = "reproduction-wd-20tpp"
POSTHOC = ("report-sst2-template", "addition=greedy,sst2=acc_template")


def test_committed_reproduction_rebuilds_the_same_numbers(tmp_path: Path) -> None:
    copy = tmp_path / "reproduction"
    shutil.copytree(EXPORT, copy, ignore=shutil.ignore_patterns("report*"))  # rebuild the reports from scratch
    r = run_cli("report", str(copy / STUDY))
    assert r.returncode == 0, r.stderr[-3000:]
    name, headline = POSTHOC
    r = run_cli("report", str(copy / STUDY), "--headline", headline, "--out", str(copy / STUDY / name))
    assert r.returncode == 0, r.stderr[-3000:]
    for report in ("report", name):
        committed, rebuilt = EXPORT / STUDY / report, copy / STUDY / report
        summaries = [json.loads((d / "summary.json").read_text()) for d in (rebuilt, committed)]
        assert summaries[0] == summaries[1]
        assert (rebuilt / "downstream.csv").read_bytes() == (committed / "downstream.csv").read_bytes()
    s = json.loads((EXPORT / STUDY / "report" / "summary.json").read_text())
    assert s["n_runs"] == 10 and s["weight_decays"] == [0.0, 0.1, 0.3, 1.0, 3.0]
    assert all(d["n"] == 2 for d in s["columns"]["headline"]["per_wd"].values())  # every run fine-tuned and evaluated
