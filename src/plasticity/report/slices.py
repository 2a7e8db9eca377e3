"""Which rows of results.csv each figure uses, when a study has more axes than weight decay and seed.

results.csv has one row per pretrained x fine-tuned model. Pretraining-level numbers (val loss, probes,
ranks, gaps, norms) are the same in every row of one pretraining run, so those figures use one row per run.
Downstream figures use the rows fine-tuned from the end of pretraining (``finetune_from`` = its largest
value) and, when fine-tuning hyperparameters are swept too, the best setting per pretraining run (stated in
the caption; the lowest value for a metric of ``LOWER_IS_BETTER``, ties to the first row); ``finetune_from``
itself gets its own figure (plasticity over pretraining time), at the best setting per run from each point.
"""

from __future__ import annotations

from typing import Any

from plasticity.analysis.stats import finite_or_none as _num
from plasticity.report.selection import best_per_task
from plasticity.results_columns import better

FROM = "finetune_from"


def per_run(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per pretraining run (the first one seen)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        key = r.get("run") or str(id(r))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def finetune_axes(fields: list[str]) -> list[str]:
    """Swept fine-tuning / evaluation keys (besides ``finetune_from``)."""
    return [f for f in fields if f.startswith(("finetune.", "evaluate."))]


def downstream(rows: list[dict[str, str]], fields: list[str], metric: str | None,
               headline: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Rows for the downstream figures and a note saying which were chosen ('' when all are used). With a
    ``headline`` ({task: metric}, the study's ``report.headline``): one merged row per run, each task at its own
    best fine-tuning setting, with a ``headline`` column (`selection.best_per_task`)."""
    notes = []
    if FROM in fields:
        fracs = [f for f in (_num(r.get(FROM)) for r in rows) if f is not None]
        if fracs:
            last = max(fracs)
            rows = [r for r in rows if _num(r.get(FROM)) == last]
            if len(set(fracs)) > 1:
                notes.append(f"fine-tuned from {last:g} of pretraining")
    ft_axes = finetune_axes(fields)
    if headline:
        merged, note = best_per_task(rows, fields, headline, ft_axes)
        return merged, "; ".join(notes + [note])
    if ft_axes and metric is not None:
        best: dict[str, dict[str, str]] = {}
        name = metric.rsplit("/", 1)[-1]  # lower is better for LOWER_IS_BETTER (a loss, harmfulness)
        for r in rows:
            v = _num(r.get(metric))
            cur = best.get(r.get("run", ""))
            if v is not None and (cur is None or better(name, v, _num(cur.get(metric)))):
                best[r.get("run", "")] = r
        rows = [r for r in rows if best.get(r.get("run", "")) is r]
        notes.append(f"best {', '.join(ft_axes)} per pretraining run by {metric}")
    return rows, "; ".join(notes)


def over_pretraining(rows: list[dict[str, str]], fields: list[str]) -> list[float]:
    """The ``finetune_from`` values of a study (empty unless it has at least two)."""
    if FROM not in fields:
        return []
    fracs = sorted({f for f in (_num(r.get(FROM)) for r in rows) if f is not None})
    return fracs if len(fracs) > 1 else []
