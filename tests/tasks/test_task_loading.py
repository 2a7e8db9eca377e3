"""Loading local files: bad data raises DataError naming the file/field, skipped rows are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plasticity.errors import DataError
from plasticity.tasks import get_task, load_rows

GOOD = [
    {"question": "Tom has 2 apples and buys 3 more. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
    {"question": "Sue has 10 pens and loses 4. How many?", "answer": "10 - 4 = <<10-4=6>>6\n#### 6"},
    {"question": "A box holds 4 eggs. How many in 3 boxes?", "answer": "4 * 3 = <<4*3=12>>12\n#### 12"},
]


def write_gsm8k(root: Path, lines: list[str], name: str = "train.jsonl") -> Path:
    path = root / "gsm8k" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_good_rows_load_and_format(tmp_path: Path) -> None:
    write_gsm8k(tmp_path, [json.dumps(r) for r in GOOD])
    rows = load_rows("gsm8k", "train", data_root=tmp_path)
    assert len(rows) == 3 and rows.counts == {"rows_read": 3, "kept": 3}
    assert get_task("gsm8k").format_example(rows[0]) == (GOOD[0]["question"], "2 + 3 = 5\n#### 5")
    assert len(load_rows("gsm8k", "train", data_root=tmp_path, limit=2)) == 2
    summary = rows.summary()
    assert summary["n_rows"] == 3 and str(tmp_path) in summary["origins"][0]
    json.dumps(summary)


def test_bad_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD[0]),
        "{not json",
        "",
        json.dumps(GOOD[1]),
        "[1, 2, 3]",  # valid JSON but not an object
        json.dumps({"question": "only a question"}),  # missing field after the first row
        json.dumps({"question": "empty answer", "answer": "   "}),  # cannot be formatted
        json.dumps(GOOD[2]),
        '{"question": "torn last li',
    ]
    write_gsm8k(tmp_path, lines)
    rows = load_rows("gsm8k", "train", data_root=tmp_path)
    assert [r["question"] for r in rows] == [r["question"] for r in GOOD]
    assert rows.counts == {
        "rows_read": 8,
        "bad_json": 3,
        "missing_field": 1,
        "unformattable": 1,
        "kept": 3,
    }


def test_eval_rows_without_gold_are_counted(tmp_path: Path) -> None:
    no_gold = {"question": "Q?", "answer": "no final answer line"}
    write_gsm8k(tmp_path, [json.dumps(GOOD[0]), json.dumps(no_gold)], name="test.jsonl")
    rows = load_rows("gsm8k", "eval", data_root=tmp_path)
    assert len(rows) == 1 and rows.counts["unformattable"] == 1


def test_missing_field_names_file_and_field(tmp_path: Path) -> None:
    path = write_gsm8k(tmp_path, [json.dumps({"question": "Q", "solution": "S"}), json.dumps(GOOD[0])])
    with pytest.raises(DataError, match="missing field 'answer'") as err:
        load_rows("gsm8k", "train", data_root=tmp_path)
    assert str(path) in str(err.value)


def test_empty_file(tmp_path: Path) -> None:
    path = write_gsm8k(tmp_path, [])
    with pytest.raises(DataError, match="file is empty") as err:
        load_rows("gsm8k", "train", data_root=tmp_path)
    assert str(path) in str(err.value)
    write_gsm8k(tmp_path, ["", "   "])
    with pytest.raises(DataError, match="file is empty"):
        load_rows("gsm8k", "train", data_root=tmp_path)


def test_no_usable_rows(tmp_path: Path) -> None:
    path = write_gsm8k(tmp_path, ["{bad", "also bad"])
    with pytest.raises(DataError, match="no usable rows.*bad_json=2") as err:
        load_rows("gsm8k", "train", data_root=tmp_path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found") as err:
        load_rows("gsm8k", "train", data_root=tmp_path)
    assert str(tmp_path / "gsm8k" / "train.jsonl") in str(err.value)


def test_parquet_is_read_when_jsonl_is_absent(tmp_path: Path) -> None:
    (tmp_path / "gsm8k").mkdir()
    pq.write_table(pa.Table.from_pylist(GOOD), tmp_path / "gsm8k" / "train.parquet")
    rows = load_rows("gsm8k", "train", data_root=tmp_path)
    assert len(rows) == 3 and rows.origins[0].endswith("train.parquet")
    assert get_task("gsm8k").local_available(tmp_path) is False  # the test split is still missing


def test_partition_membership_and_mixture_on_small_files(tmp_path: Path) -> None:
    # pubmedqa: split by the official test ids
    qa = tmp_path / "pubmed_qa" / "pqa_labeled"
    qa.mkdir(parents=True)
    rows = [
        {
            "pubid": i,
            "question": f"q{i}?",
            "context": {"contexts": [f"c{i}"]},
            "long_answer": "L",
            "final_decision": "yes",
        }
        for i in range(6)
    ]
    (qa / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (qa / "official_test_pubids.jsonl").write_text('{"pubid": 1}\n{"pubid": 4}\n')
    assert [r["pubid"] for r in load_rows("pubmedqa", "eval", data_root=tmp_path)] == [1, 4]
    train = load_rows("pubmedqa", "train", data_root=tmp_path)
    assert [r["pubid"] for r in train] == [0, 2, 3, 5] and train.counts["other_split"] == 2
    # safety: k safety rows + n_alpaca Alpaca rows, sampled and shuffled
    for rel, n in (("alpaca/train.jsonl", 8), ("safety/train/safety_only_data_Instructions.jsonl", 5)):
        path = tmp_path / rel
        path.parent.mkdir(parents=True)
        kind = rel.split("/")[0]
        path.write_text(
            "".join(
                json.dumps({"instruction": f"{kind} {i}", "input": "", "output": "ok"}) + "\n"
                for i in range(n)
            )
        )
    mixed = load_rows(get_task("safety", k=3, n_alpaca=20), "train", data_root=tmp_path)
    kinds = [r["instruction"].split()[0] for r in mixed]
    assert kinds.count("safety") == 3 and kinds.count("alpaca") == 8
    assert any("only 8 usable rows" in note for note in mixed.notes)
    again = load_rows(get_task("safety", k=3, n_alpaca=20), "train", data_root=tmp_path)
    assert again.rows == mixed.rows
