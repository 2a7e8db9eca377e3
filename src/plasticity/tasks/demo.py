"""Offline demo tasks generated from a seed: they need no downloaded data.

* demo_arith: GSM8K-style multi-step word problems (shopping, ages, travel, savings, sharing, packing) with a
  step-by-step response ending ``#### N``; rows use GSM8K's field names (question, answer).
* demo_choice: multiple-choice arithmetic (4 options, answer letter); also cloze-scorable (context
  ``What is a + b?\nAnswer:``, continuations `` <choice>``), the offline stand-in for the paper's cloze sets in
  Appendix-D stability.
* demo_arith_short: the demo_arith problems with answer-only responses (``The answer is N.``), evaluated on
  demo_arith's and demo_choice's eval sets (like MetaMathQA on GSM8K + MATH: a shared eval set and a pooled
  value).

Train and test never share a problem: every problem has a signature (template + numbers, names ignored)
and a fixed, seed-independent hash of the signature assigns it to the train or the test pool (~20% test).
Each split draws from its own pool with its own random stream, so any train set is disjoint from any test set
whatever the sizes and seeds. Same options -> same rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from plasticity.errors import DataError
from plasticity.hashing import hash_fraction
from plasticity.tasks.base import (
    ClozeItem,
    SplitSpec,
    Task,
    answer_line,
    check_int,
    field_value,
    letter,
    multiple_choice,
)
from plasticity.tasks.cot import gsm8k_gold, gsm8k_response
from plasticity.tasks.registry import register

TEST_SHARE = 0.2
NAMES = (
    "Ava",
    "Ben",
    "Chloe",
    "Diego",
    "Emma",
    "Farid",
    "Grace",
    "Hiro",
    "Isla",
    "Jamal",
    "Kira",
    "Liam",
    "Mia",
)
ITEMS = ("notebooks", "pens", "apples", "stickers", "cups", "books", "candles", "towels", "batteries")
VEHICLES = ("train", "car", "bus", "truck", "ferry")
THINGS = ("bike", "game", "jacket", "lamp", "backpack", "guitar")

Problem = tuple[tuple[Any, ...], str, list[str], int]  # signature, question, steps, answer
Row = dict[str, Any]


def _shopping(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    item1, item2 = rng.sample(ITEMS, 2)
    a, p, b, q = rng.randint(2, 9), rng.randint(2, 15), rng.randint(2, 9), rng.randint(2, 15)
    total = a * p + b * q
    bill = next(x for x in (20, 50, 100, 200, 500) if x > total)
    question = (
        f"{name} buys {a} {item1} for ${p} each and {b} {item2} for ${q} each. "
        f"{name} pays with a ${bill} bill. How much change, in dollars, does {name} get?"
    )
    steps = [
        f"The {item1} cost {a} * ${p} = ${a * p}.",
        f"The {item2} cost {b} * ${q} = ${b * q}.",
        f"Altogether {name} spends ${a * p} + ${b * q} = ${total}.",
        f"The change is ${bill} - ${total} = ${bill - total}.",
    ]
    return ("shopping", a, p, b, q), question, steps, bill - total


def _ages(rng: random.Random) -> Problem:
    older, younger = rng.sample(NAMES, 2)
    d, k, j = rng.randint(2, 15), rng.randint(2, 10), rng.randint(1, 20)
    future = rng.randint(k + 1, 40)
    now_y = future - k
    now_o = now_y + d
    question = (
        f"{older} is {d} years older than {younger}. In {k} years, {younger} will be {future} years old. "
        f"How old will {older} be {j} years from now?"
    )
    steps = [
        f"{younger} is {future} - {k} = {now_y} years old now.",
        f"{older} is {now_y} + {d} = {now_o} years old now.",
        f"In {j} years {older} will be {now_o} + {j} = {now_o + j} years old.",
    ]
    return ("ages", d, k, future, j), question, steps, now_o + j


def _travel(rng: random.Random) -> Problem:
    vehicle = rng.choice(VEHICLES)
    s1, s2 = rng.randrange(20, 75, 5), rng.randrange(20, 75, 5)
    h1, h2 = rng.randint(1, 6), rng.randint(1, 6)
    question = (
        f"A {vehicle} travels at {s1} miles per hour for {h1} hours and then at {s2} miles per hour for {h2} "
        "hours. How many miles does it travel in total?"
    )
    steps = [
        f"First it travels {s1} * {h1} = {s1 * h1} miles.",
        f"Then it travels {s2} * {h2} = {s2 * h2} miles.",
        f"In total it travels {s1 * h1} + {s2 * h2} = {s1 * h1 + s2 * h2} miles.",
    ]
    return ("travel", s1, h1, s2, h2), question, steps, s1 * h1 + s2 * h2


def _savings(rng: random.Random) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    w, n = rng.randint(5, 40), rng.randint(3, 20)
    saved = w * n
    e = rng.randint(1, saved - 1)
    question = (
        f"{name} saves ${w} every week for {n} weeks and then spends ${e} on a {thing}. "
        f"How many dollars does {name} have left?"
    )
    steps = [
        f"{name} saves {w} * {n} = ${saved}.",
        f"After buying the {thing}, {saved} - {e} = ${saved - e} is left.",
    ]
    return ("savings", w, n, e), question, steps, saved - e


def _sharing(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    trays, per_tray = rng.randint(2, 6), rng.randint(6, 24)
    baked = trays * per_tray
    friends = rng.randint(2, 8)
    each = rng.randint(1, max(1, (baked - 1) // friends))
    given = friends * each
    question = (
        f"{name} bakes {trays} trays of cookies with {per_tray} cookies on each tray and gives "
        f"{each} cookies to each of {friends} friends. How many cookies are left?"
    )
    steps = [
        f"{name} bakes {trays} * {per_tray} = {baked} cookies.",
        f"{name} gives away {friends} * {each} = {given} cookies.",
        f"{baked} - {given} = {baked - given} cookies are left.",
    ]
    return ("sharing", trays, per_tray, friends, each), question, steps, baked - given


def _packing(rng: random.Random) -> Problem:
    workers, rate, hours = rng.randint(2, 6), rng.randint(2, 12), rng.randint(2, 10)
    per_hour = workers * rate
    total = per_hour * hours
    cap = rng.randint(3, 20)
    full, rest = divmod(total, cap)
    question = (
        f"Each of {workers} workers packs {rate} boxes per hour. They work for {hours} hours and load "
        f"the boxes onto carts that hold {cap} boxes each. How many carts can they fill completely?"
    )
    steps = [
        f"Together they pack {workers} * {rate} = {per_hour} boxes per hour.",
        f"In {hours} hours they pack {per_hour} * {hours} = {total} boxes.",
        f"{total} / {cap} = {full} full carts with {rest} boxes left over.",
    ]
    return ("packing", workers, rate, hours, cap), question, steps, full


TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (
    _shopping,
    _ages,
    _travel,
    _savings,
    _sharing,
    _packing,
)


def split_of(task: str, signature: tuple[Any, ...]) -> str:
    """``test`` or ``train``: the fixed pool a problem signature belongs to (independent of seeds)."""
    return "test" if hash_fraction(f"{task}:{signature!r}", 0) < TEST_SHARE else "train"


ROW_BYTES = 2048  # a generated row in memory: its dict, question, answer, id and signature (upper bound)


def check_rows_fit(task: str, split: str, n: int) -> None:
    """Refuse (one line) a generated split whose rows cannot fit in memory, before any is generated."""
    from plasticity.hardware import available_memory, human

    avail, source = available_memory("cpu")
    if n * ROW_BYTES > avail:
        raise DataError(f"{task}: {n:,} {split} problems need about {human(n * ROW_BYTES)}, more than the available "
                        f"{human(avail)} ({source}); lower n_train/n_test")


def draw_rows(
    task: str, split: str, n: int, seed: int, make: Callable[[random.Random], tuple[Any, ...]]
) -> list[Row]:
    """`n` distinct rows of `split` from `make(rng) -> (signature, row)`; train and test pools never share a
    signature (see the module docstring). Rows get ``id`` and ``signature`` fields."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    check_rows_fit(task, split, n)
    rng = random.Random(f"{task}:{split}:{seed}")
    seen: set[tuple[Any, ...]] = set()
    rows: list[Row] = []
    misses = 0
    while len(rows) < n:
        signature, row = make(rng)
        if signature in seen or split_of(task, signature) != split:
            misses += 1  # in a row: the pool is exhausted long before 200 x n attempts of a huge n
            if misses > 20_000 + 200 * len(rows) ** 0.5:
                raise DataError(f"{task}: cannot generate {n:,} distinct {split} problems (the pool gave "
                                f"{len(rows):,}); ask for fewer")
            continue
        misses = 0
        seen.add(signature)
        row.update(id=f"{task}-{split}-{seed}-{len(rows):05d}", signature=repr(signature))
        rows.append(row)
    return rows


