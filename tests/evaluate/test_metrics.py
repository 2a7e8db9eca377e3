"""Hand-built checks of the paper's CoT metrics, the pass@k estimator and the bootstrap interval."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from plasticity.evaluate.metrics import (
    QuestionRecord,
    SampleRecord,
    bootstrap_ci,
    correct_ratio,
    greedy_accuracy,
    maj_at_k,
    maj_correct,
    majority_answer,
    orm_score,
    pass_at_k,
    pass_at_k_empirical,
    per_question_values,
    rm_at_k,
    rm_correct,
    summarize,
)


def S(key, correct, reward=None) -> SampleRecord:  # noqa: N802 - short builder
    return SampleRecord(answer_key=key, correct=correct, reward=reward)


# Answer "5" is right for q0 and q1; q2 has no parsable answer at all; q3 is all wrong.
Q0 = QuestionRecord(
    greedy=S("5", True),
    samples=[S("5", True, 0.1), S("4", False, 0.9), S("5", True, 0.3), S(None, False, 0.2)],
)
Q1 = QuestionRecord(  # tie 4 vs 5 (2 votes each, None does not vote); "4" occurs first -> majority wrong
    greedy=S("4", False),
    samples=[
        S(None, False, 0.5),
        S("4", False, 0.5),
        S("5", True, 0.7),
        S("5", True, 0.7),
        S("4", False, 0.0),
    ],
)
Q2 = QuestionRecord(greedy=S(None, False), samples=[S(None, False, -1.0)] * 5)
Q3 = QuestionRecord(
    greedy=S("1", False),
    samples=[
        S("2", False, 0.0),
        S("3", False, 1.0),
        S("2", False, 0.5),
        S("3", False, 0.0),
        S("7", False, 0.0),
    ],
)
QS = [Q0, Q1, Q2, Q3]


def test_majority_ties_and_unparsable():
    # Q1 first 4 samples: None, 4, 5, 5 -> "5" wins 2:1
    assert majority_answer(Q1.samples[:4]).answer_key == "5"
    # all 5: None, 4, 5, 5, 4 -> tie 2:2, "4" appears first
    assert majority_answer(Q1.samples).answer_key == "4"
    assert not maj_correct(Q1.samples)
    assert majority_answer([S(None, False)] * 3) is None
    assert not maj_correct([S(None, False)] * 3)
    # an unparsable majority does not win: None x3, "5" x1
    assert maj_correct([S(None, False), S(None, False), S("5", True), S(None, False)])
    assert maj_correct([S("b", True), S("a", False), S("a", False), S("b", True)])  # tie -> first seen "b"


def test_rm_ties_earliest():
    assert rm_correct([S("a", True, 0.5), S("b", False, 0.5)])
    assert not rm_correct([S("b", False, 0.5), S("a", True, 0.5)])
    assert rm_correct([S("b", False, 0.1), S("a", True, 0.5), S("c", False, 0.5)])
    with pytest.raises(ValueError):
        rm_correct([S("a", True, None)])


def test_dataset_metrics_k5():
    assert greedy_accuracy(QS) == pytest.approx(1 / 4)
    # maj: Q0 "5" (2 vs 1) right; Q1 tie -> "4" wrong; Q2 none -> wrong; Q3 wrong
    assert maj_at_k([Q0, Q1, Q2, Q3][:1], 4) == 1.0
    with pytest.raises(ValueError):  # Q0 has only 4 samples
        maj_at_k(QS, 5)
    qs = [QuestionRecord(greedy=Q0.greedy, samples=list(Q0.samples) + [S("4", False, 0.0)]), Q1, Q2, Q3]
    assert maj_at_k(qs, 5) == pytest.approx(1 / 4)
    assert pass_at_k_empirical(qs, 5) == pytest.approx(2 / 4)
    # rm: Q0 best 0.9 wrong; Q1 best 0.7 (first of two) right; Q2 all -1 -> first, wrong; Q3 1.0 wrong
    assert rm_at_k(qs, 5) == pytest.approx(1 / 4)
    # correct ratio over Q0 (2/5) and Q1 (2/5) only
    assert correct_ratio(qs, 5) == pytest.approx(0.4)
    expected_orm = np.mean([np.mean([s.reward for s in q.samples[:5]]) for q in qs])
    assert orm_score(qs, 5) == pytest.approx(expected_orm)
    # k=4 uses the first four samples: Q1 -> "5" wins 2:1 -> right
    assert maj_at_k(qs, 4) == pytest.approx(2 / 4)


def test_correct_ratio_all_wrong_is_none():
    assert correct_ratio([Q2, Q3], 5) is None
    summary = summarize([Q2, Q3], 5)
    assert summary["correct_ratio"] == {"value": None, "n": 0, "ci_low": None, "ci_high": None}
    assert summary["pass@5"]["value"] == 0.0 and summary["pass@5"]["n"] == 2


def test_summarize_keys_and_missing_rewards():
    qs = [QuestionRecord(samples=[S("1", True), S("2", False)], greedy=None)]
    out = summarize(qs, 2)
    assert set(out) == {"greedy", "maj@2", "rm@2", "pass@2", "correct_ratio", "orm_score"}
    assert out["greedy"]["value"] is None and out["rm@2"]["value"] is None and out["orm_score"]["n"] == 0
    assert out["maj@2"]["value"] == 1.0 and out["correct_ratio"]["value"] == 0.5
    full = summarize(QS[1:], 5)
    for name, entry in full.items():
        if entry["value"] is not None:
            assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], name
    assert full["greedy"]["n"] == 3 and full["correct_ratio"]["n"] == 1


def test_per_question_values_unknown():
    with pytest.raises(ValueError):
        per_question_values(QS, "nope", 1)


def _pass_at_k_bruteforce(n, c, k):
    items = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
    "n,c,k", [(5, 0, 1), (5, 1, 1), (5, 2, 3), (6, 3, 4), (8, 1, 8), (7, 7, 2), (10, 3, 5)]
)
def test_pass_at_k_estimator(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_bruteforce(n, c, k))


def test_pass_at_k_invalid():
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


def test_bootstrap_ci():
    rng = np.random.default_rng(1)
    values = (rng.random(200) < 0.3).astype(float)
    low, high = bootstrap_ci(values, seed=7)
    assert low <= values.mean() <= high
    assert 0.15 < low < 0.3 < high < 0.45
    assert bootstrap_ci(values, seed=7) == (low, high)
    assert bootstrap_ci(values, seed=8) != (low, high)
    # a generic statistic takes the slow path and agrees with the vectorized mean
    assert bootstrap_ci(values, stat_fn=lambda v: float(np.mean(v)), seed=7) == pytest.approx((low, high))
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    narrow = bootstrap_ci(values, alpha=0.5, seed=7)
    assert low <= narrow[0] <= narrow[1] <= high
