"""The generated addition task: correct column steps, a working difficulty knob, disjoint train/test."""

from __future__ import annotations

import random
import re

import pytest

from plasticity.errors import DataError
from plasticity.tasks import get_task, load_rows
from plasticity.tasks.arithmetic import column_addition, generate_addition
from plasticity.tasks.cloze import sst2_item


def _replay(a: int, b: int, steps: list[str]) -> int:
    """Rebuild the sum from the written digits, checking every line's arithmetic and carry."""
    digits, carry = [], 0
    da, db = str(a)[::-1], str(b)[::-1]
    for i, line in enumerate(steps):
        m = re.fullmatch(r"Write the carry (\d)\.", line)
        if m:
            assert int(m.group(1)) == carry and i == len(steps) - 1
            digits.append(carry)
            break
        m = re.fullmatch(r"([\d + ]+) = (\d+), write (\d)(?:, carry (\d))?\.", line)
        assert m, line
        terms = [int(t) for t in m.group(1).split(" + ")]
        expected = [int(d[i]) for d in (da, db) if i < len(d)] + ([carry] if carry else [])
        assert terms == expected, line
        assert int(m.group(2)) == sum(terms) and int(m.group(3)) == sum(terms) % 10
        carry = int(m.group(4) or 0)
        assert carry == sum(terms) // 10
        digits.append(int(m.group(3)))
    return int("".join(map(str, digits[::-1])))


def test_column_steps_are_right_for_random_pairs():
    rng = random.Random(0)
    for _ in range(500):
        a, b = rng.randint(0, 10**rng.randint(1, 7)), rng.randint(0, 10**rng.randint(1, 7))
        assert _replay(a, b, column_addition(a, b)) == a + b


@pytest.mark.parametrize("digits", [2, 3, 5])
def test_rows_knob_and_gold(digits):
    task = get_task("addition", digits=digits, n_train=40, n_test=20)
    train, test = load_rows(task, "train"), load_rows(task, "eval")
    assert len(train) == 40 and len(test) == 20
    for row in [*train, *test]:
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", row["question"]).groups())
        assert len(str(a)) == len(str(b)) == digits
        assert task.gold(row) == str(a + b)
        question, response = task.format_example(row)
        assert response.endswith(f"#### {a + b}") and task.score(response, row)
    assert {r["question"] for r in train}.isdisjoint(r["question"] for r in test)


def test_train_and_test_never_share_a_problem_across_seeds_and_sizes():
    train = {r["question"] for s in range(3) for r in generate_addition("train", 300, 2, seed=s)}
    test = {r["question"] for s in range(3) for r in generate_addition("test", 100, 2, seed=s)}
    assert train.isdisjoint(test)


def test_answer_only_and_bad_options():
    row = generate_addition("train", 1, 3, cot=False)[0]
    assert row["answer"].splitlines()[0].startswith("So ")
    with pytest.raises(DataError, match="digits"):
        get_task("addition", digits=0)
    with pytest.raises(DataError, match="lower n_train"):
        generate_addition("test", 20, 1)  # 100 one-digit pairs, ~20 of them in the test pool
    assert len(generate_addition("test", 10, 1)) == 10


def test_sst2_item_is_lm_eval_harness_format():
    item = sst2_item({"sentence": "a gorgeous film . ", "label": 1})
    assert item.contexts == ["a gorgeous film .\nQuestion: Is this sentence positive or negative?\nAnswer:"] * 2
    assert item.continuations == [" negative", " positive"] and item.gold == 1
    task = get_task("sst2")
    assert task.format_example({"sentence": "dull .", "label": 0}) == (item.contexts[0].replace(
        "a gorgeous film .", "dull ."), "negative")
