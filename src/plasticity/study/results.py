"""``results.csv``: one row per pretrained x fine-tuned model with every metric and analysis of its nodes."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from .plan import Plan, Row
from .state import read_marker


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
    pre = plan.nodes[row.pretrain]
    p = Path(pre.out)
    out: dict[str, Any] = dict(row.axes, run=os.path.relpath(p, study_dir))
    status, node, reason = _row_status(plan, row, states)
    out.update(status=status, failed_node=node, reason=reason)
    s = _json(p / "summary.json") or {}
    out.update(val_loss=s.get("final_val_loss"), train_loss=s.get("final_train_loss"), tokens=s.get("tokens_seen"),
               params=s.get("params_total"))
    a = p / "analysis"
    if (norms := _json(a / "norms.json")) is not None:
        out["weight_norm"] = norms["total_norm"]
    if (rank := _json(a / "rank.json")) is not None:
        last = rank["checkpoints"][-1]["mean"]
        out["qk_rank_frac"], out["vp_rank_frac"] = last["qk"]["fraction"], last["vp"]["fraction"]
    if (gap := _json(a / "gap.json")) is not None:
        out["train_val_gap"] = gap["train_val"]["gap"]
        out["unseen_seen_gap"] = (gap.get("unseen_seen") or {}).get("gap")
    if (probes := _json(a / "probes.json")) is not None:
        for name, ps in probes["sets"].items():
            out[f"probe_{name}"] = ps["best_test_accuracy"]
        from ..report.build import probe_mean_best

        out["probe_mean_best"] = probe_mean_best(probes)  # paper Fig. 25: sets averaged per layer, best layer
    per_task: dict[str, dict[str, Any]] = {}  # task label -> {family, metrics, stability, ...}
    for task, f_id, e_id in row.finetunes:
        out.setdefault("finetune_runs", [])
        out["finetune_runs"].append(os.path.relpath(plan.nodes[f_id].out, study_dir))
        if (t_on := (_json(Path(plan.nodes[f_id].out) / "summary.json") or {}).get("trained_on")) is not None:
            out[f"{task}/trained_on"] = data_note(t_on)
        if e_id is not None:
            per_task[task] = _task_results(task, Path(plan.nodes[e_id].out), out)
    if "finetune_runs" in out:
        out["finetune_runs"] = ";".join(out["finetune_runs"])
    out.update(headline(per_task))
    return out


def _task_results(task: str, edir: Path, out: dict[str, Any]) -> dict[str, Any]:
    """Write ``{task}/{eval_set}/{metric}`` columns of one evaluate node into `out`; return what the averages
    need: the family, one value per metric (the pooled set when the task has several eval sets) and stability."""
    res: dict[str, Any] = {"family": None, "metrics": {}, "stability": {}}
    sets: dict[str, dict[str, Any]] = {}
    for f in sorted(edir.glob("*.json")) if edir.is_dir() else []:
        d = _json(f)
        if d is None:
            continue
        if f.name == "stability.json":
            res["stability"] = d
        elif "metrics" in d:
            sets[d["task"]] = d
            for m, v in d["metrics"].items():
                out[f"{task}/{d['task']}/{m}"] = v["value"]
            used = d.get("evaluated_on")
            if isinstance(used, dict):
                out[f"{task}/{d['task']}/evaluated_on"] = data_note(used)
    pooled = [d for d in sets.values() if d.get("pooled_from")]
    main = pooled[0] if pooled else (next(iter(sets.values())) if len(sets) == 1 else None)
    if sets:
        res["family"] = next(iter(sets.values())).get("family")
    if main is not None:
        res["metrics"] = {m: v["value"] for m, v in main["metrics"].items()}
    st = res["stability"]
    if st:
        out[f"{task}/stability"] = st.get("stability")
        out[f"{task}/upstream_loss_change"] = st.get("upstream_loss_change")
    return res


def data_note(used: dict[str, Any]) -> str:
    """``<source> n=<rows> (<origins>)`` plus ``; note: <notes>`` (substitutions for paper datasets, caveats)."""
    text = f"{used.get('source')} n={used.get('n')} ({'; '.join(used.get('origins') or [])})"
    notes = " ".join(used.get("notes") or [])
    return text + (f"; note: {notes}" if notes else "")


def headline(per_task: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The paper's averaged headline (Figs 2, 9g, 10): per family (cot, cloze, safety) and metric, the mean over
    the row's fine-tuning tasks of that family (a metric only when every such task has it), ``avg_<family>/tasks``
    naming them; ``stability`` / ``upstream_loss_change``: mean over the CoT tasks (all tasks when none is CoT)."""
    out: dict[str, Any] = {}
    fams: dict[str, list[str]] = {}
    for task, r in per_task.items():
        if r["family"]:
            fams.setdefault(r["family"], []).append(task)
    for fam, tasks in sorted(fams.items()):
        out[f"avg_{fam}/tasks"] = ";".join(tasks)
        for m in per_task[tasks[0]]["metrics"]:
            vals = [per_task[t]["metrics"].get(m) for t in tasks]
            if all(isinstance(v, int | float) for v in vals):
                out[f"avg_{fam}/{m}"] = sum(vals) / len(vals)
    over = fams.get("cot") or list(per_task)
    for col in ("stability", "upstream_loss_change"):
        vals = [per_task[t]["stability"].get(col) for t in over if per_task[t]["stability"]]
        vals = [v for v in vals if isinstance(v, int | float)]
        if vals:
            out[col] = sum(vals) / len(vals)
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
