"""Every registered task against the local data folder (../shared/data beside the checkout).

Skipped when the folder is absent. Only structure is asserted: no dataset text is copied into the repo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plasticity.tasks import describe_tasks, get_task, list_tasks, load_rows, task_names
from plasticity.tasks.base import Membership, Partition

DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"
pytestmark = [
    pytest.mark.needs_data,
    pytest.mark.skipif(
        not DATA_ROOT.is_dir(),
        reason=f"local data folder {DATA_ROOT} is absent (../shared/data beside the repo)",
    ),
]


def _splits() -> list[tuple[str, str]]:
    return [(t.name, split) for t in list_tasks() for split in t.splits]


@pytest.mark.parametrize(("name", "split"), _splits())
def test_every_task_loads_and_formats(name: str, split: str) -> None:
    task = get_task(name)
    rows = load_rows(task, split, data_root=DATA_ROOT, limit=20)
    assert len(rows) == 20
    assert rows.counts["kept"] == 20
    for row in rows:
        if split == "train":
            question, response = task.format_example(row)
            assert question.strip() and response.strip()
        elif task.family == "cloze":
            item = task.cloze_item(row)
            assert len(item.contexts) == len(item.continuations) >= 2
            assert all(c.startswith(" ") for c in item.continuations)
        else:
            assert task.question(row).strip()
            if task.family == "cot":
                gold = task.gold(row)
                assert gold
                assert task.is_correct(gold, gold)


def test_all_tasks_available_locally() -> None:
    table = describe_tasks(DATA_ROOT)
    assert [r["name"] for r in table] == task_names()
    missing = [r["name"] for r in table if not r["local_available"]]
    assert missing == []


def _shared_file_tasks() -> list[str]:
    names = []
    for task in list_tasks():
        if "eval" in task.splits and task.splits["train"].local and task.splits["eval"].local:
            train_files = {s.path for s in task.splits["train"].local}
            if train_files & {s.path for s in task.splits["eval"].local}:
                names.append(task.name)
    return names


def test_shared_file_tasks_are_the_expected_ones() -> None:
    cot = {"medmcqa", "pubmedqa", "mmlu_pro_cot", "race"}
    cloze = {"hellaswag", "winogrande", "piqa", "arc_easy", "arc_challenge"}
    assert set(_shared_file_tasks()) == cot | cloze


@pytest.mark.parametrize("name", _shared_file_tasks())
def test_sft_split_is_disjoint_from_eval_split(name: str) -> None:
    task = get_task(name)
    train = load_rows(task, "train", data_root=DATA_ROOT)
    evals = load_rows(task, "eval", data_root=DATA_ROOT)
    assert len(train) > 0 and len(evals) > 0
    as_json = {json.dumps(r, sort_keys=True) for r in train}
    assert as_json.isdisjoint(json.dumps(r, sort_keys=True) for r in evals)
    # no question (or partition key) on both sides
    assert {task.question(r) for r in train}.isdisjoint(task.question(r) for r in evals)
    src = task.splits["train"].local[0]
    if isinstance(src.row_filter, Partition):
        key = src.row_filter.key
        assert {key(r) for r in train}.isdisjoint(key(r) for r in evals)
    else:
        assert isinstance(src.row_filter, Membership)
    # together the two parts cover the file (nothing lost besides counted skips)
    read = train.counts["rows_read"]
    skipped = sum(train.counts.get(k, 0) for k in ("bad_json", "missing_field"))
    assert (
        len(train) + len(evals) + train.counts.get("unformattable", 0) + evals.counts.get("unformattable", 0)
        == read - skipped
    )


def test_partition_depends_on_seed_and_fraction() -> None:
    a = load_rows(get_task("piqa"), "eval", data_root=DATA_ROOT)
    b = load_rows(get_task("piqa", split_seed=1), "eval", data_root=DATA_ROOT)
    c = load_rows(get_task("piqa", eval_fraction=0.2), "eval", data_root=DATA_ROOT)
    assert a.rows != b.rows
    assert len(c) < len(a)
    assert load_rows(get_task("piqa"), "eval", data_root=DATA_ROOT).rows == a.rows


def test_pubmedqa_uses_official_test_ids() -> None:
    ids = {
        json.loads(line)["pubid"]
        for line in open(DATA_ROOT / "pubmed_qa/pqa_labeled/official_test_pubids.jsonl")
    }
    evals = load_rows("pubmedqa", "eval", data_root=DATA_ROOT)
    assert {r["pubid"] for r in evals} == ids
    assert all(get_task("pubmedqa").gold(r) in ("yes", "no", "maybe") for r in evals)


def test_safety_mixture_counts() -> None:
    task = get_task("safety", k=300, n_alpaca=100, seed=1)
    rows = load_rows(task, "train", data_root=DATA_ROOT)
    assert len(rows) == 400
    assert rows.counts["from:safety/train/safety_only_data_Instructions.jsonl"] == 300
    assert rows.counts["from:alpaca/train.jsonl"] == 100
    evals = load_rows(task, "eval", data_root=DATA_ROOT)
    assert len(evals) == 100 and task.gold(evals[0]) is None


def test_gold_solutions_score_correct() -> None:
    """The datasets' own worked answers must be graded correct by the answer extraction."""
    for name, limit in (("gsm8k", None), ("math", 500)):
        task = get_task(name)
        rows = load_rows(task, "eval", data_root=DATA_ROOT, limit=limit)
        wrong = [i for i, r in enumerate(rows) if not task.score(task.response(r), r)]
        assert wrong == [], f"{name}: {len(wrong)} gold responses graded wrong"


@pytest.mark.parametrize(("name", "key"), [("gsm8k", "question"), ("math", "problem")])
def test_math_eval_sets_do_not_overlap_their_train_files(name: str, key: str) -> None:
    train = load_rows(name, "train", data_root=DATA_ROOT)
    evals = load_rows(name, "eval", data_root=DATA_ROOT)
    assert {r[key].strip() for r in train}.isdisjoint(r[key].strip() for r in evals)


def test_metamathqa_substitute_is_gsm8k_train() -> None:
    rows = load_rows("metamathqa", "train", data_root=DATA_ROOT, limit=5)
    assert rows.origins[0].endswith("gsm8k/train.jsonl")
    assert any("substitutes" in n for n in rows.notes)
    assert get_task("metamathqa").evaluated_on() == ("gsm8k", "math")
