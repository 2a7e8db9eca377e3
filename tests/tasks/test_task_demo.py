"""Offline demo tasks: deterministic, correct, and train/test disjoint."""

from __future__ import annotations

from ast import literal_eval
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plasticity.tasks import get_task, load_rows
from plasticity.tasks.answers import extract_answer
from plasticity.tasks.demo import generate_arith, generate_choice, split_of

Generator = Callable[..., list[dict[str, Any]]]


@pytest.mark.parametrize("generate", [generate_arith, generate_choice])
def test_deterministic(generate: Generator) -> None:
    assert generate("train", 200, seed=3) == generate("train", 200, seed=3)
    assert generate("train", 200, seed=3) != generate("train", 200, seed=4)
    # a larger request extends a smaller one (same random stream)
    assert generate("test", 50, seed=1)[:20] == generate("test", 20, seed=1)


@pytest.mark.parametrize(
    ("generate", "task"), [(generate_arith, "demo_arith"), (generate_choice, "demo_choice")]
)
def test_train_and_test_are_disjoint(generate: Generator, task: str) -> None:
    train = generate("train", 1500, seed=0)
    tests = [row for seed in range(3) for row in generate("test", 200, seed=seed)]
    train_sigs = {r["signature"] for r in train}
    assert len(train_sigs) == len(train)  # no duplicates within a split
    assert train_sigs.isdisjoint(r["signature"] for r in tests)
    assert {r["question"] for r in train}.isdisjoint(r["question"] for r in tests)
    assert all(split_of(task, literal_eval(r["signature"])) == "test" for r in tests)


def test_arith_rows_are_correct_gsm_style() -> None:
    task = get_task("demo_arith", n_train=120, n_test=30, seed=7)
    train = load_rows(task, "train")
    assert len(train) == 120 and len(load_rows(task, "eval")) == 30
    templates = set()
    for row in train:
        question, response = task.format_example(row)
        assert response.splitlines()[-1].startswith("#### ")
        assert len(response.splitlines()) >= 3  # multi-step
        gold = task.gold(row)
        assert int(gold) >= 0 and task.score(response, row)
        assert extract_answer("numeric", response) == gold
        templates.add(literal_eval(row["signature"])[0])
    assert len(templates) >= 5


def test_choice_rows_are_consistent() -> None:
    task = get_task("demo_choice", n_train=100, n_test=20)
    for row in load_rows(task, "train"):
        question, response = task.format_example(row)
        assert len(set(row["choices"])) == 4
        index = "ABCD".index(task.gold(row))
        a, op, b = literal_eval(row["signature"])
        expected = a + b if op == "+" else a - b if op == "-" else a * b
        assert row["choices"][index] == str(expected)
        assert task.score(response, row) and question.count("\n") == 4


def test_demo_needs_no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASTICITY_DATA_ROOT", str(tmp_path / "does-not-exist"))
    rows = load_rows("demo_arith", "eval", limit=5)
    assert len(rows) == 5 and rows.source == "generated"
    assert get_task("demo_arith").local_available()
