"""Generated tasks with a difficulty knob, for studies of small models (no downloaded data).

* addition: ``What is 4721 + 385?`` answered by column addition, one line per digit with its carry, ending
  ``#### 5106`` (GSM8K's answer format, so Maj@k / Pass@k use the numeric answer path). ``digits`` sets the
  operand length (both operands have exactly that many digits): the difficulty knob. ``cot=False`` gives the
  answer-only response instead.

Train and test are disjoint by problem (the operand pair), whatever the sizes and seeds (see
:func:`plasticity.tasks.demo.draw_rows`).
"""

from __future__ import annotations

import random
from typing import Any

from plasticity.errors import DataError
from plasticity.tasks.base import SplitSpec, Task, check_int, field_value
from plasticity.tasks.cot import gsm8k_gold, gsm8k_response
from plasticity.tasks.demo import TEST_SHARE, draw_rows
from plasticity.tasks.registry import register

MAX_DIGITS = 9


def column_addition(a: int, b: int) -> list[str]:
    """The steps of adding `a` and `b` digit by digit from the right, with carries."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        terms = [int(d[i]) for d in (da, db) if i < len(d)] + ([carry] if carry else [])
        total = sum(terms)
        carry, digit = divmod(total, 10)
        line = f"{' + '.join(map(str, terms))} = {total}, write {digit}"
        steps.append(line + (f", carry {carry}." if carry else "."))
    if carry:
        steps.append(f"Write the carry {carry}.")
    return steps


def generate_addition(split: str, n: int, digits: int, seed: int = 0, cot: bool = True) -> list[dict[str, Any]]:
    """`n` distinct addition problems with `digits`-digit operands (fields question, answer)."""
    lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
    pool = (hi - lo + 1) ** 2
    share = TEST_SHARE if split == "test" else 1 - TEST_SHARE
    if n > int(0.8 * share * pool):  # leave room for rejection sampling within the split's pool
        raise DataError(f"addition: {n} {split} problems requested but {digits}-digit operands give only "
                        f"{pool} pairs; lower n_train/n_test or raise digits")

    def make(rng: random.Random) -> tuple[tuple[Any, ...], dict[str, Any]]:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        total = a + b
        steps = ["Add the digits from right to left.", *column_addition(a, b)] if cot else []
        answer = "\n".join([*steps, f"So {a} + {b} = {total}.", f"#### {total}"])
        return (a, b), {"question": f"What is {a} + {b}?", "answer": answer}

    return draw_rows(f"addition{digits}", split, n, seed, make)


@register("addition")
def addition(digits: int = 3, n_train: int = 5000, n_test: int = 200, seed: int = 0, cot: bool = True) -> Task:
    digits = check_int("digits", digits, 1)
    if digits > MAX_DIGITS:
        raise DataError(f"option digits must be <= {MAX_DIGITS}, got {digits}")
    n_train, n_test, seed = check_int("n_train", n_train, 1), check_int("n_test", n_test, 1), check_int("seed", seed)
    if not isinstance(cot, bool):
        raise DataError(f"option cot must be true or false, got {cot!r}")
    return Task(
        name="addition",
        family="cot",
        answer_type="numeric",
        splits={
            "train": SplitSpec(generator=lambda: generate_addition("train", n_train, digits, seed, cot)),
            "eval": SplitSpec(generator=lambda: generate_addition("test", n_test, digits, seed, cot)),
        },
        question_fn=lambda row: field_value(row, "question"),
        response_fn=gsm8k_response,
        gold_fn=gsm8k_gold,
        description=f"Generated {digits}-digit addition with column-wise chain of thought (difficulty knob: "
        "digits; no data needed).",
        paper="not in the paper (a generated task sized for small models)",
    )