def generate_arith(split: str, n: int, seed: int = 0) -> list[Row]:
    """`n` distinct demo_arith problems of `split` (train | test) with GSM8K fields question/answer."""

    def make(rng: random.Random) -> tuple[tuple[Any, ...], Row]:
        template = rng.choice(TEMPLATES)
        signature, question, steps, answer = template(rng)
        return signature, {"question": question, "answer": "\n".join(steps) + f"\n#### {answer}"}

    return draw_rows("demo_arith", split, n, seed, make)


def generate_choice(split: str, n: int, seed: int = 0) -> list[Row]:
    """`n` distinct multiple-choice arithmetic questions (fields question, choices, answer, solution)."""

    def make(rng: random.Random) -> tuple[tuple[Any, ...], Row]:
        op = rng.choice("+-*")
        a, b = (
            (rng.randint(2, 30), rng.randint(2, 30))
            if op == "*"
            else (rng.randint(10, 99), rng.randint(2, 99))
        )
        result = a + b if op == "+" else a - b if op == "-" else a * b
        pool = {result + d for d in (-11, -10, -2, -1, 1, 2, 9, 10, 11)}
        pool |= {c for c in (a + b, a - b, a * b) if abs(c - result) <= 30}
        distractors = rng.sample(sorted(pool - {result}), 3)
        gold = rng.randrange(4)
        choices = distractors[:gold] + [result] + distractors[gold:]
        shown = {"+": "+", "-": "-", "*": "x"}[op]
        return (a, op, b), {
            "question": f"What is {a} {shown} {b}?",
            "choices": [str(c) for c in choices],
            "answer": letter(gold, 4),
            "solution": f"{a} {shown} {b} = {result}.",
        }

    return draw_rows("demo_choice", split, n, seed, make)


