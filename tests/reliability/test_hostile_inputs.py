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
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, bigger_tokenizer_checkpoint, run_cli, tiny_overrides
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
    5: ("a custom task file or its JSONL edited between runs: the study reused the old fine-tunes as cached",
        "a YAML task's fine-tuning node id hashes the bytes of the YAML and of every local data file it reads "
        "(only custom-task nodes changed id; built-in task ids are unchanged: golden-id test)"),
    6: ("`axes: {seed: [...], train.seed: [...]}` accepted: rows labelled seed=1 pointed at seed=0's runs",
        "two axis keys that are one config key (`seed`/`train.seed`, `task`/`finetune.task`, `x`/`pretrain.x`) "
        "are refused"),
    7: ("a custom task named like a built-in beside it: one set of result columns was lost",
        "two tasks of one study with one name are refused at plan time"),
    8: ("a truncated token-cache `train.bin` (meta.json intact) trained on 480 of 134,970 tokens",
        "token caches verify `meta.json` (parses, fields), each `.bin` size against it and every token id against "
        "the tokenizer before use; no run folder is made"),
    9: ("a corrupt `summary.json` of a finished study node: 'cached' and a `completed` row with empty numbers",
        "a training node is done only while its summary parses and says completed (evaluate/analyze: their "
        "JSON outputs parse); otherwise it runs again and fails with the reason"),
    10: ("task rows whose fields are null, lists, dicts or ints were trained as the text 'None', \"['x']\"",
         "template fields must hold text (a gold template: text or a number); other rows are skipped and counted "
         "as `unformattable`"),
    11: ("`finetune_from: [1.0e-9]` fine-tuned from step 1 and labelled it 1e-09",
         "a fraction must name a snapshot between step 1 and the final model (plan time and run time)"),
    12: ("`config.json` claims 6 layers, the weights hold 4: evaluate/finetune ran with 2 random layers",
         "missing, unexpected or reshaped weights are refused (`load_model_checked`)"),
    13: ("a run's checkpoint without `manifest.json` was loaded unverified; `--resume` silently restarted at step 0",
         "a checkpoint of a run (`final/`, `checkpoints/step_N`) needs its manifest; resume names every "
         "checkpoint it skips and says when it starts from step 0"),
    14: ("`summary.json` completed but `final/` gone: `--resume` said 'already completed', `analyze` 'resume it'",
         "one state: a run without a usable `final/` is not completed; `--resume` trains again from the newest "
         "checkpoint and says so; analyze/finetune name the command"),
    15: ("a study pool worker SIGKILLed (as the OOM killer would): the study hung, `status` said pending",
         "each local worker writes `nodes/<id>.pid`; a worker that dies fails its node with the reason (marker "
         "written), its dependents are skipped and the study goes on and ends"),
    16: ("a 10^6-point grid: `--dry-run` ran > 300 s with memory climbing",
         "a grid of more than 5,000 points (`plasticity.study.spec.MAX_GRID_POINTS`) is refused before it is expanded"),
    17: ("a 1 KB YAML alias bomb reached 3.5 GB in 120 s",
         "every YAML read (configs, overrides, studies, task files, a run's config) refuses aliases that expand to "
         "more than 100,000 values (`plasticity.files.load_yaml`), before anything is built"),
    18: ("`demo_arith` with `n_train=10^9` ran silently for 300 s; `evaluate --k 10^9` reached 11 GB, "
         "`--max-new-tokens 10^9` tried to allocate 256 GB",
         "generated task splits and every `generate` call are estimated (rows; KV cache, logits, kept samples) "
         "against the available memory and refused before allocating; a generator whose pool is exhausted stops"),
    19: ("one 23.7 MB document reached 5.4 GB of RSS while preparing data (227x the file)",
         "data preparation tokenizes a document longer than 1M characters in pieces cut at safe points (the same "
         "tokens as whole) and holds a bounded window of documents (issue 25's streamed, sharded token cache)"),
    20: ("a tokenizer larger than the model's vocabulary: `evaluate` (CoT, cloze) and `analyze` raised IndexError",
         "`evaluate`, the stability cloze sets and `analyze` check the vocabulary like fine-tuning does, before "
         "anything is written"),
    21: ("a corrupt `summary.json` on `pretrain --resume` and `analyze` (after it wrote norms.json); a garbage line "
         "mid `metrics.jsonl` on `--resume`: tracebacks",
         "an artifact that does not parse is one line naming it (`io.read_json`); analyze checks before writing; "
         "unreadable metric lines are dropped on resume with one warning"),
    22: ("output paths under `/proc`, through a symlink loop, or an unusable `PLASTICITY_CACHE`: tracebacks",
         "output folders are probed by making (and removing) a folder in the nearest existing parent; broken "
         "symlinks and loops are named; the cache folder is checked like `out_dir`"),
    23: ("`report --headline ... --out STUDY_DIR`: SameFileError; `--out STUDY/report` overwrote the study's report",
         "`--out` may not be the study folder, nor its own `report/` with `--headline`"),
    24: ("Ctrl-C of a running study: a 38-line KeyboardInterrupt traceback from a pool worker",
         "idle workers ignore SIGINT, a node's run turns it into `interrupted` (training checkpoints first); the "
         "study exits 130 with `interrupted` and resumes; a node result saying it stopped on SIGINT stops the study "
         "too, should the study's own signal get lost (seen once under load: the study went on and exited 1; "
         "`tests/study/test_executors.py::test_a_node_stopped_by_ctrl_c_stops_the_study`)"),
    25: ("a format width in a task template (`{q:>20000000000}`): MemoryError",
         "template format specs with widths or precisions above 1000, or nested fields, are refused when the task "
         "loads"),
    26: ("an unregistered task passed validation and `--dry-run` and failed only after pretraining",
         "every study task is a registered name or a YAML task that loads, checked at plan time"),
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


