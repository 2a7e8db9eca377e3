"""Markdown tables for docs/reproduction.md from a report's summary.json: per weight decay means with 95% CIs
over seeds, and the four claims' verdicts by the rules fixed in the doc before the results existed.

    .venv/bin/python scripts/reproduction_tables.py docs/reproduction/<study>/report/summary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LEVEL = 0.95  # a claim is supported when >= 95% of seed resamples (or the 95% CI) agree

PER_WD = [("val_loss", "val loss"), ("headline", "headline"), ("addition/addition/greedy", "addition greedy"),
          ("addition/addition/pass@16", "addition pass@16"),
          ("addition/addition/heldout_loss", "addition held-out loss"),
          ("sst2/sst2/acc", "sst2 acc"), ("sst2/sst2/acc_template", "sst2 acc (template)"),
          ("sst2/sst2/heldout_loss", "sst2 held-out loss"),
          ("probe_mean_best", "probe acc (best layer)"), ("qk_rank_frac", "QK rank frac"),
          ("vp_rank_frac", "VP rank frac"), ("train_val_gap", "train-val gap"), ("weight_norm", "weight norm")]

# (claim, measure column, sign the paper predicts for Spearman rho(wd, measure))
TRENDS = [("2. larger wd, more linearly separable representations", "probe_mean_best", +1),
          ("3. larger wd, lower attention pseudo-rank (QK)", "qk_rank_frac", -1),
          ("3. larger wd, lower attention pseudo-rank (VP)", "vp_rank_frac", -1),
          ("4. larger wd, smaller train-val gap", "train_val_gap", -1)]


def _ci(d: dict[str, Any], digits: int = 3) -> str:
    m, lo, hi = d["mean"], d["ci_low"], d["ci_high"]
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if d.get("n", 1) > 1 else f"{m:.{digits}f}"


def per_wd_table(s: dict[str, Any]) -> str:
    cols = [(c, name) for c, name in PER_WD if c in s["columns"]]
    wds = [f"{w:g}" for w in s["weight_decays"]]
    lines = ["| measure | " + " | ".join(f"wd {w}" for w in wds) + " |", "|---|" + "---|" * len(wds)]
    for c, name in cols:
        per = s["columns"][c]["per_wd"]
        lines.append(f"| {name} | " + " | ".join(_ci(per[w]) if w in per else "-" for w in wds) + " |")
    return "\n".join(lines)


def trend_verdict(rho_lo: float | None, rho_hi: float | None, sign: int) -> str:
    if rho_lo is None or rho_hi is None:
        return "inconclusive"
    if (sign > 0 and rho_lo > 0) or (sign < 0 and rho_hi < 0):
        return "reproduced"
    if (sign > 0 and rho_hi < 0) or (sign < 0 and rho_lo > 0):
        return "not reproduced"
    return "inconclusive"


def order_verdict(greater: float) -> str:
    if greater >= LEVEL:
        return "reproduced"
    if greater <= 1 - LEVEL:
        return "not reproduced"
    return "inconclusive"


def verdict_table(s: dict[str, Any]) -> str:
    lines = ["| claim | evidence | verdict |", "|---|---|---|"]
    o = s.get("optimum_order")
    if o:
        val, head = s["columns"]["val_loss"]["optimum"], s["columns"][s["headline"]]["optimum"]
        ev = (f"lowest val loss at wd {val['best']:g}, best {s['headline']} at wd {head['best']:g}; over seed "
              f"resamples the headline-optimal wd is larger in {o['greater']:.0%}, equal in {o['equal']:.0%}, "
              f"smaller in {o['smaller']:.0%}")
        lines.append(f"| 1. downstream-optimal wd > val-loss-optimal wd | {ev} | **{order_verdict(o['greater'])}** |")
    for claim, col, sign in TRENDS:
        t = (s["columns"].get(col) or {}).get("trend_vs_wd")
        if not t:
            lines.append(f"| {claim} | no `{col}` values | **inconclusive** |")
            continue
        rho = "n/a" if t["spearman_rho"] is None else f"{t['spearman_rho']:+.2f}"
        lo, hi = t["ci_low"], t["ci_high"]
        ci = "n/a" if lo is None else f"[{lo:+.2f}, {hi:+.2f}]"
        predicted = "+" if sign > 0 else "-"
        ev = f"Spearman rho(wd, {col}) = {rho}, 95% CI {ci} (n = {t['n']}; the paper predicts {predicted})"
        lines.append(f"| {claim} | {ev} | **{trend_verdict(lo, hi, sign)}** |")
    return "\n".join(lines)


def correlation_line(s: dict[str, Any]) -> str:
    """Pearson r between final val loss and the headline over all runs, with its leave-one-out range (Fig 3)."""
    c = s.get("val_loss_vs_headline")
    if not c or c["pearson_r"] is None:
        return "val loss vs headline: too few runs with both"
    return (f"val loss vs headline over {c['n']} runs: Pearson r = {c['pearson_r']:+.2f} (p = {c['pearson_p']:.2g}), "
            f"Spearman rho = {c['spearman_rho']:+.2f}; leaving one run out, r ranges over "
            f"[{c['loo_min_r']:+.2f}, {c['loo_max_r']:+.2f}] ({c['loo_sign_changes']} sign changes)")


def main(path: str) -> None:
    s = json.loads(Path(path).read_text())
    print(per_wd_table(s))
    print()
    print(verdict_table(s))
    print()
    print(correlation_line(s))


if __name__ == "__main__":
    main(sys.argv[1])
