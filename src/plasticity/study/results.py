"""``results.csv``: one row per pretrained x fine-tuned model with every metric and analysis of its nodes."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from plasticity.study.plan import Plan, Row
from plasticity.study.stages import STAGES
from plasticity.study.state import read_marker


def _row_status(plan: Plan, row: Row, states: dict[str, str]) -> tuple[str, str | None, str | None]:
    for want in ("failed", "skipped", "running", "pending"):
        for _, nid in row.nodes:
            if states.get(nid) == want:
                m = read_marker(plan.root, nid) or {}
                return want, nid, m.get("reason")
    return "completed", None, None


def collect_row(plan: Plan, row: Row, states: dict[str, str], study_dir: Path) -> dict[str, Any]:
    """Axis values, the model's run, status, then the columns each stage makes of its nodes in the row
    (`Stage.columns`), in stage order."""
    model = plan.nodes[row.model]
    out: dict[str, Any] = dict(row.axes, run=os.path.relpath(model.out, study_dir))
    status, node, reason = _row_status(plan, row, states)
    out.update(status=status, failed_node=node, reason=reason)
    for stage in STAGES.values():
        if mine := plan.row_nodes(row, stage.kind):
            out.update(stage.columns(mine, study_dir))
    return out


def collect_rows(plan: Plan, states: dict[str, str], study_dir: Path) -> list[dict[str, Any]]:
    """Every row of the plan (`collect_row`)."""
    return [collect_row(plan, r, states, study_dir) for r in plan.rows]


def to_csv(rows: list[dict[str, Any]], axes: list[str]) -> str:
    """Axis columns first, then `run`, then the rest alphabetically."""
    cols = sorted({c for r in rows for c in r}, key=lambda c: (c not in axes, axes.index(c) if c in axes else 0,
                                                                c != "run", c))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