@pytest.mark.parametrize("name", ["../summary", "<tmp>/abs/path", ".", "a\x00b", "x/../../y"])
def test_01_task_name_is_never_a_path(name: str, tiny_run: Path, tmp_path: Path, request) -> None:
    name = name.replace("<tmp>", str(tmp_path))  # an absolute path (under tmp: the old code wrote there)
    spec = task_file(tmp_path, name)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "eval", ignore_errors=True)  # another test may have evaluated the shared run
    before = snapshot(tmp_path)
    r = run_cli("evaluate", str(run), "--task", str(spec), "--out", str(run / "eval"), "--max-questions", "2")
    line = assert_one_line_exit_2(r, str(spec), "key 'name'")
    assert snapshot(tmp_path) == before and not (run / "eval").exists()
    record(request, 1, f"`evaluate --task task.yaml` (name {_anon(repr(name), tmp_path)})", line, tmp_path)


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
    from plasticity.train.run_lifecycle import is_plasticity_run

    assert is_plasticity_run(old) and is_plasticity_run(tmp_path / "new")
    assert is_plasticity_run(tmp_path / "old" / "final" / "nothing")
    (tmp_path / "empty").mkdir()
    assert is_plasticity_run(tmp_path / "empty") and not is_plasticity_run(tiny_run / "final")


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


# ------------------------------------------------------------------------------------------- 5-14: stale or wrong


def _spec(tmp: Path, **body) -> Path:
    base = {"data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
            "tokenizer": {"vocab_size": 512, "train_documents": 150}, "model": {"preset": "llama2-tiny"},
            "train": {"max_steps": 20, "micro_batch_size": 4}}
    return study_file(tmp, {"base": base, **body})


def test_05_edited_task_files_are_new_nodes(tmp_path: Path, request) -> None:
    from plasticity.study.plan import build_plan
    from plasticity.study.spec import load_spec

    spec = _spec(tmp_path, finetune={"task": str(task_file(tmp_path, "mine")), "train": {"max_steps": 1}})

    def finetune_id() -> str:
        return next(n for n in build_plan(load_spec(spec)).nodes if n.startswith("finetune-"))

    first = finetune_id()
    write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW] * 7)  # the data edited
    second = finetune_id()
    task = tmp_path / "task.yaml"
    task.write_text(task.read_text().replace("'{q}'", "'Q: {q}'"))  # the task file edited
    third = finetune_id()
    assert len({first, second, third}) == 3
    record(request, 5, "edit the task's JSONL, then its YAML", f"finetune node {first} -> {second} -> {third}",
           tmp_path)


