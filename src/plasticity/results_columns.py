"""How evaluation outputs become ``results.csv`` columns, and the names of the metrics.

One place for both, below every package that needs them: the study's evaluate and fine-tune stages write the
columns, ``plasticity analyze --compare --finetuned`` joins them onto pretraining runs, the report reads them
and picks best settings with `better` (lower is better for `LOWER_IS_BETTER`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from plasticity.files import read_json_or_none

# what `report.headline` and `plasticity report --headline` accept: every metric `plasticity evaluate` writes
METRIC_NAME = re.compile(r"greedy|(maj|pass|rm)@\d+|correct_ratio|orm_score|acc(_norm)?(_template)?|heldout_loss|"
                         r"harmfulness_mean|refusal_rate \(pattern fallback\)")
METRIC_NAMES = ("greedy, maj@k, pass@k, rm@k, correct_ratio, orm_score, acc, acc_norm, acc_template, "
                "acc_norm_template, heldout_loss, harmfulness_mean, refusal_rate (pattern fallback)")
LOWER_IS_BETTER = ("heldout_loss", "harmfulness_mean")  # nats per response token; judged harmfulness
# Ours, not the paper's (docs/paper-mapping.md): metrics reported per task but never averaged into an
# ``avg_<family>/...`` column, and columns; report captions label them "(ours)".
OUR_METRICS = ("acc_template", "acc_norm_template", "heldout_loss")
OUR_COLUMNS = ("upstream_loss_change", "unseen_seen_gap", "avg_safety")


def is_ours(col: str) -> bool:
    """Whether a results.csv column is one of our additions (`OUR_METRICS` on any task, `OUR_COLUMNS`)."""
    return (col.rsplit("/", 1)[-1] in OUR_METRICS or col.split("/", 1)[0] in OUR_COLUMNS
            or col.rsplit("/", 1)[-1] in OUR_COLUMNS)


def ours(label: str, col: str) -> str:
    """`label` with " (ours)" appended when `col` is one of our additions."""
    return f"{label} (ours)" if is_ours(col) else label


def better(metric: str, a: float, b: float | None) -> bool:
    """Whether value `a` beats `b` (None: anything beats it) for `metric`."""
    if b is None:
        return True
    return a < b if metric in LOWER_IS_BETTER else a > b


def data_note(used: dict[str, Any]) -> str:
    """``<source> n=<rows> (<origins>)`` plus ``; note: <notes>`` (substitutions for paper datasets, caveats)."""
    text = f"{used.get('source')} n={used.get('n')} ({'; '.join(used.get('origins') or [])})"
    notes = " ".join(used.get("notes") or [])
    return text + (f"; note: {notes}" if notes else "")


def task_columns(task: str, edir: Path, out: dict[str, Any]) -> dict[str, Any]:
    """Write ``{task}/{eval_set}/{metric}`` columns of one evaluate node into `out`; return what the averages
    need: the family, one value per metric (the pooled set when the task has several eval sets) and stability."""
    res: dict[str, Any] = {"family": None, "metrics": {}, "stability": {}}
    sets: dict[str, dict[str, Any]] = {}
    for f in sorted(edir.glob("*.json")) if edir.is_dir() else []:
        d = read_json_or_none(f)
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
    for d in pooled:  # beside the pooled value: the unweighted mean of the sets' own values
        parts = [sets[s] for s in d["pooled_from"] if s in sets]
        for m in d["metrics"]:
            vals = [s["metrics"].get(m, {}).get("value") for s in parts]
            if len(parts) == len(d["pooled_from"]) and all(isinstance(v, int | float) for v in vals):
                out[f"{task}/mean({','.join(d['pooled_from'])})/{m}"] = sum(vals) / len(vals)
    st = res["stability"]
    if st:
        out[f"{task}/stability"] = st.get("stability")
        out[f"{task}/upstream_loss_change"] = st.get("upstream_loss_change")
        out[f"{task}/upstream_acc"] = st.get("finetuned_avg_acc")
    return res


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
