"""Hostile input (issue #30): no name or file a user gives may write outside its place or delete the user's files,
caches and run folders verify themselves before they are reused, and every bad input is one line (exit 2).

Each test proves one numbered defect of the issue through the real CLI (or the function the CLI calls) and records
what it saw; `PLASTICITY_WRITE_DOCS=1 pytest tests/reliability/test_hostile_inputs.py` rewrites the table in
docs/reliability.md and `test_docs_table_lists_every_defect` fails when a defect has no row.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli, tiny_overrides
from tests.reliability.test_bad_inputs import GOOD_ROW, assert_one_line_exit_2, snapshot, write_jsonl

DATA = {"data.source": "packaged:bbc_news", "tokenizer.train_documents": 150, "train.max_steps": 4}

# defect number -> (what went wrong, what is guaranteed now); the docs table is generated from these and the tests
DEFECTS: dict[int, tuple[str, str]] = {
    1: ("a custom task named `../summary` or `/abs/path` wrote outside the evaluation folder",
        "names of tasks (YAML and registered), studies and checkpoint entries are single path components: `/`, "
        "`\\`, `.`, `..`, NUL/control characters, a leading `-`/`~` are refused (`plasticity.names`)"),
    2: ("`out_dir` = a non-empty folder that is not a run: pretraining deleted and appended to the user's files",
        "a run folder holds `.plasticity-run`; a non-empty folder without it (nor the `config.yaml` + `.lock` of an "
        "older run) is refused before anything is written"),
    3: ("study `name: \"..\"` wrote study.json, .lock and results.csv into the parent folder",
        "the study name is validated like every other name (one line, nothing written)"),
    4: ("`report --export` trusted node ids read from study.json (`../../x/payload` wrote outside)",
        "node ids read back from study.json must be `<kind>-<hash>` (`plasticity.names.check_node_id`)"),
}


# ------------------------------------------------------------------------------------------- helpers


def task_file(tmp: Path, name: str, rows: Path | None = None) -> Path:
    rows = rows or write_jsonl(tmp / "rows.jsonl", [GOOD_ROW] * 8)
    spec = tmp / "task.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "family": "cot", "answer_type": "numeric",
                                    "data": {"train": str(rows), "eval": str(rows)}, "question_template": "{q}",
                                    "response_template": "{a}", "gold_field": "a"}))
    return spec


def study_file(tmp: Path, body: dict, name: str = "s") -> Path:
    spec = tmp / "study.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "out_dir": str(tmp / "study_runs"), **body}))
    return spec


# ------------------------------------------------------------------------------------------- 1-4: writes outside


@pytest.mark.parametrize("name", ["../summary", "/abs/path", ".", "a\x00b", "x/../../y"])
def test_01_task_name_is_never_a_path(name: str, tiny_run: Path, tmp_path: Path, request) -> None:
    spec = task_file(tmp_path, name)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = snapshot(tmp_path)
    r = run_cli("evaluate", str(run), "--task", str(spec), "--out", str(run / "eval"), "--max-questions", "2")
    line = assert_one_line_exit_2(r, str(spec), "key 'name'")
    assert snapshot(tmp_path) == before and not (run / "eval").exists()
    assert not Path("/abs/path.json").exists()
    record(request, 1, f"`evaluate --task task.yaml` (name {name!r})", line, tmp_path)


def test_01_registered_task_name_is_never_a_path() -> None:
    from plasticity.errors import UserError
    from plasticity.tasks.registry import get_task, register_task

    task = get_task("demo_arith")
    task.name = "../evil"
    with pytest.raises(UserError, match="task name"):
        register_task(task)


def test_02_foreign_out_dir_is_never_written(tmp_path: Path, request) -> None:
    out = tmp_path / "mine"
    (out / "final").mkdir(parents=True)
    (out / "final" / "important.txt").write_text("thesis draft")
    (out / "checkpoints" / "step_0000002").mkdir(parents=True)
    (out / "checkpoints" / "step_0000002" / "notes.txt").write_text("notes")
    (out / "metrics.jsonl").write_text('{"mine": 1}\n')
    before = snapshot(tmp_path)
    r = run_cli("pretrain", *tiny_overrides(out, **DATA))
    line = assert_one_line_exit_2(r, str(out), "not a plasticity run")
    assert snapshot(tmp_path) == before and sorted(p.name for p in out.iterdir()) == ["checkpoints", "final",
                                                                                      "metrics.jsonl"]
    r = run_cli("finetune", f"init_from={tmp_path}", f"out_dir={out}", "task=demo_arith")
    assert_one_line_exit_2(r, str(out), "not a plasticity run")
    assert snapshot(tmp_path) == before
    record(request, 2, "`pretrain out_dir=<folder with final/important.txt>` (and `finetune`)", line, tmp_path)


def test_02_runs_of_ours_stay_usable(tiny_run: Path, tmp_path: Path) -> None:
    """A run made now carries the marker; a run of an earlier version (no marker) still resumes; an empty
    folder is a fresh run."""
    assert (tiny_run / ".plasticity-run").is_file()
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    (old / ".plasticity-run").unlink()
    from plasticity.train.run import is_ours

    assert is_ours(old) and is_ours(tmp_path / "new") and is_ours(tmp_path / "old" / "final" / "nothing")
    (tmp_path / "empty").mkdir()
    assert is_ours(tmp_path / "empty") and not is_ours(tiny_run / "final")


def test_03_study_name_is_never_a_path(tmp_path: Path, request) -> None:
    (tmp_path / "results.csv").write_text("mine\n")
    spec = study_file(tmp_path, {"base": {"train": {"max_steps": 1}}}, name="..")
    before = snapshot(tmp_path)
    r = run_cli("study", str(spec))
    line = assert_one_line_exit_2(r, "name", "'..'")
    assert snapshot(tmp_path) == before and not (tmp_path / "study_runs").exists()
    record(request, 3, "`study study.yaml` with `name: \"..\"`", line, tmp_path)


def test_04_export_refuses_node_ids_that_are_paths(tmp_path: Path, request) -> None:
    root = tmp_path / "a" / "b" / "out"
    sdir = root / "s"
    sdir.mkdir(parents=True)
    (sdir / "results.csv").write_text("status\ncompleted\n")
    (sdir / "study.json").write_text(json.dumps({"format_version": 2, "name": "s", "nodes": ["../../../x/p"]}))
    payload = tmp_path / "a" / "x" / "p"
    payload.mkdir(parents=True)
    (payload / "summary.json").write_text("{}")
    dest = tmp_path / "d1" / "d2" / "exp"
    r = run_cli("report", str(sdir), "--export", str(dest))
    line = assert_one_line_exit_2(r, "study.json", "not a study node id")
    assert not (tmp_path / "d1" / "x").exists()
    record(request, 4, "`report STUDY --export DIR` with node `../../../x/p` in study.json", line, tmp_path)


# ------------------------------------------------------------------------------------------- docs/reliability.md

DOC = REPO / "docs" / "reliability.md"
START, END = "<!-- hostile-table:start -->", "<!-- hostile-table:end -->"
_ROWS: dict[int, list[tuple[str, str]]] = {}


def _anon(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "<tmp>").replace(str(REPO) + "/", "")


def record(request: pytest.FixtureRequest, n: int, what: str, line: str, tmp: Path) -> None:
    """Record the case of defect `n` a test tried and the one line (or outcome) it saw, for the docs table."""
    assert n in DEFECTS
    _ROWS.setdefault(n, [])
    entry = (what, _anon(line, tmp))
    if entry[0] not in [w for w, _ in _ROWS[n]] and len(_ROWS[n]) < 2:
        _ROWS[n].append(entry)


@pytest.fixture(scope="module", autouse=True)
def _write_docs_table():
    yield
    if os.environ.get("PLASTICITY_WRITE_DOCS") != "1" or not _ROWS:
        return
    text = DOC.read_text()
    old: dict[int, str] = {}
    if START in text:
        for row in text.split(START)[1].split(END)[0].splitlines()[2:]:
            num = row.strip("| ").split(" |", 1)[0]
            if num.isdigit():
                old[int(num)] = row
    rows = dict(old)
    for n, cases in _ROWS.items():
        broke, now = DEFECTS[n]
        seen = "; ".join(f"{w}: `{line}`" for w, line in cases).replace("|", "\\|")
        rows[n] = f"| {n} | {broke.replace('|', '/')} | {now.replace('|', '/')} | {seen} |"
    table = "\n".join(["| # | what went wrong | guaranteed now | case tried: what it gives |", "|---|---|---|---|",
                       *[rows[k] for k in sorted(rows) if k in DEFECTS]])
    head, rest = text.split(START) if START in text else (text.rstrip("\n") + "\n\n", END)
    DOC.write_text(f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}")


def test_docs_table_lists_every_defect() -> None:
    """Every defect this file proves has its row in docs/reliability.md."""
    text = DOC.read_text()
    assert START in text, "regenerate with PLASTICITY_WRITE_DOCS=1"
    block = text.split(START)[1].split(END)[0]
    missing = [n for n in DEFECTS if f"\n| {n} |" not in "\n" + block]
    assert not missing, f"regenerate with PLASTICITY_WRITE_DOCS=1: {missing}"
