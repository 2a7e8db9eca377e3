"""Registry, task metadata, prompt formats and data-root resolution (no downloaded data needed)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from plasticity.errors import DataError
from plasticity.tasks import (
    DEFAULT_TEMPLATE,
    FAMILIES,
    describe_tasks,
    get_task,
    list_tasks,
    load_rows,
    render,
    resolve_data_root,
    task_names,
    task_options,
)
from plasticity.tasks.cloze import arc_item, hellaswag_item, hellaswag_preprocess, piqa_item, winogrande_item

PAPER_TASKS = {
    "cot": ["metamathqa", "medmcqa", "pubmedqa", "mmlu_pro_cot", "race", "simplescaling"],
    "cloze": ["hellaswag", "winogrande", "piqa", "arc_easy", "arc_challenge"],
    "safety": ["safety"],
}


def test_all_paper_tasks_and_demos_are_registered() -> None:
    names = set(task_names())
    for family, tasks in PAPER_TASKS.items():
        for name in tasks:
            assert name in names
            assert get_task(name).family == family
    assert {"gsm8k", "math", "demo_arith", "demo_choice"} <= names


def test_task_metadata_is_consistent() -> None:
    for task in list_tasks():
        assert task.family in FAMILIES
        assert "train" in task.splits
        assert "eval" in task.splits or task.eval_tasks
        for other in task.eval_tasks:
            assert get_task(other).family == task.family
        if task.family == "cot":
            assert task.answer_type in ("numeric", "math", "choice", "yesno")
        if task.family == "cloze":
            assert task.answer_type == "cloze"
        if task.splits["train"].generator is None:  # generated tasks (demo_*, addition) need no files
            assert task.splits["train"].local, task.name
            assert task.splits["train"].hub is not None, task.name


def test_describe_tasks_is_table_ready(tmp_path: Path) -> None:
    rows = describe_tasks(tmp_path)  # an empty data root: nothing local except the generated demos
    assert [r["name"] for r in rows] == task_names()
    keys = {
        "name",
        "family",
        "answer_type",
        "train_local",
        "train_hub",
        "eval_local",
        "eval_hub",
        "local_available",
    }
    for row in rows:
        assert keys <= set(row)
        assert row["local_available"] is (get_task(row["name"]).splits["train"].generator is not None)
        json.dumps(row)
    by_name = {r["name"]: r for r in rows}
    assert "meta-math/MetaMathQA" in by_name["metamathqa"]["train_hub"]
    assert "madrylab/gsm8k-platinum" in by_name["gsm8k"]["eval_hub"]
    assert "GSM8K train" in by_name["metamathqa"]["notes"]
    assert by_name["metamathqa"]["evaluated_on"] == "gsm8k, math"


def test_unknown_task_lists_known_names() -> None:
    with pytest.raises(DataError, match="unknown task 'nope'.*gsm8k"):
        get_task("nope")
    with pytest.raises(DataError, match="unknown task"):
        load_rows("nope", "train")


def test_task_options() -> None:
    assert task_options("safety")["k"] == 1000
    task = get_task("safety", k=300, n_alpaca=50)
    assert task.options["k"] == 300 and task.options["n_alpaca"] == 50
    with pytest.raises(DataError, match="no option 'kk'"):
        get_task("safety", kk=3)
    with pytest.raises(DataError, match="k must be an integer"):
        get_task("safety", k=-1)
    with pytest.raises(DataError, match="eval_fraction"):
        get_task("piqa", eval_fraction=1.5)
    assert get_task("math", answer_fallback=True).answer_fallback is True
    with pytest.raises(DataError, match="answer_fallback"):
        get_task("math", answer_fallback="yes")


def test_split_errors() -> None:
    with pytest.raises(DataError, match="evaluated on the eval splits of gsm8k, math"):
        load_rows("metamathqa", "eval")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_rows("gsm8k", "dev")
    with pytest.raises(DataError, match="unknown data source"):
        load_rows("gsm8k", "train", source="ftp")


def test_render_default_template() -> None:
    assert DEFAULT_TEMPLATE == "Human: {question}\nAssistant: {response}"
    assert render(DEFAULT_TEMPLATE, "What is {x}?", "2") == "Human: What is {x}?\nAssistant: 2"


def test_hub_path_uses_datasets_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(path: str, config: str | None, split: str, revision: str | None) -> list[dict[str, str]]:
        calls.append((path, config, split, revision))
        return [
            {"question": "Q1", "answer": "two <<1+1=2>>2\n#### 2"},
            {"question": "Q2", "answer": "no marker"},
        ]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    rows = load_rows("gsm8k", "eval", source="hub")
    assert calls == [("madrylab/gsm8k-platinum", "main", "test", None)]
    assert rows.source == "hub" and len(rows) == 1 and rows.counts["unformattable"] == 1
    assert get_task("gsm8k").format_example(rows[0]) == ("Q1", "two 2\n#### 2")


def test_auto_source_prefers_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(load_dataset=lambda *a, **k: [{"question": "hub", "answer": "#### 1"}])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert load_rows("gsm8k", "train", data_root=tmp_path, source="auto").source == "hub"
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text(
        json.dumps({"question": "local", "answer": "#### 2"}) + "\n"
    )
    rows = load_rows("gsm8k", "train", data_root=tmp_path, source="auto")
    assert rows.source == "local" and rows[0]["question"] == "local"
    with pytest.raises(DataError, match="no Hub source"):
        load_rows("safety", "eval", source="hub")


def test_hub_without_datasets_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"plasticity\[hub\]"):
        load_rows("gsm8k", "train", source="hub")


# --- cloze prompt formats (lm-evaluation-harness) on hand-written rows ------------------------------------


def test_hellaswag_format() -> None:
    assert hellaswag_preprocess(" A [title] B [step] c ") == "A. B c"
    row = {
        "activity_label": "Cooking",
        "ctx_a": "A man opens a jar.",
        "ctx_b": "he",
        "endings": ["pours it out.", "eats [header] it."],
        "label": "1",
    }
    item = hellaswag_item(row)
    assert item.contexts == ["Cooking: A man opens a jar. He"] * 2
    assert item.continuations == [" pours it out.", " eats it."]
    assert item.gold == 1


def test_winogrande_partial_scoring() -> None:
    row = {
        "sentence": "Ann gave Bo a gift because _ was kind.",
        "option1": "Ann",
        "option2": "Bo",
        "answer": "2",
    }
    item = winogrande_item(row)
    assert item.contexts == ["Ann gave Bo a gift because Ann", "Ann gave Bo a gift because Bo"]
    assert item.continuations == [" was kind.", " was kind."]
    assert item.gold == 1
    task = get_task("winogrande")
    assert task.format_example(row) == ("Ann gave Bo a gift because Bo", "was kind.")
    assert task.gold(row) == 1


def test_piqa_and_arc_formats() -> None:
    item = piqa_item({"goal": "Open a jar", "sol1": "twist the lid", "sol2": "bake it", "label": 0})
    assert item.contexts == ["Question: Open a jar\nAnswer:"] * 2
    assert item.continuations == [" twist the lid", " bake it"]
    assert item.gold == 0
    row = {
        "question": "Which is a gas?",
        "choices": {"text": ["ice", "steam", "rock"], "label": ["A", "B", "C"]},
    }
    item = arc_item({**row, "answerKey": "B"})
    assert item.contexts == ["Question: Which is a gas?\nAnswer:"] * 3
    assert item.continuations == [" ice", " steam", " rock"] and item.gold == 1
    with pytest.raises(ValueError):
        arc_item({**row, "answerKey": "Z"})


def test_cot_formats_on_hand_written_rows() -> None:
    med = get_task("medmcqa")
    row = {"question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 2}
    assert med.format_example(row) == ("Q?\nA. a\nB. b\nC. c\nD. d", "The answer is C.")
    assert med.gold(row) == "C"
    assert med.format_example({**row, "exp": "Because."})[1] == "Because.\nThe answer is C."
    assert med.score("... so the answer is (C).", row)
    pub = get_task("pubmedqa")
    row = {
        "question": "Q?",
        "context": {"contexts": ["p1", "p2"]},
        "long_answer": "Long.",
        "final_decision": "no",
    }
    assert pub.format_example(row) == ("p1\np2\n\nQuestion: Q?", "Long.\nThe answer is no.")
    assert pub.score("Long.\nThe answer is no.", row)
    mmlu = get_task("mmlu_pro_cot")
    assert mmlu.gold({"question": "Q", "choices": ["x", "y"], "answer": 1}) == "B"
    pro = {
        "question": "Q",
        "options": list("abcdefghij"),
        "answer": "J",
        "cot_content": "A: Let's think. The answer is (J).",
    }
    assert mmlu.format_example(pro)[1] == "Let's think. The answer is (J)."
    assert mmlu.score(mmlu.response(pro), pro)
    meta = get_task("metamathqa")
    assert meta.format_example({"query": "Q", "response": "R. The answer is: 4"}) == (
        "Q",
        "R. The answer is: 4",
    )
    s1 = get_task("simplescaling")
    row = {"question": "Q", "thinking_trajectories": ["think"], "attempt": "\\boxed{3}"}
    assert s1.format_example(row) == ("Q", "think\n\n\\boxed{3}")
    math = get_task("math")
    assert math.gold({"problem": "P", "solution": "so \\boxed{\\dfrac{1}{2}}."}) == "1/2"
    assert math.score("we get \\boxed{0.5}", {"problem": "P", "solution": "\\boxed{\\frac12}"})


# --- data root resolution -----------------------------------------------------------------------------------


def test_resolve_data_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--data-root / data_root, else $PLASTICITY_DATA_ROOT, else $PLASTICITY_CACHE/data (~/.cache/plasticity/data);
    never a folder guessed from the working directory or the checkout (no ../shared/data)."""
    monkeypatch.setenv("PLASTICITY_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("PLASTICITY_DATA_ROOT")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setenv("PLASTICITY_CACHE", str(tmp_path / "cache"))
    assert resolve_data_root() == tmp_path / "cache" / "data"
    monkeypatch.delenv("PLASTICITY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "plasticity" / "data"


def test_missing_data_root_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLASTICITY_DATA_ROOT", raising=False)
    monkeypatch.setenv("PLASTICITY_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    expected = str(tmp_path / "cache" / "data" / "gsm8k")
    with pytest.raises(DataError, match="PLASTICITY_DATA_ROOT") as e:
        load_rows("gsm8k", "train")
    assert str(e.value).startswith(expected) and "--data-root" in str(e.value)
    assert not get_task("gsm8k").local_available()
    assert len(load_rows("demo_arith", "train", limit=3)) == 3  # demo tasks need no data at all
