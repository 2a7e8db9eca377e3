"""docs/reproduction.md quotes scripts/reproduction_tables.py: every table and number block the script computes
from the committed export appears in the doc verbatim, so no number there is typed by hand."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

STUDY = REPO / "docs" / "reproduction" / "reproduction-wd-20tpp"


def test_every_block_of_the_tables_script_is_in_the_doc() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduction_tables.py"),
                        str(STUDY / "report" / "summary.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    blocks = [b for b in r.stdout.strip().split("\n\n") if b.strip()]
    assert len(blocks) == 11  # per-wd, verdicts, correlation, post-hoc, paired, permutation, claim 2 (x2), ...
    doc = (REPO / "docs" / "reproduction.md").read_text()
    for b in blocks:
        assert b in doc, b[:200]
    assert "seed range [min, max] of the 2 seeds" in blocks[0]
    assert "| seed 1 minus seed 0 | -0.041 | -0.043 | -0.046 | -0.043 | -0.063 |" in r.stdout
    assert "| AG News alone, best layer | -0.12 |" in r.stdout


def test_summary_json_calls_two_seed_intervals_seed_ranges() -> None:
    s = json.loads((STUDY / "report" / "summary.json").read_text())
    cells = [d for c in s["columns"].values() for d in c["per_wd"].values()]
    assert {d["interval"] for d in cells if d["n"] == 2} == {"seed range (min-max of 2 seeds)"}
    assert all(d["ci_low"] == min(d["ci_low"], d["mean"]) for d in cells)