@pytest.mark.parametrize("case", ["seed_alias", "task_alias", "builtin_name_clash", "unknown_task", "tiny_fraction"])
def test_06_07_11_26_study_plan_refusals(case: str, tmp_path: Path, request) -> None:
    ft = {"train": {"max_steps": 1}}
    clash = task_file(tmp_path, "demo_arith")
    body, needles, n = {
        "seed_alias": ({"axes": {"seed": [0, 1], "train.seed": [0, 1]}}, ("axes.train.seed", "axes.seed"), 6),
        "task_alias": ({"finetune": ft, "axes": {"task": ["demo_arith"], "finetune.task": ["demo_arith"]}},
                       ("axes.finetune.task", "axes.task"), 6),
        "builtin_name_clash": ({"finetune": ft, "tasks": ["demo_arith", str(clash)]}, ("both the task 'demo_arith'",),
                               7),
        "unknown_task": ({"finetune": ft, "tasks": ["demo_arith", "no_such_task"]}, ("unknown task 'no_such_task'",),
                         26),
        "tiny_fraction": ({"finetune": ft, "finetune_from": [1.0e-9, 0.5]}, ("finetune_from", "1e-09", "step 0"), 11),
    }[case]
    spec = _spec(tmp_path, **body)
    before = snapshot(tmp_path)
    r = run_cli("study", str(spec), "--dry-run")
    line = assert_one_line_exit_2(r, *needles)
    assert snapshot(tmp_path) == before and not (tmp_path / "study_runs").exists()
    record(request, n, f"`study --dry-run` ({case})", line, tmp_path)


def test_11_snapshot_fraction_that_is_no_snapshot(tiny_run: Path) -> None:
    from plasticity.checkpoints import RunDir
    from plasticity.errors import CheckpointError

    assert RunDir(tiny_run).snapshot_at(0.5).path.endswith("step_0000010")
    for f in (1e-9, 0.999):
        with pytest.raises(CheckpointError, match="not a snapshot"):
            RunDir(tiny_run).snapshot_at(f)


@pytest.fixture
def token_cache(tmp_path: Path) -> tuple[Path, list[str]]:
    """A token cache of its own (data.cache_dir under tmp) and the pretraining overrides that read it."""
    from plasticity.config import DataConfig, TokenizerConfig
    from plasticity.data.packed import prepare_data

    cache = tmp_path / "cache"
    data = DataConfig(source="packaged:bbc_news", max_documents=150, seq_len=32, cache_dir=str(cache))
    prepared = prepare_data(data, TokenizerConfig(vocab_size=512, train_documents=150), log=lambda m: None)
    return prepared.dir, [f"data.cache_dir={cache}"]


@pytest.mark.parametrize("damage", ["truncated_train_bin", "corrupt_meta", "token_out_of_range"])
def test_08_damaged_token_cache_is_refused(damage: str, token_cache, tmp_path: Path, request) -> None:
    import numpy as np

    cache, over = token_cache
    train = sorted(cache.glob("train-*.bin"))[0]  # the first training shard
    if damage == "truncated_train_bin":
        train.write_bytes(train.read_bytes()[:960])
    elif damage == "corrupt_meta":
        (cache / "meta.json").write_text('{"dtype": "uint16", "train_tok')
    else:
        arr = np.fromfile(train, dtype=np.uint16)
        arr[100] = 60000
        arr.tofile(train)
    out = tmp_path / "run"
    r = run_cli("pretrain", *tiny_overrides(out, **DATA), *over)
    line = assert_one_line_exit_2(r, str(cache), "token cache is damaged", progress=True)
    assert not out.exists()
    record(request, 8, f"`pretrain` on a cache with {damage.replace('_', ' ')}", line, tmp_path)


