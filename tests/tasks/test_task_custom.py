"""User-defined YAML tasks, end to end on small files written in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from plasticity.errors import DataError
from plasticity.tasks import get_task, load_rows, load_task_file, register_task
from plasticity.tasks import registry as registry_module


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def arith_rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"q": f"What is {i} + {i}?", "sol": f"{i} + {i} = {2 * i}\n#### {2 * i}"}
        for i in range(start, start + n)
    ]


COT = {
    "name": "my_sums",
    "family": "cot",
    "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
    "question_template": "Compute: {q}",
    "response_template": "{sol}",
    "gold_field": "sol",
    "answer_type": "numeric",
}


def test_yaml_cot_task_end_to_end(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", arith_rows(5))
    write_jsonl(tmp_path / "eval.jsonl", arith_rows(3, start=100))
    path = write_yaml(tmp_path / "task.yaml", COT)
    task = get_task(str(path))
    assert (task.name, task.family, task.answer_type) == ("my_sums", "cot", "numeric")
    train = load_rows(task, "train")
    assert len(train) == 5
    assert task.format_example(train[1]) == ("Compute: What is 1 + 1?", "1 + 1 = 2\n#### 2")
    evals = load_rows(task, "eval")
    assert [task.gold(r) for r in evals] == ["200", "202", "204"]
    assert task.score("100 + 100 = 200\n#### 200", evals[0])
    assert not task.score("#### 201", evals[0])
    assert task.local_available()
    assert task.describe()["train_local"].endswith("train.jsonl")


def test_registered_yaml_task_by_name(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", arith_rows(2))
    write_jsonl(tmp_path / "eval.jsonl", arith_rows(2))
    task = load_task_file(write_yaml(tmp_path / "t.yaml", {**COT, "name": "test_registered_sums"}))
    try:
        register_task(task)
        assert get_task("test_registered_sums") is task
        with pytest.raises(DataError, match="already registered"):
            register_task(task)
    finally:
        registry_module._REGISTRY.pop("test_registered_sums", None)


def test_yaml_single_file_split_is_disjoint(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "all.jsonl", arith_rows(200))
    cfg = {**COT, "data": {"path": "all.jsonl", "eval_fraction": 0.25, "split_seed": 3}}
    task = get_task(str(write_yaml(tmp_path / "task.yml", cfg)))
    train, evals = load_rows(task, "train"), load_rows(task, "eval")
    assert len(train) + len(evals) == 200
    assert 20 < len(evals) < 80
    assert {r["q"] for r in train}.isdisjoint(r["q"] for r in evals)
    assert load_rows(task, "eval").rows == evals.rows  # deterministic


def test_yaml_choice_and_cloze_tasks(tmp_path: Path) -> None:
    rows = [{"stem": "2 + 2 = ?", "opts": ["3", "4", "5"], "label": 1}]
    write_jsonl(tmp_path / "mc.jsonl", rows)
    cloze = {
        "name": "my_cloze",
        "family": "cloze",
        "data": {"train": "mc.jsonl", "eval": "mc.jsonl"},
        "context_template": "Question: {stem}\nAnswer:",
        "choices_field": "opts",
        "gold_field": "label",
    }
    task = get_task(str(write_yaml(tmp_path / "cloze.yaml", cloze)))
    item = task.cloze_item(rows[0])
    assert item.contexts == ["Question: 2 + 2 = ?\nAnswer:"] * 3
    assert item.continuations == [" 3", " 4", " 5"] and item.gold == 1
    assert task.format_example(rows[0]) == ("Question: 2 + 2 = ?\nAnswer:", "4")
    assert len(load_rows(task, "eval")) == 1
    choice = {
        "name": "my_mc",
        "family": "cot",
        "data": {"train": "mc.jsonl"},
        "question_template": "{stem} options: {opts}",
        "response_template": "The answer is {label}.",
        "gold_field": "label",
        "answer_type": "choice",
    }
    task = get_task(str(write_yaml(tmp_path / "mc.yaml", choice)))
    assert task.gold(rows[0]) == "B"
    assert task.score("The answer is (B).", rows[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"data": {"train": "train.jsonl", "validation": "x.jsonl"}}, "unknown key 'data.validation'"),
        ({"question_template": None}, "missing key 'question_template'"),
        ({"name": None}, "missing key 'name'"),
        ({"family": "poetry"}, "key 'family' must be one of"),
        ({"answer_type": "essay"}, "key 'answer_type'"),
        ({"question_template": "{q"}, "key 'question_template': bad template"),
        ({"question_template": "{}"}, "template fields must be named"),
        ({"gold_field": None}, "exactly one of the keys 'gold_field', 'gold_template'"),
        ({"data": {"eval": "eval.jsonl"}}, "missing key 'data.train'"),
        ({"hub": {"train": {"path": "x/y", "revison": "main"}}}, "unknown key 'hub.train.revison'"),
    ],
)
def test_yaml_config_errors_name_the_key(tmp_path: Path, change: dict, message: str) -> None:
    cfg = {**COT, **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with pytest.raises(DataError, match=message):
        load_task_file(write_yaml(tmp_path / "bad.yaml", cfg))


def test_yaml_missing_field_in_data_names_file_and_field(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"q": "What is 1 + 1?", "solution": "2"}])
    task = load_task_file(write_yaml(tmp_path / "task.yaml", COT))
    with pytest.raises(DataError, match="missing field 'sol'") as err:
        load_rows(task, "train")
    assert str(tmp_path / "train.jsonl") in str(err.value)


def test_yaml_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="task file not found"):
        load_task_file(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(DataError, match="must be a YAML mapping"):
        load_task_file(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(DataError, match="malformed YAML"):
        load_task_file(tmp_path / "broken.yaml")
    write_jsonl(tmp_path / "train.jsonl", arith_rows(1))
    write_jsonl(tmp_path / "eval.jsonl", arith_rows(1))
    with pytest.raises(DataError, match="takes no options"):
        get_task(str(write_yaml(tmp_path / "ok.yaml", COT)), k=3)