@register("demo_arith")
def demo_arith(n_train: int = 2000, n_test: int = 200, seed: int = 0) -> Task:
    n_train, n_test, seed = (
        check_int("n_train", n_train, 1),
        check_int("n_test", n_test, 1),
        check_int("seed", seed),
    )
    return Task(
        name="demo_arith",
        family="cot",
        answer_type="numeric",
        answer_fallback=True,
        splits={
            "train": SplitSpec(generator=lambda: generate_arith("train", n_train, seed)),
            "eval": SplitSpec(generator=lambda: generate_arith("test", n_test, seed)),
        },
        question_fn=lambda row: field_value(row, "question"),
        response_fn=gsm8k_response,
        gold_fn=gsm8k_gold,
        description="Generated GSM-style multi-step word problems (offline demo, no data needed).",
        paper="not in the paper (offline demo)",
    )


@register("demo_choice")
def demo_choice(n_train: int = 2000, n_test: int = 200, seed: int = 0) -> Task:
    n_train, n_test, seed = (
        check_int("n_train", n_train, 1),
        check_int("n_test", n_test, 1),
        check_int("seed", seed),
    )
    return Task(
        name="demo_choice",
        family="cot",
        answer_type="choice",
        splits={
            "train": SplitSpec(generator=lambda: generate_choice("train", n_train, seed)),
            "eval": SplitSpec(generator=lambda: generate_choice("test", n_test, seed)),
        },
        question_fn=lambda row: multiple_choice(
            field_value(row, "question"), list(field_value(row, "choices"))
        ),
        response_fn=lambda row: f"{field_value(row, 'solution')}\n{answer_line(field_value(row, 'answer'))}",
        gold_fn=lambda row: str(field_value(row, "answer")).strip().upper(),
        cloze_fn=_choice_cloze,
        description="Generated multiple-choice arithmetic (offline demo, no data needed).",
        paper="not in the paper (offline demo)",
    )


def _choice_cloze(row: Row) -> ClozeItem:
    choices = [str(c) for c in field_value(row, "choices")]
    gold = "ABCD".index(str(field_value(row, "answer")).strip().upper())
    ctx = f"{field_value(row, 'question')}\nAnswer:"
    return ClozeItem(contexts=[ctx] * len(choices), continuations=[f" {c}" for c in choices], gold=gold)


@register("demo_arith_short")
def demo_arith_short(n_train: int = 2000, seed: int = 0) -> Task:
    n_train, seed = check_int("n_train", n_train, 1), check_int("seed", seed)
    return Task(
        name="demo_arith_short",
        family="cot",
        answer_type="numeric",
        answer_fallback=True,
        splits={"train": SplitSpec(generator=lambda: generate_arith("train", n_train, seed + 1))},
        question_fn=lambda row: field_value(row, "question"),
        response_fn=lambda row: answer_line(str(gsm8k_gold(row))),
        gold_fn=gsm8k_gold,
        eval_tasks=("demo_arith", "demo_choice"),
        description="demo_arith problems with answer-only responses; evaluated on demo_arith + demo_choice "
        "(offline demo of tasks sharing an eval set, with a pooled value).",
        paper="not in the paper (offline demo)",
    )