def test_09_damaged_node_outputs_are_not_done(tiny_run: Path, tmp_path: Path, request) -> None:
    from plasticity.study.plan import build_plan
    from plasticity.study.spec import load_spec
    from plasticity.study.state import node_states, write_marker

    plan = build_plan(load_spec(_spec(tmp_path)))
    pre = next(n for n in plan.nodes.values() if n.kind == "pretrain")
    shutil.copytree(tiny_run, pre.out)
    write_marker(plan.root, pre, "done", out=pre.out)
    assert node_states(plan)[pre.id] == "done"
    (Path(pre.out) / "summary.json").write_text('{"status": "compl')
    assert node_states(plan)[pre.id] == "pending"
    r = run_cli("pretrain", str(Path(pre.out) / "config.yaml"), f"out_dir={pre.out}", "--resume")
    line = assert_one_line_exit_2(r, "summary.json", "not valid JSON")  # what the re-run node fails with
    record(request, 9, "a done pretrain node whose summary.json is cut: its state, then its re-run",
           f"state pending (was done); the node's run: {line}", tmp_path)


def test_10_non_text_fields_are_skipped_and_counted(tmp_path: Path, request) -> None:
    from plasticity.tasks.loading import load_rows
    from plasticity.tasks.registry import get_task

    bad = [{"q": None, "a": "#### 1"}, {"q": ["x"], "a": "#### 1"}, {"q": {"k": 1}, "a": "#### 1"},
           {"q": 7, "a": "#### 1"}, {"q": "Q?", "a": None}]
    rows = write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW] * 3 + bad + [GOOD_ROW] * 3)
    task = get_task(str(task_file(tmp_path, "mixed", rows)))
    loaded = load_rows(task, "train", None, None)
    assert loaded.counts["unformattable"] == 5 and len(loaded.rows) == 6
    assert all("None" not in task.format_example(r)[0] for r in loaded.rows)
    record(request, 10, "rows whose `q`/`a` are null, a list, a dict, an int",
           f"load counts {json.dumps(dict(sorted(loaded.counts.items())))}", tmp_path)


def test_12_weights_that_do_not_match_config_are_refused(tiny_run: Path, tmp_path: Path, request) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_run / "final", ckpt)
    (ckpt / "manifest.json").unlink()  # a plain HF directory: nothing but the weights to check
    conf = json.loads((ckpt / "config.json").read_text())
    conf["num_hidden_layers"] += 2
    (ckpt / "config.json").write_text(json.dumps(conf))
    r = run_cli("evaluate", str(ckpt), "--task", "demo_arith", "--out", str(tmp_path / "ev"), "--max-questions", "1")
    line = assert_one_line_exit_2(r, str(ckpt), "do not match config.json", "missing")
    assert not (tmp_path / "ev").exists()
    record(request, 12, "`evaluate CKPT` whose config.json claims 2 more layers than its weights", line, tmp_path)


def _unfinished(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run as a kill after step 15 leaves it: no final/, no summary.json."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "final")
    (run / "summary.json").unlink()
    return run


def _resume(run: Path) -> subprocess.CompletedProcess:
    return run_cli("pretrain", str(run / "config.yaml"), f"out_dir={run}", "--resume")


def test_13_checkpoints_of_a_run_need_their_manifest(tiny_run: Path, tmp_path: Path, request) -> None:
    run = tmp_path / "done"
    shutil.copytree(tiny_run, run)
    (run / "final" / "manifest.json").unlink()
    r = run_cli("evaluate", str(run / "final"), "--task", "demo_arith", "--out", str(tmp_path / "ev"))
    line = assert_one_line_exit_2(r, "no valid manifest.json")
    record(request, 13, "`evaluate RUN/final` whose manifest.json was deleted", line, tmp_path)
    run = _unfinished(tiny_run, tmp_path)
    (run / "checkpoints" / "step_0000015" / "manifest.json").unlink()
    r = _resume(run)
    assert r.returncode == 0, r.stderr[-3000:]
    said = [x for x in r.stderr.splitlines() if "skipping checkpoint" in x or "training from step 0" in x]
    assert len(said) == 2 and "step_0000015: no valid manifest.json" in said[0], r.stderr[-3000:]
    record(request, 13, "`pretrain --resume`, newest checkpoint without manifest", " / ".join(said), tmp_path)


def test_14_completed_run_without_final_resumes(tiny_run: Path, tmp_path: Path, request) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "final")
    from plasticity.checkpoints import resolve_model_source
    from plasticity.errors import CheckpointError

    with pytest.raises(CheckpointError, match="--resume"):
        resolve_model_source(run)
    r = _resume(run)
    assert r.returncode == 0, r.stderr[-3000:]
    said = next(x for x in r.stderr.splitlines() if "final/ is unusable" in x)
    assert (run / "final" / "manifest.json").is_file() and resolve_model_source(run).path == str(run / "final")
    record(request, 14, "`pretrain --resume` of a completed run whose final/ was deleted", said, tmp_path)


