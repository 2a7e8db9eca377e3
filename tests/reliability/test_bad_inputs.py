"""Bad input (issue #8): the real CLI answers bad data, task and tokenizer input with exit code 2 and exactly one
line on stderr naming the file or key, never a traceback, and leaves everything already written untouched.

Bad lines, decided once for pretraining JSONL (plasticity.data.sources) and task files
(plasticity.tasks.loading) alike: a line that is not UTF-8, not JSON, or lacks the (string) field is skipped and
counted; a pretraining file reports its count in one ``warning:`` line, a task in ``summary.json``
(``load_counts``). A file with no usable line, an empty or missing file, or a first line without the field (the
wrong ``data.text_field`` most likely) is the one-line error. A .txt file must be UTF-8 as a whole.

Not repeated here: config keys (tests/foundation/test_config.py: table + fuzz), tampered / truncated / foreign
checkpoints and a failed checkpoint write (tests/foundation/test_bad_checkpoints.py), row counting of the task
loader (tests/tasks/test_task_loading.py).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli, tiny_overrides

DATA = {"data.source": "packaged:bbc_news", "tokenizer.train_documents": 150, "train.max_steps": 4}
GOOD_ROW = {"q": "What is 2 plus 3?", "a": "2 + 3 = 5\n#### 5"}


# ------------------------------------------------------------------------------------------- helpers


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file (hidden ones too) under `roots`: what must not change."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def assert_one_line_exit_2(r: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


def write_jsonl(path: Path, rows: list) -> Path:
    """One line per row: a dict as JSON, a str or bytes as is (to write broken lines)."""
    raw = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in rows]
    path.write_bytes(b"".join(x + b"\n" for x in raw))
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_dir(path: Path) -> Path:
    path.mkdir()
    return path


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def random_bytes(path: Path, n: int = 4096) -> Path:
    path.write_bytes(random.Random(8).randbytes(n))
    return path


def task_yaml(tmp: Path, train: Path) -> Path:
    spec = tmp / "task.yaml"
    spec.write_text(yaml.safe_dump({"name": "bad_rows", "family": "cot", "answer_type": "numeric",
                                    "data": {"train": str(train), "eval": str(train)}, "question_template": "{q}",
                                    "response_template": "{a}", "gold_field": "a"}))
    return spec


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed tiny pretraining run (on the packaged offline data) that bad input must never touch."""
    out = tmp_path_factory.mktemp("existing") / "run"
    r = run_cli("pretrain", *tiny_overrides(out, **DATA))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


# ------------------------------------------------------------------------------------------- pretraining table
# Each case makes its input under tmp and returns (overrides, needles). The command resumes a copy of a
# completed run with the bad input: the copy must stay byte-identical.

Case = Callable[[Path, Path], tuple[dict, tuple[str, ...]]]


def _source(path: Path, *needles: str) -> tuple[dict, tuple[str, ...]]:
    return {"data.source": str(path)}, (str(path), *needles)


PRETRAIN_CASES: dict[str, Case] = {
    "missing_file": lambda t, e: _source(t / "missing.jsonl", "not found"),
    "empty_file": lambda t, e: _source(write_jsonl(t / "empty.jsonl", []), "empty"),
    "all_lines_bad": lambda t, e: _source(write_jsonl(t / "bad.jsonl", ["{oops", "[1, 2]", '{"text": 3}']),
                                          "no usable lines", "1 not JSON"),
    "not_utf8_jsonl": lambda t, e: _source(write_jsonl(t / "latin1.jsonl", [b'{"text": "caf\xe9"}']),
                                           "no usable lines", "not UTF-8"),
    "corrupt_parquet": lambda t, e: _source(random_bytes(t / "x.parquet"), "cannot read parquet"),
    "text_field_missing_jsonl": lambda t, e: _source(write_jsonl(t / "nofield.jsonl", [{"body": "a b c"}] * 3),
                                                     "missing field 'text'", "body"),
    "text_column_missing_parquet": lambda t, e: _source(write_parquet(t / "nocol.parquet", {"body": ["a b"] * 3}),
                                                        "no column 'text'"),
    "directory_without_data": lambda t, e: _source(make_dir(t / "data.jsonl"), "no .txt/.jsonl/.parquet"),
    "not_utf8_txt": lambda t, e: _source(write_bytes(t / "latin1.txt", b"caf\xe9 au lait\n"), "not UTF-8"),
    "unsupported_file_type": lambda t, e: _source(write_bytes(t / "data.csv", b"text\nhello\n"), "'.csv'"),
    "vocab_smaller_than_tokenizer": lambda t, e: ({"model.vocab_size": 256}, ("model.vocab_size", "vocab mismatch")),
    "tokenizer_dir_missing": lambda t, e: ({"tokenizer.name": str(t / "no_tok")}, ("tokenizer.name", "no_tok")),
}


