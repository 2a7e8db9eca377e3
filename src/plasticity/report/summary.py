"""The report's summary: what this study's numbers show, sentence by sentence (nothing beyond them), and
``summary.json`` (`numbers.summary_numbers` with these sentences)."""

from __future__ import annotations

from typing import Any

import numpy as np

from plasticity.analysis.columns import probe_mean_best
from plasticity.analysis.stats import correlation, leave_one_out
from plasticity.report.data import ReportData, agg, is_task_metric
from plasticity.report.numbers import summary_numbers
from plasticity.results_columns import OUR_METRICS

_TRENDS = (("weight_norm", "Weight norm"), ("qk_rank_frac", "QK rank fraction"), ("vp_rank_frac", "VP rank fraction"),
           ("stability", "Stability (App. D: change in mean cloze accuracy after fine-tuning)"),
           ("upstream_loss_change", "Upstream (pretraining) val-loss change after fine-tuning"))


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}"


def noise_note(m: dict[float, dict[str, Any]], best: float, n_seeds: int) -> str:
    """Whether the best weight decay's interval overlaps the others' (or that there is none)."""
    if n_seeds < 2 or all(a["n"] < 2 for a in m.values()):
        return "single seed: no CI"
    b = m[best]
    what = "seed ranges" if max(a["n"] for a in m.values()) == 2 else "95% CIs"
    overlaps = [wd for wd, a in m.items() if wd != best and a["ci_low"] <= b["ci_high"] and a["ci_high"] >= b["ci_low"]]
    if overlaps:
        return f"differences are within noise ({what} overlap with wd = " + ", ".join(f"{w:g}" for w in overlaps) + ")"
    return f"the best value's {what[:-1]} does not overlap the others'"


def best_wd(m: dict[float, dict[str, Any]], lower_is_better: bool) -> float:
    """The weight decay with the best mean (the lowest when lower is better)."""
    return (min if lower_is_better else max)(m, key=lambda w: m[w]["mean"])


def sentences(data: ReportData) -> list[str]:
    """The summary, in order: val loss, the headline and its best weight decay, correlations, plasticity over
    pretraining, trends vs weight decay, seeds and counts."""
    out: list[str] = []
    val = agg(data.points, "val_loss")
    if val:
        best = best_wd(val, True)
        out.append(f"Lowest val loss at wd = {best:g} ({val[best]['mean']:.4f}; "
                   f"{noise_note(val, best, data.n_seeds)}).")
    main = data.main_metric
    if main:
        out.append(f"Headline downstream metric: {data.what}")
        m = agg(data.ds, main)
        lower = data.lower_is_better
        if m and lower is not None:
            best = best_wd(m, lower)
            out.append(f"{'Lowest' if lower else 'Highest'} {main} at wd = {best:g} ({m[best]['mean']:.4f}; "
                       f"{noise_note(m, best, data.n_seeds)}).")
    out += _val_loss_correlation(data) + _probe_correlation(data) + _over_pretraining(data) + _trends(data)
    if data.n_seeds < 2:
        out.append("Single seed: no CI; differences between weight decays are not tested against seed noise.")
    n_rows, n_done = len(data.rows), len(data.completed)
    out.append(f"n = {len(data.points)} pretraining runs ({n_done} completed rows), {len(data.wds)} weight decays, "
               f"{data.n_seeds} seed(s)"
               + (f"; {n_rows - n_done} rows not completed (failed, skipped or pending) or without a weight decay"
                  if n_rows > n_done else "") + ".")
    if len(data.upstream) > n_done:
        out.append(f"{len(data.upstream) - n_done} rows are still pending on fine-tuning or evaluation: the "
                   "pretraining figures include their runs, the downstream figures and numbers do not.")
    return out


