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
