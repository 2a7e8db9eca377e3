"""``results.csv``: one row per pretrained x fine-tuned model with every metric and analysis of its nodes."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from ..results_columns import headline, task_columns
from .plan import Plan, Row
from .stages import STAGES
from .state import read_marker


def _row_status(plan: Plan, row: Row, states: dict[str, str]) -> tuple[str, str | None, str | None]:
    ids = [row.pretrain] + ([row.analyze] if row.analyze else []) + [i for _, f, e in row.finetunes
                                                                      for i in (f, e) if i]
    for want in ("failed", "skipped", "running", "pending"):
        for nid in ids:
            if states.get(nid) == want:
                m = read_marker(plan.root, nid) or {}
                return want, nid, m.get("reason")
    return "completed", None, None


def collect_row(plan: Plan, row: Row, states: dict[str, str], study_dir: Path) -> dict[str, Any]:
    """Axis values, status, then what each of the row's nodes contributes (`Stage.metrics`) and the headline."""
    model = plan.nodes[row.pretrain]
    out: dict[str, Any] = dict(row.axes, run=os.path.relpath(model.out, study_dir))
    status, node, reason = _row_status(plan, row, states)
    out.update(status=status, failed_node=node, reason=reason)
    out.update(STAGES[model.kind].metrics(model, model.label))
    if row.analyze:
        out.update(STAGES["analyze"].metrics(plan.nodes[row.analyze], model.label))
    per_task: dict[str, dict[str, Any]] = {}  # task label -> {family, metrics, stability, ...}
    runs = []
    for task, f_id, e_id in row.finetunes:
        runs.append(os.path.relpath(plan.nodes[f_id].out, study_dir))
        out.update(STAGES["finetune"].metrics(plan.nodes[f_id], task))
        if e_id is not None:
            per_task[task] = task_columns(task, Path(plan.nodes[e_id].out), out)
    if runs:
        out["finetune_runs"] = ";".join(runs)
    out.update(headline(per_task))
    return out


def collect_rows(plan: Plan, states: dict[str, str], study_dir: Path) -> list[dict[str, Any]]:
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
