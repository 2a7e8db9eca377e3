"""Markdown tables for docs/reproduction.md, recomputed from the committed export: per weight decay means with their
seed ranges (2 seeds: a bootstrap over seeds can give nothing but the min-max), the four claims' verdicts by the
rules fixed in the doc before the results existed, and the analyses added afterwards (paired within-seed
comparison, exact within-seed permutation tests, claim 2's robustness, the downstream optimum per measure,
forgetting at equal fine-tuning lr, per-model addition accuracy). `tests/report/test_reproduction_tables.py`
checks that every block printed here appears verbatim in docs/reproduction.md.

    .venv/bin/python scripts/reproduction_tables.py docs/reproduction/<study>/report/summary.json
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

LEVEL = 0.95  # a claim is supported when >= 95% of seed resamples (or the 95% CI) agree

PER_WD = [("val_loss", "val loss"), ("headline", "headline"), ("addition/addition/greedy", "addition greedy"),
          ("addition/addition/pass@16", "addition pass@16"),
          ("addition/addition/heldout_loss", "addition held-out loss"),
          ("sst2/sst2/acc", "sst2 acc"), ("sst2/sst2/acc_template", "sst2 acc (template)"),
          ("sst2/sst2/heldout_loss", "sst2 held-out loss"),
          ("probe_mean_best", "probe acc (best layer)"), ("qk_rank_frac", "QK rank frac"),
          ("vp_rank_frac", "VP rank frac"), ("train_val_gap", "train-val gap"), ("weight_norm", "weight norm")]

POSTHOC = [("headline", "headline (post-hoc)"), ("sst2/sst2/acc_template", "sst2 acc (template)")]

# (claim, measure column, sign the paper predicts for Spearman rho(wd, measure))
TRENDS = [("2. larger wd, more linearly separable representations", "probe_mean_best", +1),
          ("3. larger wd, lower attention pseudo-rank (QK)", "qk_rank_frac", -1),
          ("3. larger wd, lower attention pseudo-rank (VP)", "vp_rank_frac", -1),
          ("4. larger wd, smaller train-val gap", "train_val_gap", -1)]


def _ci(d: dict[str, Any], digits: int = 3) -> str:
    m, lo, hi = d["mean"], d["ci_low"], d["ci_high"]
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if d.get("n", 1) > 1 else f"{m:.{digits}f}"


def _interval(s: dict[str, Any], cols: list[str]) -> str:
    """What the bracketed interval of the table's cells is (the same n in every cell here)."""
    ns = {d["n"] for c in cols for d in s["columns"][c]["per_wd"].values()}
    return "seed range [min, max] of the 2 seeds" if ns == {2} else "95% bootstrap CI over seeds"


def per_wd_table(s: dict[str, Any], which: list[tuple[str, str]] = PER_WD) -> str:
    cols = [(c, name) for c, name in which if c in s["columns"]]
    wds = [f"{w:g}" for w in s["weight_decays"]]
    lines = [f"| measure: mean, {_interval(s, [c for c, _ in cols])} | " + " | ".join(f"wd {w}" for w in wds) + " |",
             "|---|" + "---|" * len(wds)]
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
        ev = (f"Spearman rho(wd, {col}) = {rho}, seed-bootstrap 95% interval {ci} (n = {t['n']}; the paper predicts "
              f"{predicted})")
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


# ------------------------------------------------------------------------- analyses added after the verdicts


