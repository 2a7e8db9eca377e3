"""Statistics for the analyses: correlations, leave-one-out stability (paper Fig. 10), seed bootstrap CIs.

Undefined statistics (constant input, too few points) are returned as ``None`` (JSON ``null``), never NaN.
"""

from __future__ import annotations

import functools
import math
import warnings
import zlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from plasticity.resampling import bootstrap_ci

CorrMethod = Literal["pearson", "spearman"]


def _finite(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def finite_or_none(v: Any) -> float | None:
    """`v` as a finite float, or None (not a number, NaN, inf)."""
    try:
        return _finite(v)
    except (TypeError, ValueError):
        return None


def _xy(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in length: {a.size} vs {b.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("x and y must be finite")
    return a, b


def _corr(a: np.ndarray, b: np.ndarray, method: CorrMethod) -> tuple[float | None, float | None]:
    if a.size < 2:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input -> NaN, reported as None
        if method == "pearson":
            res = sps.pearsonr(a, b)
        elif method == "spearman":
            res = sps.spearmanr(a, b)
        else:
            raise ValueError(f"unknown method {method!r}; use 'pearson' or 'spearman'")
    return _finite(res.statistic), _finite(res.pvalue)


def correlation(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Pearson and Spearman correlation with two-sided p-values (scipy).

    Returns ``{"n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"}``.
    """
    a, b = _xy(x, y)
    pr, pp = _corr(a, b, "pearson")
    sr, sp = _corr(a, b, "spearman")
    return {"n": int(a.size), "pearson_r": pr, "pearson_p": pp, "spearman_rho": sr, "spearman_p": sp}


def leave_one_out(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, method: CorrMethod = "pearson"
) -> dict[str, Any]:
    """Correlation recomputed without each point in turn (paper Fig. 10, LOO stability of Pearson r).

    Returns ``{"method", "n", "full_r", "full_p", "loo": [{"index", "r", "p"}], "min_r", "max_r", "argmin",
    "argmax", "max_abs_change", "n_sign_changes"}``; ``argmin``/``argmax`` are the left-out indices giving the
    extreme ``r``; ``n_sign_changes`` counts LOO subsets whose ``r`` has the opposite sign of ``full_r``.
    """
    a, b = _xy(x, y)
    full_r, full_p = _corr(a, b, method)
    loo: list[dict[str, Any]] = []
    for i in range(a.size):
        keep = np.arange(a.size) != i
        r, p = _corr(a[keep], b[keep], method)
        loo.append({"index": i, "r": r, "p": p})
    valid = [d for d in loo if d["r"] is not None]
    lo = min(valid, key=lambda d: d["r"]) if valid else None
    hi = max(valid, key=lambda d: d["r"]) if valid else None
    return {
        "method": method,
        "n": int(a.size),
        "full_r": full_r,
        "full_p": full_p,
        "loo": loo,
        "min_r": lo["r"] if lo else None,
        "max_r": hi["r"] if hi else None,
        "argmin": lo["index"] if lo else None,
        "argmax": hi["index"] if hi else None,
        "max_abs_change": (
            max(abs(d["r"] - full_r) for d in valid) if valid and full_r is not None else None
        ),
        "n_sign_changes": (sum(1 for d in valid if d["r"] * full_r < 0) if full_r is not None else None),
    }


def _group_seed(seed: int, group: Hashable) -> np.random.Generator:
    """Generator depending only on ``seed`` and ``repr(group)`` (not on the other groups or their order)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(repr(group).encode())])


def bootstrap_ci_over_seeds(
    values_by_group: Mapping[Hashable, Sequence[float]],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[Hashable, dict[str, Any]]:
    """Mean and percentile bootstrap CI of the mean per group (resampling the group's seed values).

    Returns ``{group: {"mean", "ci_low", "ci_high", "std", "n", "n_boot", "alpha"}}`` (``std`` is the sample
    standard deviation, ddof=1, ``None`` for one value; a single value gives a degenerate CI ``[v, v]``).
    Deterministic given ``seed``; each group's resampling depends only on ``seed`` and the group key.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    out: dict[Hashable, dict[str, Any]] = {}
    for group, vals in values_by_group.items():
        v = np.asarray(vals, dtype=np.float64).ravel()
        if v.size == 0:
            raise ValueError(f"group {group!r} has no values")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"group {group!r} has non-finite values")
        lo, hi = bootstrap_ci(v, n_boot=n_boot, alpha=alpha, seed=_group_seed(seed, group))
        out[group] = {
            "mean": float(v.mean()),
            "ci_low": float(lo),
            "ci_high": float(hi),
            "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "n": int(v.size),
            "n_boot": int(n_boot),
            "alpha": float(alpha),
        }
    return out


def _resample_indices(sizes: Mapping[float, int], n_boot: int, seed: int) -> dict[float, np.ndarray]:
    """Per group, ``[n_boot, n]`` indices drawn with replacement (seeds within a weight decay). Drawn resample by
    resample and, within one, group by group in mapping order: the same draws as one ``rng.integers`` call per
    group per resample, so the statistics are computed on all resamples at once. Memoised (read-only arrays):
    a report draws the same indices for every measure."""
    return _indices(tuple(sizes.items()), n_boot, seed)


@functools.lru_cache(maxsize=64)
def _indices(sizes: tuple[tuple[float, int], ...], n_boot: int, seed: int) -> dict[float, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {g: np.empty((n_boot, n), dtype=np.int64) for g, n in sizes}
    for b in range(n_boot):
        for g, n in sizes:
            out[g][b] = rng.integers(0, n, n)
    for a in out.values():
        a.flags.writeable = False
    return out


def _resampled_means(values: Mapping[float, np.ndarray], idx: Mapping[float, np.ndarray], keys: list[float]
                     ) -> np.ndarray:
    """``[n_boot, len(keys)]``: each resample's mean per group."""
    return np.stack([values[k][idx[k]].mean(axis=1) for k in keys], axis=1)


def _argbest(keys: list[float], means: Sequence[float], lower_is_better: bool) -> float:
    return keys[int((np.argmin if lower_is_better else np.argmax)(means))]


def optimum_bootstrap(
    groups: Mapping[float, Sequence[float]], lower_is_better: bool, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Which group (weight decay) has the best mean, and how often each group wins when every group's values
    (seeds) are resampled with replacement: ``{"best", "p_best": {group: fraction of resamples it wins}}``."""
    keys = sorted(groups)
    values = {k: np.asarray(v, dtype=np.float64) for k, v in groups.items()}
    idx = _resample_indices({k: len(v) for k, v in values.items()}, n_boot, seed)
    winners = (np.argmin if lower_is_better else np.argmax)(_resampled_means(values, idx, keys), axis=1)
    wins = np.bincount(winners, minlength=len(keys))
    best = _argbest(keys, [float(np.mean(groups[k])) for k in keys], lower_is_better)
    return {"best": best, "p_best": {k: int(w) / n_boot for k, w in zip(keys, wins, strict=True)}, "n_boot": n_boot}


def optimum_order_bootstrap(
    a: Mapping[float, Sequence[float]], a_lower_is_better: bool,
    b: Mapping[float, Sequence[float]], b_lower_is_better: bool, n_boot: int = 2000, seed: int = 0,
) -> dict[str, float]:
    """Fractions of joint resamples in which the best group of `b` is larger than, equal to, or smaller than
    the best group of `a` (paper claim 1: downstream-optimal wd > val-loss-optimal wd). `a` and `b` hold the
    same runs per group, in the same order: one draw of seeds resamples both."""
    keys = sorted(set(a) & set(b))
    if any(len(a[k]) != len(b[k]) for k in keys):
        raise ValueError("a and b must hold the same runs per group")
    av = {k: np.asarray(a[k], dtype=np.float64) for k in keys}
    bv = {k: np.asarray(b[k], dtype=np.float64) for k in keys}
    idx = _resample_indices({k: len(av[k]) for k in keys}, n_boot, seed)
    ka = (np.argmin if a_lower_is_better else np.argmax)(_resampled_means(av, idx, keys), axis=1)
    kb = (np.argmin if b_lower_is_better else np.argmax)(_resampled_means(bv, idx, keys), axis=1)
    counts = {"greater": int((kb > ka).sum()), "equal": int((kb == ka).sum()), "smaller": int((kb < ka).sum())}
    return {k: v / n_boot for k, v in counts.items()}  # keys are sorted: a larger index is a larger group


def trend_bootstrap(
    groups: Mapping[float, Sequence[float]], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Spearman rho between the group key (weight decay) and the values over all points, with a percentile
    bootstrap CI resampling each group's values (seeds) with replacement. ``rho`` None for constant input."""
    keys = sorted(groups)
    xs = np.concatenate([np.full(len(groups[k]), k, dtype=np.float64) for k in keys])
    ys = np.concatenate([np.asarray(groups[k], dtype=np.float64) for k in keys])
    rho, p = _corr(xs, ys, "spearman")
    values = {k: np.asarray(v, dtype=np.float64) for k, v in groups.items()}
    idx = _resample_indices({k: len(v) for k, v in values.items()}, n_boot, seed)
    rx = sps.rankdata(xs)
    ry = sps.rankdata(np.concatenate([values[k][idx[k]] for k in keys], axis=1), axis=1)
    ry = ry[ry.std(axis=1) > 0] if rx.std() > 0 else ry[:0]
    boots = _pearson_rows(rx, ry)  # rho = Pearson r of the (tie-averaged) ranks, as scipy's spearmanr
    lo, hi = (float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))) if boots.size else (
        None, None)
    return {"spearman_rho": rho, "p": p, "ci_low": lo, "ci_high": hi, "n": int(xs.size), "n_boot": n_boot}


def _pearson_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pearson r of `x` with each row of `ys` (rows with zero variance excluded by the caller), computed as
    ``np.corrcoef`` does (covariance scaled by 1/(n-1), divided by each standard deviation in turn, clipped)."""
    scale = 1.0 / (x.size - 1)
    xc = x - x.mean()
    yc = ys - ys.mean(axis=1, keepdims=True)
    r = (yc @ xc) * scale / np.sqrt((xc @ xc) * scale) / np.sqrt((yc * yc).sum(axis=1) * scale)
    return np.clip(r, -1.0, 1.0)
