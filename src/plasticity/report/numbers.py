"""``report/summary.json``: the numbers behind a report's summary, for citing (per weight decay means with
95% bootstrap CIs over seeds, trends with CIs, which weight decay is best and how often under resampling)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol

from plasticity.analysis.stats import (
    bootstrap_ci_over_seeds,
    correlation,
    leave_one_out,
    optimum_bootstrap,
    optimum_order_bootstrap,
    trend_bootstrap,
)
from plasticity.results_columns import LOWER_IS_BETTER

# pretraining-level columns (one value per run) and whether lower is better for an "optimum"
# (`train_loss`: the last step's training loss in results.csv of older versions, now `last_step_train_loss`)
PRETRAIN_COLS = {"val_loss": True, "train_loss": True, "last_step_train_loss": True, "final_model_train_loss": None,
                 "probe_mean_best": False, "qk_rank_frac": None, "vp_rank_frac": None, "qk_rank_frac_layers": None,
                 "vp_rank_frac_layers": None, "train_val_gap": None, "unseen_seen_gap": None, "weight_norm": None}
N_BOOT = 2000


class WdValues(Protocol):
    """Anything with a weight decay and column values (a report `Point`, a row of scripts/reproduction_tables)."""

    wd: float

    def get(self, col: str) -> float | None: ...


def by_wd(points: list[WdValues], col: str, also: str | None = None) -> dict[float, list[float]]:
    """Values of `col` per weight decay, in point order (only points that also have `also`, when given)."""
    out: dict[float, list[float]] = defaultdict(list)
    for p in points:
        v = p.get(col)
        if v is not None and (also is None or p.get(also) is not None):
            out[p.wd].append(v)
    return dict(sorted(out.items()))


def _keyed(d: dict[float, Any]) -> dict[str, Any]:
    return {f"{k:g}": v for k, v in d.items()}


def interval_name(n: int) -> str:
    """What ``[ci_low, ci_high]`` of `n` seed values is: with 2 seeds a bootstrap of the mean can only give the
    two values and their mean, so its 95% interval is the min-max of the seeds."""
    return "single value" if n < 2 else ("seed range (min-max of 2 seeds)" if n == 2
                                         else "95% bootstrap CI over seeds")


def _describe(groups: dict[float, list[float]], lower_is_better: bool | None) -> dict[str, Any]:
    per = bootstrap_ci_over_seeds(groups, n_boot=1000, seed=0)
    out: dict[str, Any] = {"per_wd": _keyed({w: dict(d, interval=interval_name(d["n"])) for w, d in per.items()})}
    if len(groups) >= 2:
        out["trend_vs_wd"] = trend_bootstrap(groups, n_boot=N_BOOT, seed=0)
        if lower_is_better is not None:
            opt = optimum_bootstrap(groups, lower_is_better, n_boot=N_BOOT, seed=0)
            out["optimum"] = dict(opt, p_best=_keyed(opt["p_best"]), lower_is_better=lower_is_better)
    return out


def lower_is_better(col: str) -> bool:
    """Whether a lower value of a downstream column is better (its metric is in ``LOWER_IS_BETTER``)."""
    return col.rsplit("/", 1)[-1] in LOWER_IS_BETTER


def summary_numbers(points: list[WdValues], ds: list[WdValues], main_metric: str | None,
                    downstream_cols: list[str], headline_lower: bool | None = False) -> dict[str, Any]:
    """`points`: one per pretraining run; `ds`: the downstream rows (one per run when the study has a
    ``report.headline``); `downstream_cols`: the downstream columns to describe beside the headline;
    `headline_lower`: whether a lower headline is better (None: no direction, e.g. a report.headline mixing
    metrics of both, so no optimum)."""
    out: dict[str, Any] = {"headline": main_metric, "n_runs": len(points),
                           "weight_decays": sorted({p.wd for p in points}), "n_boot": N_BOOT, "columns": {}}
    for col, lower in PRETRAIN_COLS.items():
        g = by_wd(points, col)
        if g:
            out["columns"][col] = _describe(g, lower)
    for col in ([main_metric] if main_metric else []) + [c for c in downstream_cols if c != main_metric]:
        g = by_wd(ds, col)
        if g:
            no_optimum = col.endswith(("stability", "loss_change"))  # a change, not a score
            lower = headline_lower if col == main_metric else lower_is_better(col)
            out["columns"][col] = _describe(g, None if no_optimum else lower)
    if main_metric:
        val, head = by_wd(ds, "val_loss", also=main_metric), by_wd(ds, main_metric, also="val_loss")
        if len(val) >= 2 and headline_lower is not None:
            out["optimum_order"] = dict(optimum_order_bootstrap(val, True, head, headline_lower, n_boot=N_BOOT,
                                                                seed=0),
                                        meaning=f"fraction of seed resamples in which the wd with the best "
                                                f"{main_metric} is greater than / equal to / smaller than the wd "
                                                "with the lowest val_loss")
        pairs = [(p.get("val_loss"), p.get(main_metric)) for p in ds]
        xs = [x for x, y in pairs if x is not None and y is not None]
        ys = [y for x, y in pairs if x is not None and y is not None]
        if len(xs) >= 3:
            loo = leave_one_out(xs, ys)
            out["val_loss_vs_headline"] = dict(correlation(xs, ys), loo_min_r=loo["min_r"], loo_max_r=loo["max_r"],
                                               loo_sign_changes=loo["n_sign_changes"])
    return out
