"""The headline of a study with ``report.headline: {task: metric}``: one row per pretraining run in which each
task's columns come from that run's best swept fine-tuning setting *for that task* (paper App. E: the best
fine-tuning learning rate per model), and ``headline`` = the mean over the tasks of their metric.

results.csv has one row per pretraining run x swept fine-tuning setting (e.g. ``finetune.optim.lr``), each row
holding every task's columns for that setting. Picking the best row per run would give every task the setting
that suits the first one; here each task picks its own.
"""

from __future__ import annotations

from typing import Any

from plasticity.analysis.stats import finite_or_none as _num
from plasticity.errors import UserError
from plasticity.results_columns import better

HEADLINE = "headline"


_OVER_TASKS = ("stability", "upstream_loss_change", "upstream_acc")  # row columns averaged over the CoT tasks


def task_column(fields: list[str], task: str, metric: str) -> str:
    """The results.csv column of `metric` on `task`: ``{task}/{eval set}/{metric}``, the pooled set (``a+b``)
    when the task has several."""
    cols = [f for f in fields if f.count("/") == 2 and f.startswith(f"{task}/") and f.endswith(f"/{metric}")]
    pooled = [c for c in cols if "+" in c.split("/")[1]]
    if pooled:
        return pooled[0]
    if len(cols) == 1:
        return cols[0]
    if not cols:
        raise UserError(f"report.headline: results.csv has no column for task {task!r} metric {metric!r} "
                        f"(expected {task}/<eval set>/{metric})")
    raise UserError(f"report.headline: task {task!r} has several eval sets and no pooled one: {', '.join(cols)}")


def _families(row: dict[str, str]) -> dict[str, list[str]]:
    """{family: its tasks} from the row's ``avg_<family>/tasks`` columns."""
    return {k[len("avg_"):-len("/tasks")]: [t for t in (v or "").split(";") if t]
            for k, v in row.items() if k.startswith("avg_") and k.endswith("/tasks")}


def best_per_task(rows: list[dict[str, str]], fields: list[str], headline: dict[str, str],
                  ft_axes: list[str]) -> tuple[list[dict[str, Any]], str]:
    """One row per pretraining run (``run``), in first-seen order: the first row's pretraining columns; for each
    headline task, its columns from the run's row with the best value of its metric (ties: the lower held-out
    loss of that task, else the first row), with
    ``{task}/chosen`` naming that row's fine-tuning axis values; ``headline`` = the mean over the headline tasks
    (empty when one is missing); the ``avg_<family>/<metric>``, ``stability`` and ``upstream_loss_change``
    columns recomputed from the chosen columns. Tasks outside the headline keep the row chosen for the first
    headline task. Returns the rows and a note for captions."""
    cols = {t: task_column(fields, t, m) for t, m in headline.items()}
    by_run: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_run.setdefault(r.get("run", ""), []).append(r)
    # in the order of results.csv's columns (a set would order downstream.csv's columns by the hash seed)
    all_tasks = list(dict.fromkeys(f.split("/", 1)[0] for f in fields if "/" in f and not f.startswith("avg_")))
    out = []
    for run_rows in by_run.values():
        merged: dict[str, Any] = {k: v for k, v in run_rows[0].items() if k.split("/", 1)[0] not in all_tasks
                                  and not k.startswith("avg_") and k not in _OVER_TASKS
                                  and k not in ft_axes}  # the chosen values are per task: {task}/chosen
        chosen: dict[str, dict[str, str]] = {}
        for task, metric in headline.items():
            chosen[task] = _best_row(run_rows, cols[task], metric, _heldout_column(fields, task))
        first = chosen[next(iter(headline))]
        for task in all_tasks:
            src = chosen.get(task, first)
            merged.update({k: v for k, v in src.items() if k.startswith(f"{task}/")})
            if task in chosen:
                merged[f"{task}/chosen"] = " ".join(f"{a}={src.get(a)}" for a in ft_axes)
        vals = [_num(merged.get(cols[t])) for t in headline]
        merged[HEADLINE] = (sum(vals) / len(vals)) if all(v is not None for v in vals) else None  # type: ignore[arg-type]
        _recompute_averages(merged, _families(run_rows[0]), fields)
        out.append(merged)
    names = ", ".join(f"{t} ({m})" for t, m in headline.items())
    note = (f"headline = mean over {names}" + (f", each task at its best {', '.join(ft_axes)} per pretraining run"
                                                  if ft_axes else ""))
    return out, note


def _heldout_column(fields: list[str], task: str) -> str | None:
    try:
        return task_column(fields, task, "heldout_loss")
    except UserError:
        return None


def _best_row(rows: list[dict[str, str]], col: str, metric: str, tie_col: str | None) -> dict[str, str]:
    """The row with the best `col` for `metric`; ties (e.g. greedy 0 at every setting) go to the lower held-out
    loss `tie_col` when there is one, else to the first row."""
    best, best_v = rows[0], None
    for r in rows:
        v = _num(r.get(col))
        if v is None:
            continue
        if better(metric, v, best_v):
            best, best_v = r, v
        elif v == best_v and tie_col is not None:
            tv, tb = _num(r.get(tie_col)), _num(best.get(tie_col))
            if tv is not None and (tb is None or tv < tb):
                best = r
    return best


def _recompute_averages(merged: dict[str, Any], fams: dict[str, list[str]], fields: list[str]) -> None:
    """``avg_<family>/<metric>`` over the family's tasks (a metric only when every task has it), and the
    stability columns over the CoT tasks (all tasks when none is CoT), from the merged row's own columns."""
    for fam, tasks in fams.items():
        merged[f"avg_{fam}/tasks"] = ";".join(tasks)
        metrics = {f.rsplit("/", 1)[1] for f in fields if f.startswith(f"avg_{fam}/") and not f.endswith("/tasks")}
        for m in sorted(metrics):
            try:
                vals = [_num(merged.get(task_column(fields, t, m))) for t in tasks]
            except UserError:
                continue
            if all(v is not None for v in vals):
                merged[f"avg_{fam}/{m}"] = sum(vals) / len(vals)  # type: ignore[arg-type]
    over = fams.get("cot") or [t for ts in fams.values() for t in ts]
    for col in _OVER_TASKS:
        vals = [_num(merged.get(f"{t}/{col}")) for t in over]
        vals = [v for v in vals if v is not None]
        if vals:
            merged[col] = sum(vals) / len(vals)