# ------------------------------------------------------------------------------------------- 15-26: runaway, one line


@pytest.mark.parametrize("case", ["n_train_huge", "k_huge", "max_new_tokens_huge"])
def test_18_runaway_sizes_are_refused_before_allocating(case: str, tiny_run: Path, tmp_path: Path, request) -> None:
    import sys

    from tests.reliability.test_bad_inputs import _MEASURED, MAX_RSS_MB

    ev = ["evaluate", str(tiny_run / "final"), "--task", "demo_arith", "--out", str(tmp_path / "ev"),
          "--max-questions", "2", "--max-new-tokens", "16"]
    argv = {"n_train_huge": ["finetune", f"init_from={tiny_run}", f"out_dir={tmp_path / 'ft'}", "task=demo_arith",
                             "task_options.n_train=1000000000", "train.max_steps=1"],
            "k_huge": [*ev, "--k", "1000000000"],
            "max_new_tokens_huge": [*ev[:-1], "1000000000"]}[case]
    rss = tmp_path / "maxrss"
    r = subprocess.run([sys.executable, "-c", _MEASURED, str(rss), *argv], capture_output=True, text=True,
                       timeout=600)
    line = assert_one_line_exit_2(r, "more than the available", progress=True)  # after "loaded <model>"
    peak_mb = int(rss.read_text()) / 1024
    assert peak_mb < MAX_RSS_MB, f"peak RSS {peak_mb:.0f} MB: something was allocated"
    assert not (tmp_path / "ft").exists()
    record(request, 18, {"n_train_huge": "`finetune task=demo_arith task_options.n_train=1000000000`",
                         "k_huge": "`evaluate RUN/final --task demo_arith --k 1000000000`",
                         "max_new_tokens_huge": "`evaluate RUN/final --task demo_arith --max-new-tokens 1000000000`"
                         }[case] + " (peak RSS below 1.5 GB)", _anon(line, tiny_run.parent), tmp_path)


def test_16_huge_grid_is_refused_before_expansion(tmp_path: Path, request) -> None:
    spec = study_file(tmp_path, {"axes": {"optim.weight_decay": [i / 1000 for i in range(1000)],
                                          "train.seed": list(range(1000))}})
    r = run_cli("study", str(spec), "--dry-run")
    line = assert_one_line_exit_2(r, "axes", "more than 5,000 points")
    assert not (tmp_path / "study_runs").exists()
    record(request, 16, "`study --dry-run` of a 1000 x 1000 grid", line, tmp_path)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize("command", ["study", "pretrain", "finetune_task"])
def test_17_yaml_alias_bomb_is_refused(command: str, tiny_run: Path, tmp_path: Path, request) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    argv = {"study": ["study", str(bomb), "--dry-run"], "pretrain": ["pretrain", str(bomb)],
            "finetune_task": ["finetune", f"init_from={tiny_run}", f"out_dir={tmp_path / 'ft'}", f"task={bomb}"]}
    r = run_cli(*argv[command])
    line = assert_one_line_exit_2(r, str(bomb), "alias bomb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml"]
    record(request, 17, f"`{command.split('_')[0]}` reading a 1 KB alias bomb (9^9 values)", line, tmp_path)