def _val_loss_correlation(data: ReportData) -> list[str]:
    main = data.main_metric
    pairs = [(p.get("val_loss"), p.get(main)) for p in data.ds] if main else []
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    if len(pairs) < 2:
        return []
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    text = f"Pearson r(val loss, {main}) = {_fmt(correlation(xs, ys)['pearson_r'], 3)} (n = {len(pairs)}"
    if len(pairs) >= 3:
        loo = leave_one_out(xs, ys)
        text += f"; leave-one-out range [{_fmt(loo['min_r'], 3)}, {_fmt(loo['max_r'], 3)}]"
        if len(pairs) == 3:
            text += "; with n = 3 each leave-one-out subset has 2 points, so its r is trivially +/-1"
    return [text + ")."]


def _probe_correlation(data: ReportData) -> list[str]:
    """Paper Fig. 25: probe sets averaged per layer, best layer, vs the headline."""
    main = data.main_metric
    pp = [(probe_mean_best(p.analysis("probes")), p.get(main)) for p in data.ds] if main else []
    pp = [(x, y) for x, y in pp if x is not None and y is not None]
    if len(pp) < 3:
        return []
    c = correlation([x for x, _ in pp], [y for _, y in pp])
    return [f"Pearson r(best-layer probe accuracy averaged over the probe sets, {main}) = {_fmt(c['pearson_r'], 3)} "
            f"(n = {len(pp)}; paper Fig. 25)."]


def _over_pretraining(data: ReportData) -> list[str]:
    """The headline fine-tuned from the first vs the last fraction of pretraining, per weight decay."""
    fracs, main = data.fracs, data.main_metric
    if not (fracs and main):
        return []
    first, last = data.at_fraction(fracs[0]), data.at_fraction(fracs[-1])
    vals = {wd: ([p.get(main) for p in first if p.wd == wd and p.get(main) is not None],
                 [p.get(main) for p in last if p.wd == wd and p.get(main) is not None]) for wd in data.wds}
    change = ", ".join(f"wd {wd:g}: {np.mean(a):.4g} -> {np.mean(b):.4g}" for wd, (a, b) in vals.items() if a and b)
    return [f"{main} fine-tuned from {fracs[0]:g} vs {fracs[-1]:g} of pretraining: {change}."]


def _trends(data: ReportData) -> list[str]:
    out = []
    for col, label in _TRENDS:
        a = agg(data.ds if col in ("stability", "upstream_loss_change") else data.points, col)
        if len(a) < 2:
            continue
        ws = list(a)
        ms = [a[w]["mean"] for w in ws]
        diffs = np.diff(ms)
        diffs[np.isclose(diffs, 0.0, rtol=0.0, atol=1e-12)] = 0.0  # float noise (e.g. 1/24 computed twice)
        if np.all(diffs == 0):
            verb = "is unchanged"
        elif np.all(diffs < 0):
            verb = "falls monotonically"
        elif np.all(diffs > 0):
            verb = "rises monotonically"
        else:
            verb = "changes non-monotonically"
        vals = ", ".join(f"{m:.4g}" for m in ms)
        out.append(f"{label} {verb} from {ms[0]:.4g} to {ms[-1]:.4g} as wd rises from {ws[0]:g} to {ws[-1]:g} "
                   f"(per wd: {vals}).")
    return out


def summary_json(data: ReportData, text: list[str]) -> dict[str, Any]:
    """``report/summary.json``: the numbers behind the summary (`numbers.summary_numbers`) and its sentences."""
    ds_cols = [c for c in dict.fromkeys(k for p in data.ds for k in p.row)
               if (is_task_metric(c) or c.startswith("avg_")
                   or c in ("stability", "upstream_loss_change", "upstream_acc", "upstream_acc_pretrained"))
               and not c.endswith(("/tasks", "/chosen", "/evaluated_on", "/trained_on"))
               and not (c.startswith("avg_") and c.rsplit("/", 1)[-1] in OUR_METRICS)]  # older CSVs
    numbers = summary_numbers(data.points, data.ds, data.main_metric, ds_cols, headline_lower=data.lower_is_better)
    return dict(numbers, summary=text, downstream_rows=data.ds_note or "all completed rows")