def read_rows(study: Path) -> list[dict[str, str]]:
    with (study / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _f(v: str | None) -> float | None:
    try:
        x = float(v) if v not in (None, "") else None
    except ValueError:
        return None
    return x if x is not None and math.isfinite(x) else None


def per_run(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per pretraining run (results.csv has one per fine-tuning lr)."""
    seen: dict[str, dict[str, str]] = {}
    for r in rows:
        seen.setdefault(r["run"], r)
    return list(seen.values())


def _grid(runs: list[dict[str, Any]], col: str) -> dict[tuple[str, float], float]:
    return {(r["train.seed"], float(r["optim.weight_decay"])): v for r in runs if (v := _f(r.get(col))) is not None}


def _seeds_wds(runs: list[dict[str, Any]]) -> tuple[list[str], list[float]]:
    return (sorted({r["train.seed"] for r in runs}), sorted({float(r["optim.weight_decay"]) for r in runs}))


def paired_table(runs: list[dict[str, Any]]) -> str:
    """Runs with the same seed share initialisation and data order: val loss per seed, the within-seed
    differences to wd 0.1, and seed 1 minus seed 0 per wd."""
    seeds, wds = _seeds_wds(runs)
    v = _grid(runs, "val_loss")
    head = "| val loss | " + " | ".join(f"wd {w:g}" for w in wds) + " |"
    lines = [head, "|---|" + "---|" * len(wds)]
    for s in seeds:
        lines.append(f"| seed {s} | " + " | ".join(f"{v[(s, w)]:.3f}" for w in wds) + " |")
    for s in seeds:
        lines.append(f"| seed {s}: minus wd 0.1 | " + " | ".join(f"{v[(s, w)] - v[(s, 0.1)]:+.3f}" for w in wds) + " |")
    if len(seeds) == 2:
        a, b = seeds
        lines.append(f"| seed {b} minus seed {a} | " + " | ".join(f"{v[(b, w)] - v[(a, w)]:+.3f}" for w in wds) + " |")
    return "\n".join(lines)


def _rho(xs: list[float], ys: list[float]) -> float | None:
    if len(set(ys)) < 2:
        return None
    return float(sps.spearmanr(xs, ys)[0])


def within_seed_permutation(grid: dict[tuple[str, float], float], sign: int) -> tuple[float | None, float, int]:
    """(Spearman rho(wd, value) over all runs, exact one-sided p in the predicted direction `sign`, number of
    permutations): every assignment of each seed's values to its weight decays (the seed's pairing kept)."""
    seeds = sorted({s for s, _ in grid})
    wds = sorted({w for _, w in grid})
    xs = [w for _ in seeds for w in wds]
    obs = _rho(xs, [grid[(s, w)] for s in seeds for w in wds])
    if obs is None:
        return None, 1.0, 0
    perms = np.array(list(itertools.permutations(range(len(wds)))))
    per_seed = [np.array([grid[(s, w)] for w in wds])[perms] for s in seeds]  # [n_perm, n_wd] each
    idx = np.array(list(itertools.product(range(len(perms)), repeat=len(seeds))))
    ys = np.concatenate([per_seed[k][idx[:, k]] for k in range(len(seeds))], axis=1)
    rx, ry = sps.rankdata(xs), sps.rankdata(ys, axis=1)
    rxc, ryc = rx - rx.mean(), ry - ry.mean(axis=1, keepdims=True)
    r = (ryc @ rxc) / np.sqrt((rxc @ rxc) * (ryc * ryc).sum(axis=1))
    return obs, float(np.mean(sign * r >= sign * obs - 1e-12)), int(r.size)


def _p(p: float, n: int) -> str:
    """A permutation p-value; below 0.001 as the exact count (the smallest possible is 1/n)."""
    return f"{p:.3f}" if p >= 0.001 else f"{round(p * n)}/{n:,}"


TESTED = [("val_loss", "val loss", +1)] + [(c, c, s) for _, c, s in TRENDS]


def permutation_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| measure | predicted sign | Spearman rho over 10 runs | rho within seed 0 / seed 1 | exact within-seed "
             "permutation p (one-sided) |", "|---|---|---|---|---|"]
    for col, name, sign in TESTED:
        g = _grid(runs, col)
        rho, p, n = within_seed_permutation(g, sign)
        seeds, wds = _seeds_wds(runs)
        per = " / ".join(f"{_rho(wds, [g[(s, w)] for w in wds]):+.2f}" for s in seeds)
        lines.append(f"| {name} | {'+' if sign > 0 else '-'} | {rho:+.2f} | {per} | {_p(p, n)} ({n:,} permutations) |")
    return "\n".join(lines)


def _probe_layers(study: Path, run: dict[str, str]) -> dict[str, list[float]]:
    d = json.loads((study / run["run"] / "analysis" / "probes.json").read_text())
    return {name: [ly["test_accuracy"] for ly in s["layers"]] for name, s in d["sets"].items()}


def claim2_measures(study: Path, runs: list[dict[str, str]]) -> dict[str, dict[tuple[str, float], float]]:
    """Reasonable measures of 'more linearly separable', per (seed, wd)."""
    out: dict[str, dict[tuple[str, float], float]] = {k: {} for k in (
        "pre-registered: per-layer mean over the two sets, best layer (`probe_mean_best`)",
        "mean of each set's best layer", "SST-2 alone, best layer", "AG News alone, best layer",
        "last layer, mean over the two sets")}
    names = list(out)
    for r in runs:
        key = (r["train.seed"], float(r["optim.weight_decay"]))
        layers = _probe_layers(study, r)
        sst, ag = layers["sst2"], layers["ag_news"]
        out[names[0]][key] = max((a + b) / 2 for a, b in zip(sst, ag, strict=True))
        out[names[1]][key] = (max(sst) + max(ag)) / 2
        out[names[2]][key] = max(sst)
        out[names[3]][key] = max(ag)
        out[names[4]][key] = (sst[-1] + ag[-1]) / 2
    return out


def claim2_table(study: Path, runs: list[dict[str, str]]) -> str:
    from plasticity.analysis.stats import trend_bootstrap

    lines = ["| measure | Spearman rho(wd, measure) | seed-bootstrap 95% interval | rho seed 0 / seed 1 | "
             "within-seed permutation p |", "|---|---|---|---|---|"]
    seeds, wds = _seeds_wds(runs)
    for name, g in claim2_measures(study, runs).items():
        groups = {w: [g[(s, w)] for s in seeds] for w in wds}
        t = trend_bootstrap(groups, n_boot=2000, seed=0)
        per = " / ".join(f"{_rho(wds, [g[(s, w)] for w in wds]):+.2f}" for s in seeds)
        _, p, n = within_seed_permutation(g, +1)
        lines.append(f"| {name} | {t['spearman_rho']:+.2f} | [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] | {per} | "
                     f"{_p(p, n)} |")
    return "\n".join(lines)


def probe_noise_line(study: Path, runs: list[dict[str, str]], s: dict[str, Any]) -> str:
    """The binomial standard error of one probe's test accuracy against the largest difference between weight
    decays of the pre-registered measure."""
    d = json.loads((study / runs[0]["run"] / "analysis" / "probes.json").read_text())
    n = min(v["n_test"] for v in d["sets"].values())
    per = s["columns"]["probe_mean_best"]["per_wd"]
    means = [v["mean"] for v in per.values()]
    p = float(np.mean(means))
    se = math.sqrt(p * (1 - p) / n)
    return (f"Each probe is tested on n = {n} examples: at accuracy {p:.2f} one probe's binomial standard error is "
            f"{se:.3f} (the mean of two independent probes: {se / math.sqrt(2):.3f}); the largest difference between "
            f"weight decays in the pre-registered measure is {max(means) - min(means):.3f}. The best layer is picked "
            "on the same test split it is scored on.")


def optimum_table(summaries: dict[str, dict[str, Any]]) -> str:
    """How often each weight decay is the downstream optimum over the seed resamples, per measure."""
    rows = [("headline (pre-registered: addition greedy + sst2 raw-prompt acc)", "report", "headline"),
            ("addition greedy alone", "report", "addition/addition/greedy"),
            ("sst2 raw-prompt acc alone", "report", "sst2/sst2/acc"),
            ("post-hoc headline (addition greedy + sst2 acc_template)", "report-sst2-template", "headline"),
            ("sst2 acc_template alone", "report-sst2-template", "sst2/sst2/acc_template")]
    wds = [f"{w:g}" for w in summaries["report"]["weight_decays"]]
    lines = ["| measure | " + " | ".join(f"wd {w}" for w in wds) + " |", "|---|" + "---|" * len(wds)]
    for name, rep, col in rows:
        pb = summaries[rep]["columns"][col]["optimum"]["p_best"]
        lines.append(f"| {name} | " + " | ".join(f"{pb[w]:.0%}" for w in wds) + " |")
    return "\n".join(lines)


def forgetting_table(rows: list[dict[str, str]]) -> str:
    """upstream_loss_change per task at each fine-tuning lr: mean and seed range per weight decay."""
    wds = sorted({float(r["optim.weight_decay"]) for r in rows})
    lrs = sorted({float(r["finetune.optim.lr"]) for r in rows})
    lines = ["| fine-tuning task, lr | " + " | ".join(f"wd {w:g}" for w in wds) + " |", "|---|" + "---|" * len(wds)]
    for task in ("addition", "sst2"):
        for lr in lrs:
            cells = []
            for w in wds:
                vs = [v for r in rows if float(r["optim.weight_decay"]) == w and float(r["finetune.optim.lr"]) == lr
                      and (v := _f(r.get(f"{task}/upstream_loss_change"))) is not None]
                cells.append(f"{np.mean(vs):.2f} [{min(vs):.2f}, {max(vs):.2f}]")
            lines.append(f"| {task}, lr {lr:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def addition_table(study: Path) -> str:
    """Addition greedy accuracy of each model at its chosen fine-tuning lr (report/downstream.csv)."""
    with (study / "report" / "downstream.csv").open(newline="") as f:
        ds = list(csv.DictReader(f))
    seeds, wds = _seeds_wds(ds)
    g = _grid(ds, "addition/addition/greedy")
    lines = ["| addition greedy | " + " | ".join(f"wd {w:g}" for w in wds) + " |", "|---|" + "---|" * len(wds)]
    for s in seeds:
        lines.append(f"| seed {s} | " + " | ".join(f"{g[(s, w)]:.3f}" for w in wds) + " |")
    return "\n".join(lines)


def main(path: str) -> None:
    s = json.loads(Path(path).read_text())
    print(per_wd_table(s))
    print()
    print(verdict_table(s))
    print()
    print(correlation_line(s))
    study = Path(path).resolve().parents[1]
    if not (study / "results.csv").is_file():
        return
    rows = read_rows(study)
    runs = per_run(rows)
    summaries = {rep: json.loads((study / rep / "summary.json").read_text())
                 for rep in ("report", "report-sst2-template") if (study / rep / "summary.json").is_file()}
    blocks = [lambda: per_wd_table(summaries["report-sst2-template"], POSTHOC), lambda: paired_table(runs),
              lambda: permutation_table(runs), lambda: claim2_table(study, runs),
              lambda: probe_noise_line(study, runs, s), lambda: forgetting_table(rows), lambda: addition_table(study),
              lambda: optimum_table(summaries)]
    for block in blocks:
        try:
            text = block()
        except (KeyError, FileNotFoundError, TypeError, ValueError) as e:  # a study without this export's data
            print(f"(skipped a table: {type(e).__name__} {e})", file=sys.stderr)
            continue
        print()
        print(text)


if __name__ == "__main__":
    main(sys.argv[1])
