"""Correlations, leave-one-out stability and seed bootstrap CIs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from plasticity.analysis.stats import bootstrap_ci_over_seeds, correlation, leave_one_out

X = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
Y = [1.1, 1.9, 3.2, 3.9, 5.1, -20.0]  # index 5 is an outlier


def test_correlation_matches_numpy_and_scipy():
    res = correlation(X, Y)
    assert res["n"] == 6
    assert res["pearson_r"] == pytest.approx(np.corrcoef(X, Y)[0, 1])
    assert res["pearson_p"] == pytest.approx(sps.pearsonr(X, Y).pvalue)
    assert res["spearman_rho"] == pytest.approx(np.corrcoef(sps.rankdata(X), sps.rankdata(Y))[0, 1])
    # ranks of Y: 2 3 4 5 6 1 -> d = -1 -1 -1 -1 -1 5, sum d^2 = 30; rho = 1 - 6 * 30 / (6 * 35)
    assert res["spearman_rho"] == pytest.approx(1 - 6 * 30 / (6 * 35))
    assert correlation([1, 2, 3], [2, 4, 6])["pearson_r"] == pytest.approx(1.0)


def test_leave_one_out_outlier():
    res = leave_one_out(X, Y)
    full = np.corrcoef(X, Y)[0, 1]
    assert full < 0 and res["full_r"] == pytest.approx(full)
    expected = [np.corrcoef(np.delete(X, i), np.delete(Y, i))[0, 1] for i in range(6)]
    assert [d["r"] for d in res["loo"]] == pytest.approx(expected)
    without_outlier = np.corrcoef(X[:5], Y[:5])[0, 1]
    assert without_outlier > 0.99
    assert res["argmax"] == 5 and res["max_r"] == pytest.approx(without_outlier)
    assert res["min_r"] == pytest.approx(min(expected)) and res["argmin"] == int(np.argmin(expected))
    assert res["n_sign_changes"] == 1
    assert res["max_abs_change"] == pytest.approx(without_outlier - full)
    sp = leave_one_out(X, Y, method="spearman")
    assert sp["loo"][5]["r"] == pytest.approx(1.0)
    json.dumps(res, allow_nan=False)


def test_undefined_correlations_are_none():
    res = correlation([1, 2, 3], [5, 5, 5])
    assert res["pearson_r"] is None and res["spearman_rho"] is None
    loo = leave_one_out([1, 2, 3], [1, 2, 2])  # dropping the 1 leaves a constant y
    assert loo["loo"][0]["r"] is None and loo["min_r"] == pytest.approx(1.0) and loo["argmin"] in (1, 2)
    json.dumps(loo, allow_nan=False)
    with pytest.raises(ValueError):
        correlation([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        leave_one_out(X, Y, method="kendall")


def test_bootstrap_deterministic_and_sane():
    data = {0.0: [0.50, 0.52, 0.48, 0.51], 0.1: [0.60, 0.62], 1.0: [0.7]}
    a = bootstrap_ci_over_seeds(data, n_boot=500, seed=0)
    assert a == bootstrap_ci_over_seeds(data, n_boot=500, seed=0)
    many = {"g": list(np.random.default_rng(0).normal(size=10))}
    assert bootstrap_ci_over_seeds(many, seed=0) != bootstrap_ci_over_seeds(many, seed=1)
    for g, vals in data.items():
        r = a[g]
        assert r["mean"] == pytest.approx(np.mean(vals)) and r["n"] == len(vals)
        assert min(vals) <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= max(vals)
    assert a[1.0]["ci_low"] == a[1.0]["ci_high"] == 0.7 and a[1.0]["std"] is None
    # Each group's resampling depends only on (seed, group): dropping / reordering groups changes nothing.
    b = bootstrap_ci_over_seeds({1.0: [0.7], 0.0: data[0.0]}, n_boot=500, seed=0)
    assert b[0.0] == a[0.0]
    json.dumps({str(k): v for k, v in a.items()}, allow_nan=False)


def test_bootstrap_known_distribution():
    res = bootstrap_ci_over_seeds({"g": [0.0, 1.0]}, n_boot=2000, seed=0)["g"]
    assert res["ci_low"] == 0.0 and res["ci_high"] == 1.0 and res["mean"] == 0.5  # means in {0, .5, 1}
    wide = bootstrap_ci_over_seeds({"g": list(range(10))}, n_boot=2000, alpha=0.5)["g"]
    narrow = bootstrap_ci_over_seeds({"g": list(range(10))}, n_boot=2000, alpha=0.05)["g"]
    assert narrow["ci_low"] < wide["ci_low"] < 4.5 < wide["ci_high"] < narrow["ci_high"]
    with pytest.raises(ValueError):
        bootstrap_ci_over_seeds({"g": []})


# --------------------------------------------------------------------- seed bootstraps: vectorized == the loop
def _loop_resample(groups, rng):
    return {g: np.asarray(v, dtype=np.float64)[rng.integers(0, len(v), len(v))] for g, v in groups.items()}


def _loop_optimum(groups, lower, n_boot, seed):
    keys, rng = sorted(groups), np.random.default_rng(seed)
    pick = np.argmin if lower else np.argmax
    wins = dict.fromkeys(keys, 0)
    for _ in range(n_boot):
        r = _loop_resample(groups, rng)
        wins[keys[int(pick([r[k].mean() for k in keys]))]] += 1
    return {k: w / n_boot for k, w in wins.items()}


def _loop_trend(groups, n_boot, seed):
    keys, rng = sorted(groups), np.random.default_rng(seed)
    rx = sps.rankdata(np.concatenate([np.full(len(groups[k]), k) for k in keys]))
    boots = []
    for _ in range(n_boot):
        r = _loop_resample(groups, rng)
        ry = sps.rankdata(np.concatenate([r[k] for k in keys]))
        if ry.std() > 0 and rx.std() > 0:
            boots.append(float(np.corrcoef(rx, ry)[0, 1]))
    return (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))) if boots else (None, None)


@pytest.mark.parametrize("case", range(24))
def test_vectorized_bootstraps_equal_the_per_resample_loop(case: int) -> None:
    """The seed bootstraps draw every resample's indices in the loop's order and compute all resamples at once:
    the same p_best, order fractions and trend CI as resampling one at a time (ties, unequal groups, constants,
    groups given out of order)."""
    from plasticity.analysis.stats import optimum_bootstrap, optimum_order_bootstrap, trend_bootstrap

    rng = np.random.default_rng(case)
    keys = [float(k) for k in rng.permutation([0.0, 0.1, 0.3, 1.0, 3.0])[: rng.integers(2, 6)]]
    groups = {k: list(np.round(rng.normal(size=rng.integers(1, 4)), 1 if case % 2 else 6)) for k in keys}
    if case % 6 == 0:
        groups = {k: [1.0] * len(v) for k, v in groups.items()}
    n_boot, seed = int(rng.integers(1, 80)), case
    for lower in (True, False):
        assert optimum_bootstrap(groups, lower, n_boot, seed)["p_best"] == _loop_optimum(groups, lower, n_boot, seed)
    other = {k: list(rng.normal(size=len(v))) for k, v in groups.items()}
    got = optimum_order_bootstrap(groups, True, other, False, n_boot, seed)
    keys_s, r = sorted(keys), np.random.default_rng(seed)
    want = {"greater": 0, "equal": 0, "smaller": 0}
    for _ in range(n_boot):
        idx = {k: r.integers(0, len(groups[k]), len(groups[k])) for k in keys_s}
        ka = keys_s[int(np.argmin([np.asarray(groups[k])[idx[k]].mean() for k in keys_s]))]
        kb = keys_s[int(np.argmax([np.asarray(other[k])[idx[k]].mean() for k in keys_s]))]
        want["greater" if kb > ka else "equal" if kb == ka else "smaller"] += 1
    assert got == {k: v / n_boot for k, v in want.items()}
    t = trend_bootstrap(groups, n_boot, seed)
    lo, hi = _loop_trend(groups, n_boot, seed)
    if lo is None:
        assert t["ci_low"] is None and t["ci_high"] is None
    else:
        assert t["ci_low"] == pytest.approx(lo, rel=1e-12, abs=1e-12)
        assert t["ci_high"] == pytest.approx(hi, rel=1e-12, abs=1e-12)
