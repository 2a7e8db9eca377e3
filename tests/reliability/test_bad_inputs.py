"""Bad input (issue #8): the real CLI answers bad data, task and tokenizer input with exit code 2 and exactly one
line on stderr naming the file or key, never a traceback, and leaves everything already written untouched.

Bad lines, decided once for pretraining JSONL (plasticity.data.sources) and task files
(plasticity.tasks.loading) alike: a line that is not UTF-8, not JSON, or lacks the (string) field is skipped and
counted; a pretraining file reports its count in one ``warning:`` line, a task in ``summary.json``
(``load_counts``). A file with no usable line, an empty or missing file, or a first line without the field (the
wrong ``data.text_field`` most likely) is the one-line error. A .txt file must be UTF-8 as a whole.

Not repeated here: config keys (tests/test_config.py: table + fuzz), tampered / truncated / foreign
checkpoints and a failed checkpoint write (tests/test_bad_checkpoints.py), row counting of the task
loader (tests/tasks/test_task_loading.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, bigger_tokenizer_checkpoint, run_cli, tiny_overrides

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


def assert_one_line_exit_2(r: subprocess.CompletedProcess, *needles: str, progress: bool = False) -> str:
    """Exit 2 and one stderr line (`progress`: after the progress lines of work done before the refusal)."""
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, r.stderr[-3000:]
    if progress:
        lines = [x for x in lines if x.startswith("error") or "Traceback" in x or "Error" in x] or lines[-1:]
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
def test_pretrain_bad_input(case: str, existing: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = tmp_path / "run"
    shutil.copytree(existing, run)
    overrides, needles = PRETRAIN_CASES[case](tmp_path, existing)
    before = snapshot(tmp_path)
    r = run_cli("pretrain", *tiny_overrides(run, **dict(DATA, **overrides)), "--resume")
    line = assert_one_line_exit_2(r, *needles)
    assert snapshot(tmp_path) == before  # the completed run and the input files are untouched
    record_line(request, case, Bad(["pretrain", "--resume", *[f"{k}={v}" for k, v in overrides.items()]], needles,
                                   intact="the run being resumed and the input files (byte-identical)"),
                line, tmp_path, existing)


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
    d = bigger_tokenizer_checkpoint(existing, tmp / "ckpt")
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
def test_finetune_bad_input(case: str, existing: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    overrides, needles = FINETUNE_CASES[case](tmp_path, existing)
    out = tmp_path / "ft"
    before = snapshot(existing, tmp_path)
    args = {"init_from": str(existing), "out_dir": str(out), "task": "demo_arith", "train.max_steps": 1,
            "train.threads": 1, **overrides}
    r = run_cli("finetune", *[f"{k}={v}" for k, v in args.items()])
    line = assert_one_line_exit_2(r, *needles)
    assert snapshot(existing, tmp_path) == before and not out.exists()
    record_line(request, case, Bad(["finetune", *[f"{k}={v}" for k, v in overrides.items()]], needles,
                                   intact="the checkpoint and the input files; the fine-tuning out_dir is not "
                                   "created"), line, tmp_path, existing)


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


# ------------------------------------------------------------------------------------------- any command (issue 15)
# Each row builds its input under tmp and returns a `Bad`: the command line, what its one stderr line must contain,
# the fresh output path that must not appear, and (for the docs table) what is guaranteed to be left intact. Every
# file under tmp and in the completed run is compared before and after (sha256).


@dataclass
class Bad:
    argv: list[str]
    needles: tuple[str, ...]
    absent: Path | None = None  # a fresh output path the refused command must not create
    max_s: float | None = None  # refused within this many seconds (the OOM cases: nothing allocated)
    max_rss_mb: int | None = None  # peak memory of the refused process
    progress: bool = False  # progress lines (tokenizer training) may come before the error line
    intact: str = "the files under its out_dir and its inputs (byte-identical); a fresh out_dir is not created"


# The out-of-memory cases are refused before anything is allocated: the process's peak RSS stays below MAX_RSS_MB
# (importing torch + transformers is ~0.5 GB) and its wall time below MAX_S, process start included (importing
# torch is ~2.5 s of it; measured 3.5-5 s on 2 AMD EPYC cores shared with other jobs, 10 s when 4 test suites
# ran at once: the bound leaves room for a loaded CI machine, the RSS bound is the real proof).
MAX_S = float(os.environ.get("PLASTICITY_OOM_REFUSAL_S", "30"))
MAX_RSS_MB = 1500


def _pretrain(t: Path, *needles: str, max_s: float | None = None, max_rss_mb: int | None = None, **over) -> Bad:
    out = Path(over.pop("out_dir", t / "run"))
    return Bad(["pretrain", *tiny_overrides(out, **dict(DATA, **over))], needles, t / "run", max_s, max_rss_mb)


def _study(t: Path, body: dict, *needles: str, dry: bool = True) -> Bad:
    spec = t / "study.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "out_dir": str(t / "study_runs"), **body}))
    return Bad(["study", str(spec), *(["--dry-run"] if dry else [])], needles, t / "study_runs",
               intact="the study directory (nothing is created or written)")


def _immutable_dir(t: Path) -> Path:
    d = make_dir(t / "ro")
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported here (needs ext4-like FS and root): cannot make an unwritable dir")
    return d


def _small_corpus(t: Path) -> Path:
    from plasticity.data.sources import bbc_news_articles

    docs = [{"text": txt} for _, _, txt in bbc_news_articles()[:40]] + [{"text": "tiny."}]
    return write_jsonl(t / "small.jsonl", docs)


def _truncated_run(t: Path, e: Path) -> Bad:
    run = t / "run"
    shutil.copytree(e, run)
    w = run / "final" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    return Bad(["analyze", str(run)], (str(run / "final"), "truncated"), run / "analysis",
               intact="the run (byte-identical); no analysis/ directory is written")


def _gpt2_dir(t: Path, e: Path) -> Bad:
    from transformers import GPT2Config, GPT2LMHeadModel

    d = t / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=300, n_positions=64)).save_pretrained(d)
    return Bad(["analyze", str(d)], (str(d), "'gpt2' is not Llama, OLMo-2, Mistral, Qwen2, Qwen3 or GPT-NeoX"),
               d / "analysis",
               intact="the checkpoint directory; no analysis/ directory is written")


def _cloze_string_choices(t: Path, e: Path) -> Bad:
    rows = write_jsonl(t / "rows.jsonl", [{"ctx": f"{i} is", "opts": "even odd", "label": i % 2} for i in range(8)])
    spec = t / "cloze.yaml"
    spec.write_text(yaml.safe_dump({"name": "parity", "family": "cloze", "data": {"train": str(rows),
                                    "eval": str(rows)}, "context_template": "{ctx}", "choices_field": "opts",
                                    "gold_field": "label"}))
    return _finetune(t, e, (str(rows), "no usable rows"), task=str(spec))


def _finetune(t: Path, e: Path, needles: tuple[str, ...], max_s: float | None = None, max_rss_mb: int | None = None,
              **over) -> Bad:
    args = {"init_from": str(e), "out_dir": str(t / "ft"), "task": "demo_arith", "train.max_steps": 1,
            "train.threads": 1, **over}
    return Bad(["finetune", *[f"{k}={v}" for k, v in args.items()]], needles, t / "ft", max_s, max_rss_mb)


def _bad_task_yaml(t: Path, e: Path) -> Bad:
    spec = write_bytes(t / "task.yaml", b"name: parity\nfamily: [cot\n")
    return _finetune(t, e, (str(spec), "malformed YAML at line"), task=str(spec))


NOTHING = "everything: nothing is written"
# `python -c _MEASURED RSS_FILE ARGS...`: the CLI, writing its peak RSS (kB) to RSS_FILE at exit
_MEASURED = ("import atexit, resource, runpy, sys; f = sys.argv.pop(1); atexit.register(lambda: open(f, 'w').write("
             "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))); sys.argv[0] = 'plasticity'; "
             "runpy.run_module('plasticity.cli', run_name='__main__')")
CLI_CASES: dict[str, Callable[[Path, Path], Bad]] = {
    "lr_inf": lambda t, e: _pretrain(t, "optim.lr", "finite", **{"optim.lr": ".inf"}),
    "lr_1e400": lambda t, e: _pretrain(t, "optim.lr", "finite", **{"optim.lr": "1e400"}),
    "weight_decay_inf": lambda t, e: _pretrain(t, "optim.weight_decay", "finite", **{"optim.weight_decay": ".inf"}),
    "tpp_inf": lambda t, e: _pretrain(t, "train.tpp", "finite", **{"train.tpp": ".inf", "train.max_steps": "null"}),
    "micro_batch_oom": lambda t, e: Bad(
        ["pretrain", str(REPO / "configs" / "pretrain-tiny.yaml"), "train.micro_batch_size=100000000",
         "train.max_steps=1", f"out_dir={t / 'run'}"],
        ("train.micro_batch_size", "exceeds the available", "allow_large_memory"), t / "run", max_s=MAX_S,
        max_rss_mb=MAX_RSS_MB),
    "hidden_size_huge": lambda t, e: _pretrain(t, "model.", "exceeds the available", max_s=MAX_S, max_rss_mb=MAX_RSS_MB,
                                               **{"model.hidden_size": 10000000}),
    "validation_set_too_small": lambda t, e: replace(_pretrain(
        t, "validation split too small", "data.val_fraction", **{"data.source": str(_small_corpus(t)),
                                                                  "data.val_fraction": 0.02, "data.seq_len": 64}),
        progress=True),
    "out_dir_is_a_file": lambda t, e: _pretrain(t, "out_dir", "exists and is not a directory",
                                                out_dir=write_bytes(t / "file", b"x")),
    "out_dir_under_a_file": lambda t, e: _pretrain(t, "out_dir", "is a file",
                                                   out_dir=write_bytes(t / "file", b"x") / "run"),
    "out_dir_immutable": lambda t, e: _pretrain(t, "out_dir", "not writable", out_dir=_immutable_dir(t) / "run"),
    "config_is_a_directory": lambda t, e: Bad(["pretrain", str(make_dir(t / "cfg"))], (str(t / "cfg"),
                                              "is a directory"), intact=NOTHING),
    "status_dir_is_not_a_study": lambda t, e: Bad(["status", str(make_dir(t / "cfg"))], (str(t / "cfg"),
                                                  "not a study directory"), intact=NOTHING),
    "study_axis_inf": lambda t, e: _study(t, {"axes": {"optim.weight_decay": [0.1, float("inf")]}},
                                          "axes.optim.weight_decay", "finite"),
    "study_axis_duplicate_numbers": lambda t, e: _study(t, {"axes": {"optim.weight_decay": [0, 0.0, 1]}},
                                                        "axes.optim.weight_decay", "repeated values 0 and 0.0"),
    "study_axis_duplicate_string": lambda t, e: _study(t, {"axes": {"optim.weight_decay": [0.1, "0.1"]}},
                                                       "axes.optim.weight_decay", "repeated values"),
    "study_dry_run_oom": lambda t, e: _study(t, {"base": {"train": {"micro_batch_size": 100000000}}},
                                             "base", "train.micro_batch_size", "exceeds the available"),
    "study_out_dir_is_a_file": lambda t, e: _study(t, {"out_dir": str(write_bytes(t / "file", b"x"))},
                                                   "out_dir", "is a file", dry=False),
    "evaluate_out_is_a_file": lambda t, e: Bad(
        ["evaluate", str(e / "final"), "--task", "demo_arith", "--out", str(write_bytes(t / "file", b"x"))],
        ("--out", "exists and is not a directory"), max_s=20.0, intact="the checkpoint and the file; checked "
        "before the model loads or anything is generated"),
    "analyze_truncated_weights": _truncated_run,
    "analyze_gpt2_checkpoint": _gpt2_dir,
    "finetune_malformed_task_yaml": _bad_task_yaml,
    "finetune_cloze_choices_string": _cloze_string_choices,
    "finetune_micro_batch_oom": lambda t, e: _finetune(t, e, ("train.micro_batch_size", "exceeds the available"),
                                                       max_s=MAX_S, max_rss_mb=MAX_RSS_MB,
                                                       **{"train.micro_batch_size": 100000000}),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input(case: str, existing: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    request.addfinalizer(lambda: subprocess.run(["chattr", "-R", "-i", str(tmp_path)], capture_output=True))
    bad = CLI_CASES[case](tmp_path, existing)
    before = snapshot(existing, tmp_path)
    rss = tmp_path.parent / f"{tmp_path.name}.maxrss"  # outside tmp_path: not part of the snapshot
    t0 = time.perf_counter()
    r = (subprocess.run([sys.executable, "-c", _MEASURED, str(rss), *bad.argv], capture_output=True, text=True,
                        timeout=600) if bad.max_rss_mb else run_cli(*bad.argv))
    took = time.perf_counter() - t0
    line = assert_one_line_exit_2(r, *bad.needles, progress=bad.progress)
    assert snapshot(existing, tmp_path) == before
    assert bad.absent is None or not bad.absent.exists(), sorted(bad.absent.rglob("*"))
    assert bad.max_s is None or took < bad.max_s, f"refused after {took:.1f}s"
    if bad.max_rss_mb:
        peak_mb = int(rss.read_text()) / 1024
        print(f"{case}: refused in {took:.1f}s, peak RSS {peak_mb:.0f} MB")
        assert peak_mb < bad.max_rss_mb, f"peak RSS {peak_mb:.0f} MB: something was allocated"
    record_line(request, case, bad, line, tmp_path, existing)


# ------------------------------------------------------------------------------------------- docs/reliability.md
# The table of bad inputs in docs/reliability.md is generated from these cases: every run above records its actual
# stderr line; `PLASTICITY_WRITE_DOCS=1 pytest tests/reliability/test_bad_inputs.py` rewrites the table.

DOC = REPO / "docs" / "reliability.md"
START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"
_LINES: dict[str, tuple[str, str, str]] = {}
ALL_CASES = {**{f"pretrain:{k}": k for k in PRETRAIN_CASES}, **{f"finetune:{k}": k for k in FINETUNE_CASES},
             **{f"cli:{k}": k for k in CLI_CASES}}


def _anon(text: str, tmp: Path, existing: Path) -> str:
    return text.replace(str(existing), "<run>").replace(str(tmp), "<tmp>").replace(str(REPO) + "/", "")


def record_line(request: pytest.FixtureRequest, case: str, bad: Bad, line: str, tmp: Path, existing: Path) -> None:
    group = request.node.originalname.removeprefix("test_").split("_")[0]
    common = set(tiny_overrides(Path("/"), **DATA)[1:])  # the tiny-run overrides every pretrain row shares
    cmd = "plasticity " + " ".join(a for a in bad.argv if a not in common)
    _LINES[f"{group}:{case}"] = (_anon(cmd, tmp, existing), _anon(line, tmp, existing), bad.intact)


@pytest.fixture(scope="module", autouse=True)
def _write_docs_table():
    yield
    if os.environ.get("PLASTICITY_WRITE_DOCS") == "1" and _LINES:
        text = DOC.read_text()
        old = {}
        if START in text:
            for row in text.split(START)[1].split(END)[0].splitlines()[2:]:
                cells = [c.strip() for c in row.strip("|").split(" | ")]
                if len(cells) == 4:
                    old[cells[0].strip("`")] = row
        rows = dict(old)
        for key, (cmd, line, intact) in _LINES.items():
            esc = [x.replace("|", "\\|") for x in (cmd, line, intact)]
            rows[key] = f"| `{key}` | `{esc[0]}` | `{esc[1]}` | {esc[2]} |"
        header = "| case | command (tiny-run overrides left out) | stderr, exit code 2 | left intact |"
        table = "\n".join([header, "|---|---|---|---|",
                           *[rows[k] for k in ALL_CASES if k in rows]])
        head, rest = text.split(START) if START in text else (text + "\n", END)
        DOC.write_text(f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}")


def test_docs_table_lists_every_case() -> None:
    """Every bad-input case has its row (message, exit code, what is left intact) in docs/reliability.md."""
    block = DOC.read_text().split(START)[1].split(END)[0]
    missing = [k for k in ALL_CASES if f"| `{k}` |" not in block]
    assert not missing, f"regenerate with PLASTICITY_WRITE_DOCS=1: {missing}"