@pytest.mark.parametrize("command", ["evaluate_cot", "evaluate_cloze", "analyze"])
def test_20_tokenizer_bigger_than_the_model(command: str, tiny_run: Path, tmp_path: Path, request) -> None:
    d = bigger_tokenizer_checkpoint(tiny_run, tmp_path / "ckpt")
    out = tmp_path / "out"
    argv = {"evaluate_cot": ["evaluate", str(d), "--task", "demo_arith", "--out", str(out), "--max-questions", "2"],
            "evaluate_cloze": ["evaluate", str(d), "--task", "demo_choice", "--out", str(out), "--max-questions", "2"],
            "analyze": ["analyze", str(d), "--out", str(out), "--what", "norms,probes", "--n-probe", "10"]}
    r = run_cli(*argv[command])
    line = assert_one_line_exit_2(r, str(d), "vocab mismatch")
    assert not out.exists() or not any(out.iterdir())
    record(request, 20, f"`{command.replace('_', ' (')}{')' if '_' in command else ''}` of a checkpoint whose "
           "tokenizer has 600 extra tokens", line, tmp_path)


def test_21_damaged_summary_is_one_line(tiny_run: Path, tmp_path: Path, request) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "analysis", ignore_errors=True)  # another test may have analysed the shared run
    (run / "summary.json").write_text('{"status": "comp')
    before = snapshot(run)
    r = _resume(run)
    line = assert_one_line_exit_2(r, str(run / "summary.json"), "not valid JSON")
    r = run_cli("analyze", str(run))
    assert_one_line_exit_2(r, str(run / "summary.json"), "not valid JSON")
    assert snapshot(run) == before and not (run / "analysis").exists()
    record(request, 21, "`pretrain --resume` and `analyze` of a run whose summary.json is cut", line, tmp_path)


def test_21_garbage_metrics_line_is_dropped_on_resume(tiny_run: Path, tmp_path: Path, request) -> None:
    run = _unfinished(tiny_run, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:1] + ["\x00garbage{"] + lines[1:]) + "\n")
    r = _resume(run)
    assert r.returncode == 0, r.stderr[-3000:]
    said = [x for x in r.stderr.splitlines() if x.startswith("warning:") and "unreadable" in x]
    assert len(said) == 1 and "line 2" in said[0], r.stderr[-3000:]
    assert all(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines())
    record(request, 21, "`pretrain --resume` with a garbage line mid metrics.jsonl (exit 0)", said[0], tmp_path)


@pytest.mark.parametrize("case", ["under_proc", "symlink_loop", "cache_under_proc"])
def test_22_unusable_output_paths(case: str, tmp_path: Path, request) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    out, env, needles = {"under_proc": (Path("/proc/plasticity/run"), {}, ("out_dir", "cannot be written")),
                         "symlink_loop": (loop / "run", {}, ("out_dir", "symlink loop")),
                         "cache_under_proc": (tmp_path / "run", {"PLASTICITY_CACHE": "/proc/plasticity-cache"},
                                              ("PLASTICITY_CACHE", "cannot be written"))}[case]
    r = run_cli("pretrain", *tiny_overrides(out, **DATA), env=env)
    line = assert_one_line_exit_2(r, *needles)
    assert not (tmp_path / "run").exists()
    record(request, 22, f"`pretrain` ({case.replace('_', ' ')})", line, tmp_path)


def test_23_report_out_is_not_the_study(tmp_path: Path, request) -> None:
    sdir = tmp_path / "out" / "s"
    (sdir / "report").mkdir(parents=True)
    (sdir / "results.csv").write_text("status\ncompleted\n")
    (sdir / "report" / "index.html").write_text("the study's own report")
    before = snapshot(tmp_path)
    for out, needle in ((sdir, "is the study directory"), (sdir / "report", "study's own report")):
        r = run_cli("report", str(sdir), "--headline", "demo_arith=greedy", "--out", str(out))
        line = assert_one_line_exit_2(r, "--out", needle)
        assert snapshot(tmp_path) == before
        record(request, 23, f"`report STUDY --headline ... --out {'STUDY' if out == sdir else 'STUDY/report'}`",
               line, tmp_path)


def test_25_template_format_width_is_refused(tiny_run: Path, tmp_path: Path, request) -> None:
    spec = task_file(tmp_path, "wide")
    spec.write_text(spec.read_text().replace("'{q}'", "'{q:>20000000000}'"))
    out = tmp_path / "ft"
    r = run_cli("finetune", f"init_from={tiny_run}", f"out_dir={out}", f"task={spec}", "train.max_steps=1")
    line = assert_one_line_exit_2(r, str(spec), "format spec")
    assert not out.exists()
    record(request, 25, "`finetune task=task.yaml` with `question_template: '{q:>20000000000}'`", line, tmp_path)