@pytest.mark.parametrize("case", list(PRETRAIN_CASES))
def test_pretrain_bad_input(case: str, existing: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(existing, run)
    overrides, needles = PRETRAIN_CASES[case](tmp_path, existing)
    before = snapshot(tmp_path)
    r = run_cli("pretrain", *tiny_overrides(run, **dict(DATA, **overrides)), "--resume")
    assert_one_line_exit_2(r, *needles)
    assert snapshot(tmp_path) == before  # the completed run and the input files are untouched


def test_pretrain_init_from_smaller_vocabulary(existing: Path, tmp_path: Path) -> None:
    """A model to continue from whose embedding table is smaller than the tokenizer: one line, not an IndexError
    in the first step. (A fresh run: with --resume the changed config would be refused first.)"""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path / "vocab256"
    LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(d)
    before = snapshot(d)
    r = run_cli("pretrain", *tiny_overrides(tmp_path / "run", **dict(DATA, **{"model.init_from": str(d)})))
    assert_one_line_exit_2(r, "model.init_from", str(d), "vocab mismatch")
    assert snapshot(d) == before


# ------------------------------------------------------------------------------------------- fine-tuning table
# Fine-tuning starts a fresh run: a bad input must not leave a half-made run directory behind.


def _bigger_tokenizer(tmp: Path, existing: Path) -> tuple[dict, tuple[str, ...]]:
    from transformers import AutoTokenizer

    d = tmp / "ckpt"
    shutil.copytree(existing / "final", d)
    (d / "manifest.json").unlink()  # a plain HF directory: no manifest to contradict the new tokenizer
    tok = AutoTokenizer.from_pretrained(d)
    tok.add_tokens([f"<extra_{i}>" for i in range(600)])
    tok.save_pretrained(d)
    return {"init_from": str(d)}, (str(d), "vocab mismatch")


def _task(train: Path, *needles: str) -> tuple[dict, tuple[str, ...]]:
    return {"task": str(task_yaml(train.parent, train))}, (str(train), *needles)


FINETUNE_CASES: dict[str, Case] = {
    "tokenizer_bigger_than_model": _bigger_tokenizer,
    "task_rows_all_bad": lambda t, e: _task(write_jsonl(t / "rows.jsonl", ["{oops", "[1]", "nope"]),
                                            "no usable rows", "bad_json=3"),
    "task_first_row_missing_field": lambda t, e: _task(write_jsonl(t / "rows.jsonl", [{"q": "Q?"}, GOOD_ROW]),
                                                       "missing field 'a'"),
    "task_rows_not_utf8": lambda t, e: _task(write_jsonl(t / "rows.jsonl", [b'{"q": "caf\xe9?", "a": "#### 1"}']),
                                             "no usable rows", "bad_json=1"),
    "task_file_is_directory": lambda t, e: _task(make_dir(t / "rows.jsonl"), "is a directory"),
    "task_corrupt_parquet": lambda t, e: _task(random_bytes(t / "rows.parquet"), "cannot read parquet"),
    "task_empty_file": lambda t, e: _task(write_jsonl(t / "rows.jsonl", []), "empty"),
}


@pytest.mark.parametrize("case", list(FINETUNE_CASES))
def test_finetune_bad_input(case: str, existing: Path, tmp_path: Path) -> None:
    overrides, needles = FINETUNE_CASES[case](tmp_path, existing)
    out = tmp_path / "ft"
    before = snapshot(existing, tmp_path)
    args = {"init_from": str(existing), "out_dir": str(out), "task": "demo_arith", "train.max_steps": 1,
            "train.threads": 1, **overrides}
    r = run_cli("finetune", *[f"{k}={v}" for k, v in args.items()])
    assert_one_line_exit_2(r, *needles)
    assert snapshot(existing, tmp_path) == before and not out.exists()


# ------------------------------------------------------------------------------------------- mostly good input


def test_pretrain_skips_bad_lines_with_one_warning(tmp_path: Path) -> None:
    from plasticity.data.sources import bbc_news_articles

    docs = [{"text": t} for _, _, t in bbc_news_articles()[:60]]
    data = write_jsonl(tmp_path / "mixed.jsonl", docs[:20] + ["{torn", b'{"text": "\xff"}'] + docs[20:]
                       + [{"title": "no text"}, {"text": None}])
    r = run_cli("pretrain", *tiny_overrides(tmp_path / "run", **{"data.source": str(data), "train.max_steps": 2,
                                                                 "tokenizer.vocab_size": 300}))
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [x for x in r.stderr.splitlines() if x.startswith("warning:") and "skipped" in x]
    assert warnings == [f"warning: {data}: skipped 4 bad lines (1 not UTF-8, 1 not JSON, 2 without a string "
                        "'text'); 60 documents read"], r.stderr


def test_finetune_skips_bad_rows_and_counts_them(existing: Path, tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW] * 8 + ["{torn", "[1, 2]", {"q": "no answer"}])
    out = tmp_path / "ft"
    r = run_cli("finetune", f"init_from={existing}", f"out_dir={out}", f"task={task_yaml(tmp_path, rows)}",
                "train.max_steps=1", "train.threads=1")
    assert r.returncode == 0, r.stderr[-3000:]
    counts = json.loads((out / "summary.json").read_text())["load_counts"]
    assert counts == {"rows_read": 11, "bad_json": 2, "missing_field": 1, "kept": 8}
