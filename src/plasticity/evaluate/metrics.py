"""Chain-of-thought evaluation metrics of the paper (Section 3), as pure functions over sample records.

Per question the evaluation holds one greedy sample (temperature 0) and k sampled ones (temperature 1);
each sample carries a normalized `answer_key` (None when no answer could be parsed), whether it is
`correct`, and optionally an outcome-reward-model `reward`.

* Greedy (Pass@1): the greedy sample is correct.
* Maj@k: the most frequent parsable answer among the k samples is correct.
* RM@k: the sample with the highest reward is correct.
* Pass@k: at least one of the k samples is correct.
* Correct ratio: over questions with at least one correct sample, the fraction of correct samples.
* ORM score: the mean reward of the samples.

Every metric is a mean of per-question values, so `bootstrap_ci` resamples questions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plasticity.resampling import bootstrap_ci as bootstrap_ci  # the one bootstrap (re-exported: the metrics API)


@dataclass(frozen=True)
class SampleRecord:
    """One graded completion: normalized answer (None if unparsable), correctness, optional ORM reward."""

    answer_key: Hashable | None
    correct: bool
    reward: float | None = None


@dataclass(frozen=True)
class QuestionRecord:
    """The graded completions of one question: the greedy one (optional) and the k sampled ones."""

    samples: Sequence[SampleRecord] = field(default_factory=tuple)
    greedy: SampleRecord | None = None


# ----------------------------------------------------------------------------------------------------------
# Per-question values


def majority_answer(samples: Sequence[SampleRecord]) -> SampleRecord | None:
    """The first sample carrying the majority answer, or None if no sample has a parsable answer.

    Unparsable answers (answer_key None) do not vote. Ties are broken deterministically: among the keys
    with the highest count, the one whose first occurrence comes earliest in sample order wins.
    """
    counts: dict[Hashable, int] = {}
    first: dict[Hashable, SampleRecord] = {}
    for s in samples:
        if s.answer_key is None:
            continue
        counts[s.answer_key] = counts.get(s.answer_key, 0) + 1
        first.setdefault(s.answer_key, s)
    if not counts:
        return None
    best = max(counts.values())
    key = next(key for key in first if counts[key] == best)  # dicts keep first-occurrence order
    return first[key]


def maj_correct(samples: Sequence[SampleRecord]) -> bool:
    """Maj@k for one question: the majority answer is correct (its first sample's `correct`).

    A question without any parsable answer counts as wrong.
    """
    winner = majority_answer(samples)
    return winner is not None and bool(winner.correct)


def pass_correct(samples: Sequence[SampleRecord]) -> bool:
    """Pass@k for one question: any sample is correct."""
    return any(s.correct for s in samples)


def _require_rewards(samples: Sequence[SampleRecord]) -> list[float]:
    rewards = [s.reward for s in samples]
    if any(r is None for r in rewards):
        raise ValueError("every sample needs a reward for RM@k / ORM score")
    return [float(r) for r in rewards if r is not None]


def rm_correct(samples: Sequence[SampleRecord]) -> bool:
    """RM@k for one question: the highest-reward sample is correct (ties: the earliest sample)."""
    rewards = _require_rewards(samples)
    if not rewards:
        return False
    best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    return bool(samples[best].correct)


def correct_fraction(samples: Sequence[SampleRecord]) -> float:
    """The fraction of correct samples of one question."""
    if not samples:
        raise ValueError("no samples")
    return sum(bool(s.correct) for s in samples) / len(samples)


def mean_reward(samples: Sequence[SampleRecord]) -> float:
    """The mean ORM reward of one question's samples."""
    rewards = _require_rewards(samples)
    if not rewards:
        raise ValueError("no samples")
    return float(np.mean(rewards))


# ----------------------------------------------------------------------------------------------------------
# Per-question value lists (what the bootstrap resamples) and dataset-level metrics


def _first_k(q: QuestionRecord, k: int) -> Sequence[SampleRecord]:
    if len(q.samples) < k:
        raise ValueError(f"a question has {len(q.samples)} samples, fewer than k={k}")
    return q.samples[:k]


def per_question_values(questions: Sequence[QuestionRecord], metric: str, k: int) -> list[float]:
    """The per-question values whose mean is `metric` ("greedy", "maj", "pass", "rm", "correct_ratio",
    "orm"); uses the first k samples. For "correct_ratio" only questions with a correct sample appear."""
    if metric == "greedy":
        if any(q.greedy is None for q in questions):
            raise ValueError("greedy accuracy needs a greedy sample for every question")
        return [float(bool(q.greedy.correct)) for q in questions if q.greedy is not None]
    per_q: dict[str, Callable[[Sequence[SampleRecord]], float]] = {
        "maj": lambda s: float(maj_correct(s)),
        "pass": lambda s: float(pass_correct(s)),
        "rm": lambda s: float(rm_correct(s)),
        "orm": mean_reward,
        "correct_ratio": correct_fraction,
    }
    if metric not in per_q:
        raise ValueError(f"unknown metric {metric!r}")
    samples = [_first_k(q, k) for q in questions]
    if metric == "correct_ratio":
        samples = [s for s in samples if pass_correct(s)]
    return [per_q[metric](s) for s in samples]


def _mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def greedy_accuracy(questions: Sequence[QuestionRecord]) -> float | None:
    """Greedy (Pass@1) accuracy: fraction of questions whose greedy sample is correct."""
    return _mean_or_none(per_question_values(questions, "greedy", 0))


def maj_at_k(questions: Sequence[QuestionRecord], k: int) -> float | None:
    """Maj@k accuracy over the first k samples of each question (see `majority_answer` for ties)."""
    return _mean_or_none(per_question_values(questions, "maj", k))


def pass_at_k_empirical(questions: Sequence[QuestionRecord], k: int) -> float | None:
    """Pass@k accuracy: fraction of questions with a correct sample among their first k samples."""
    return _mean_or_none(per_question_values(questions, "pass", k))


def rm_at_k(questions: Sequence[QuestionRecord], k: int) -> float | None:
    """RM@k accuracy: fraction of questions whose highest-reward sample is correct (first k samples;
    ties go to the earliest sample)."""
    return _mean_or_none(per_question_values(questions, "rm", k))


def correct_ratio(questions: Sequence[QuestionRecord], k: int) -> float | None:
    """Mean fraction of correct samples over questions with at least one correct sample among the first k.

    None when no question has a correct sample.
    """
    return _mean_or_none(per_question_values(questions, "correct_ratio", k))


def orm_score(questions: Sequence[QuestionRecord], k: int) -> float | None:
    """ORM score: mean reward of the first k samples (mean over questions of the per-question mean, which
    equals the mean over all samples since every question contributes k)."""
    return _mean_or_none(per_question_values(questions, "orm", k))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from n samples of which c are correct (Chen et al., 2021):
    1 - C(n - c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# ----------------------------------------------------------------------------------------------------------
# Confidence intervals and summary


def summarize(
    questions: Sequence[QuestionRecord],
    k: int,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """All paper metrics with bootstrap intervals: metric name -> {"value", "n", "ci_low", "ci_high"}.

    Names: "greedy", f"maj@{k}", f"rm@{k}", f"pass@{k}", "correct_ratio", "orm_score". `n` is the number
    of questions the value averages over. A metric that cannot be computed (no greedy samples, missing
    rewards, or no question with a correct sample for the correct ratio) has value/ci None and n 0.
    """
    names = {
        "greedy": "greedy",
        f"maj@{k}": "maj",
        f"rm@{k}": "rm",
        f"pass@{k}": "pass",
        "correct_ratio": "correct_ratio",
        "orm_score": "orm",
    }
    has_greedy = bool(questions) and all(q.greedy is not None for q in questions)
    has_rewards = all(s.reward is not None for q in questions for s in q.samples[:k])
    out: dict[str, dict[str, Any]] = {}
    for name, metric in names.items():
        values: list[float] = []
        if (metric != "greedy" or has_greedy) and (metric not in ("rm", "orm") or has_rewards):
            values = per_question_values(questions, metric, k)
        if not values:
            out[name] = {"value": None, "n": 0, "ci_low": None, "ci_high": None}
            continue
        low, high = bootstrap_ci(values, n_boot=n_boot, alpha=alpha, seed=seed)
        out[name] = {"value": float(np.mean(values)), "n": len(values), "ci_low": low, "ci_high": high}
    return out