# ------------------------------------------------------------------------------------------- 15, 24: kill / Ctrl-C


def _long_study(tmp: Path, steps: int) -> Path:
    return _spec(tmp, base={"data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
                            "tokenizer": {"vocab_size": 512, "train_documents": 150},
                            "model": {"preset": "llama2-tiny"},
                            "train": {"max_steps": steps, "micro_batch_size": 4, "log_every": 5,
                                      "eval_sequences": 4, "eval_max_sequences": 8}},
                 analyze={"what": ["norms"]})


def _start_study(spec: Path) -> subprocess.Popen:
    import sys

    return subprocess.Popen([sys.executable, "-m", "plasticity.cli", "study", str(spec), "--workers", "1",
                             "--no-report"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def _wait_training(tmp: Path, proc: subprocess.Popen) -> Path:
    """The pid file of the pretraining node once its run has logged a step."""
    import time

    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        pids = list((tmp / "study_runs" / "nodes").glob("pretrain-*.pid"))
        runs = list((tmp / "study_runs" / "runs").glob("pretrain-*/metrics.jsonl"))
        if pids and runs and runs[0].stat().st_size > 0:
            return pids[0]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"training never started: {proc.communicate()[1][-3000:]}")


@pytest.mark.slow
def test_15_a_killed_worker_fails_its_node(tmp_path: Path, request) -> None:
    import signal

    spec = _long_study(tmp_path, 100000)
    proc = _start_study(spec)
    pid_file = _wait_training(tmp_path, proc)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # what the OOM killer does
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise AssertionError(f"the study hung after its worker was killed: {err[-2000:]}") from None
    assert proc.returncode == 1, err[-3000:]
    said = next(x for x in err.splitlines() if "died" in x)
    states = json.loads(run_cli("status", str(spec), "--json").stdout)
    by_kind = {r["kind"]: r["state"] for r in states}
    assert by_kind["pretrain"] == "failed" and by_kind["analyze"] == "skipped", states
    record(request, 15, "SIGKILL of the worker pretraining a study node", said.strip(), tmp_path)


@pytest.mark.slow
def test_24_ctrl_c_of_a_study_is_one_quiet_line(tmp_path: Path, request) -> None:
    import signal

    spec = _long_study(tmp_path, 400)
    proc = _start_study(spec)
    _wait_training(tmp_path, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole process group
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted", err[-3000:]
    r = run_cli("study", str(spec), "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    record(request, 24, "Ctrl-C (SIGINT to the process group) while a node trains; then the same command",
           "exit 130, last line 'interrupted', no traceback; the re-run resumes and completes", tmp_path)


@pytest.mark.slow
def test_19_one_huge_document_is_prepared_in_bounded_memory(tmp_path: Path, request) -> None:
    """A ~24 MB single-document corpus (the probe's case) is prepared with peak RSS far below the 5.4 GB the
    whole-document path reached: the peak of the `plasticity data` process tree stays under 1.5 GB."""
    import sys

    words = " ".join(f"w{i % 5000} lorem ipsum dolor" for i in range(1_000_000))  # ~24 MB, one document
    rows = [{"text": words}] + [{"text": f"a short document number {i} about weight decay"} for i in range(300)]
    src = tmp_path / "one_huge.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, "-m", "plasticity.cli", "data", f"data.source={src}", f"data.cache_dir={tmp_path / 'c'}",
           "tokenizer.vocab_size=512", "data.num_workers=1"]
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
             "print(r.stderr[-2000:], file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, timeout=900)
    rc, peak_kb = (int(x) for x in r.stdout.split()[:2])
    assert rc == 0, r.stderr
    assert peak_kb < 1.5 * 2**20, f"peak RSS {peak_kb / 2**20:.2f} GB"
    record(request, 19, f"`plasticity data` on one {src.stat().st_size / 1e6:.0f} MB document",
           f"exit 0, peak RSS {peak_kb / 2**20:.2f} GB (the process tree)", tmp_path)


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
    entry = (_anon(what, tmp), _anon(line, tmp))
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
