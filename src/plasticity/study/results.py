"""``results.csv``: one row per pretrained x fine-tuned model with every metric and analysis of its nodes."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from ..report.selection import OUR_METRICS
from .plan import Plan, Row
from .stages import STAGES
from .stages.evaluate import task_results
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
            per_task[task] = task_results(task, Path(plan.nodes[e_id].out), out)
    if runs:
        out["finetune_runs"] = ";".join(runs)
    out.update(headline(per_task))
    return out


_task_results = task_results  # the name `plasticity analyze --finetuned` imports


def data_note(used: dict[str, Any]) -> str:
    """``<source> n=<rows> (<origins>)`` plus ``; note: <notes>`` (substitutions for paper datasets, caveats)."""
    text = f"{used.get('source')} n={used.get('n')} ({'; '.join(used.get('origins') or [])})"
    notes = " ".join(used.get("notes") or [])
    return text + (f"; note: {notes}" if notes else "")


def headline(per_task: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The paper's averaged headline (Figs 2, 9g, 10): per family (cot, cloze, safety) and paper metric (not
    `OUR_METRICS`), the mean over the row's fine-tuning tasks of that family (a metric only when every such task
    has it), ``avg_<family>/tasks`` naming them; ``stability`` / ``upstream_loss_change`` / ``upstream_acc``: mean
    over the CoT tasks (all tasks when none is CoT); ``upstream_acc_pretrained``: the pretrained model's mean
    cloze accuracy on the stability tasks (App. D, Fig 17)."""
    out: dict[str, Any] = {}
    fams: dict[str, list[str]] = {}
    for task, r in per_task.items():
        if r["family"]:
            fams.setdefault(r["family"], []).append(task)
    for fam, tasks in sorted(fams.items()):
        out[f"avg_{fam}/tasks"] = ";".join(tasks)
        for m in (m for m in per_task[tasks[0]]["metrics"] if m not in OUR_METRICS):
            vals = [per_task[t]["metrics"].get(m) for t in tasks]
            if all(isinstance(v, int | float) for v in vals):
                out[f"avg_{fam}/{m}"] = sum(vals) / len(vals)
    over = fams.get("cot") or list(per_task)
    for col, key in (("stability", "stability"), ("upstream_loss_change", "upstream_loss_change"),
                     ("upstream_acc", "finetuned_avg_acc")):
        vals = [per_task[t]["stability"].get(key) for t in over if per_task[t]["stability"]]
        vals = [v for v in vals if isinstance(v, int | float)]
        if vals:
            out[col] = sum(vals) / len(vals)
    base = [r["stability"].get("base_avg_acc") for r in per_task.values() if r["stability"]]
    base = [v for v in base if isinstance(v, int | float)]
    if base:
        out["upstream_acc_pretrained"] = base[0]  # one pretrained model per row: the same in every task's file
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
