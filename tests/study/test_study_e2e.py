"""A tiny study from YAML through the real CLI: pretrain (2 weight decays) -> analyze -> fine-tune from 50% and
100% of pretraining -> evaluate -> results.csv -> report; cached re-runs, a changed fine-tuning key, a study
killed mid-way, a diverging node."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

SPEC = {
    "name": "tiny",
    "axes": {"optim.weight_decay": [0.0, 1.0]},
    "finetune_from": [0.5, 1.0],
    "analyze": ["rank", "norms", "gap"],
    "base": {
        "model": {"preset": "llama2-tiny"},
        "tokenizer": {"vocab_size": 512, "train_documents": 150},
        "data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
        "optim": {"lr": 0.01},
        "train": {"micro_batch_size": 4, "max_steps": 20, "log_every": 10, "checkpoint_every": 4},
    },
    "finetune": {"task": "demo_arith", "task_options": {"n_train": 32, "n_test": 8}, "cutoff_len": 256,
                 "optim": {"lr": 0.001}, "train": {"micro_batch_size": 8, "grad_accum": 1, "epochs": 1}},
    "evaluate": {"k": 2, "max_questions": 4, "max_new_tokens": 12, "batch_size": 8, "stability_sequences": 16},
}
N_NODES = 1 + 1 + 2 + 2 + 4 + 4  # tokenizer, data, pretrain, analyze, finetune (2 wd x 2 fractions), evaluate


def write_spec(tmp: Path, out_dir: Path, **changes) -> Path:
    path = tmp / f"study-{len(list(tmp.glob('study-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(dict(SPEC, out_dir=str(out_dir), **changes)))
    return path


def results(out_dir: Path, name: str = "tiny") -> list[dict[str, str]]:
    with open(out_dir / name / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted run of the tiny study: (spec path, out_dir)."""
    tmp = tmp_path_factory.mktemp("ref")
    spec = write_spec(tmp, tmp / "studies")
    r = run_cli("study", str(spec), "--workers", "2")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return spec, tmp / "studies"


def test_tiny_study_end_to_end_then_cached(reference):
    spec, out = reference
    rows = results(out)
    assert [(float(x["optim.weight_decay"]), float(x["finetune_from"])) for x in rows] == [
        (0.0, 0.5), (0.0, 1.0), (1.0, 0.5), (1.0, 1.0)]
    for row in rows:
        assert row["status"] == "completed"
        for col in ("val_loss", "weight_norm", "qk_rank_frac", "train_val_gap", "demo_arith/demo_arith/maj@2",
                    "demo_arith/demo_arith/pass@2", "avg_cot/pass@2", "stability", "upstream_loss_change"):
            assert row[col] not in ("", None), col
    assert float(rows[2]["weight_norm"]) < float(rows[0]["weight_norm"])  # wd 1.0 shrinks the weights
    # fine-tuning from 50% starts from the step-10 snapshot, from 100% from final/
    cfgs = {r["finetune_from"]: yaml.safe_load((out / "tiny" / r["finetune_runs"] / "config.yaml").read_text())
            for r in rows[:2]}
    assert cfgs["0.5"]["init_from"].endswith("checkpoints/step_0000010")
    assert cfgs["1.0"]["init_from"].endswith("final")
    report = out / "tiny" / "report"
    assert (report / "index.html").exists() and (report / "fig9_plasticity_over_pretraining.png").exists()
    assert "fine-tuned from 1 of pretraining" in (report / "index.html").read_text()  # downstream figures' rows
    assert (out / "tiny" / "study.json").exists()

    t0 = time.time()
    r2 = run_cli("study", str(spec), "--workers", "2", "--no-report")
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert f"{N_NODES} cached" in r2.stderr and "0 to run" in r2.stderr and "start" not in r2.stderr
    assert time.time() - t0 < 60
    assert results(out) == rows

    st = run_cli("status", str(spec))
    assert st.returncode == 0 and f"{N_NODES} done" in st.stdout and "final_val_loss=" in st.stdout


def test_changing_a_finetune_key_reruns_only_finetune_and_later(reference, tmp_path):
    _, out = reference
    ft = dict(SPEC["finetune"], optim={"lr": 0.002})
    spec = write_spec(tmp_path, out, name="tiny-ftlr", finetune=ft)
    r = run_cli("study", str(spec), "--workers", "2", "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    started = [ln.split()[1] for ln in r.stderr.splitlines() if ln.strip().startswith("start ")]
    assert sorted({s.split("-")[0] for s in started}) == ["evaluate", "finetune"], started
    assert len(started) == 8 and f"{N_NODES - 8} cached" in r.stderr
    old, new = results(out), results(out, "tiny-ftlr")
    assert [x["val_loss"] for x in new] == [x["val_loss"] for x in old]  # the same pretraining runs
    assert [x["finetune_runs"] for x in new] != [x["finetune_runs"] for x in old]


def test_study_killed_midway_resumes_to_identical_results(reference, tmp_path):
    spec_ref, out_ref = reference
    spec = write_spec(tmp_path, tmp_path / "studies")
    cmd = [sys.executable, "-m", "plasticity.cli", "study", str(spec), "--workers", "2", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ))
    deadline = time.time() + 300
    for line in proc.stderr:  # kill once the first pretraining run is done and the other is mid-way
        if "done  pretrain-" in line or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = run_cli("status", str(spec))
    assert "pending" in partial.stdout or "running" in partial.stdout
    # results.csv was written mid-study (after the first finished node), unfinished rows marked pending
    with open(tmp_path / "studies" / "tiny" / "results.csv") as f:
        assert {r["status"] for r in csv.DictReader(f)} <= {"pending", "completed"}
    r = run_cli("study", str(spec), "--workers", "2", "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cached" in r.stderr
    assert results(tmp_path / "studies") == results(out_ref)  # same hashes, same numbers


def test_dry_run_and_bad_spec(tmp_path):
    spec = write_spec(tmp_path, tmp_path / "s")
    r = run_cli("study", str(spec), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"{N_NODES} pending" in r.stdout and "FLOPs" in r.stdout and "to run: " in r.stdout
    assert not (tmp_path / "s" / "runs").exists()
    bad = write_spec(tmp_path, tmp_path / "s", axes={"optim.weight_decay": [-1.0]})
    r = run_cli("study", str(bad))
    assert r.returncode == 2 and "optim.weight_decay" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_failed_node_is_reported_and_the_others_finish(tmp_path):
    axes = {"optim.weight_decay": [0.1], "optim.lr": [0.01, 1.0e6]}
    base = dict(SPEC["base"], optim={"min_lr": 0.0, "grad_clip": 0.0}, schedule={"warmup_fraction": 0.0})
    spec = write_spec(tmp_path, tmp_path / "s", name="nan", axes=axes, analyze=["norms"], base=base,
                      finetune=None, evaluate=None, finetune_from=None)
    r = run_cli("study", str(spec), "--workers", "2")
    assert r.returncode == 1, r.stderr[-3000:]
    rows = {float(x["optim.lr"]): x for x in results(tmp_path / "s", "nan")}
    assert rows[0.01]["status"] == "completed" and rows[0.01]["weight_norm"]
    assert rows[1.0e6]["status"] == "failed" and "diverged" in rows[1.0e6]["reason"]
    assert rows[1.0e6]["failed_node"].startswith("pretrain-")
    assert (tmp_path / "s" / "nan" / "report" / "index.html").exists()
    r2 = run_cli("study", str(spec), "--workers", "2")
    assert r2.returncode == 1 and "1 failed before and 1 skipped" in r2.stderr and "0 to run" in r2.stderr
    st = run_cli("status", str(spec))
    assert "failed" in st.stdout and "skipped" in st.stdout
    r3 = run_cli("study", str(spec), "--workers", "2", "--retry-failed")
    assert "2 to run" in r3.stderr


def test_a_second_process_on_the_same_study_exits_with_one_line(tmp_path):
    from filelock import FileLock

    spec = write_spec(tmp_path, tmp_path / "s")
    (tmp_path / "s" / "tiny").mkdir(parents=True)
    with FileLock(str(tmp_path / "s" / "tiny" / ".lock")):  # as a running `plasticity study` holds it
        r = run_cli("study", str(spec))
    assert r.returncode == 2 and "another plasticity study process" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "s" / "runs").exists()


def test_incompatible_study_directory_is_refused(tmp_path):
    spec = write_spec(tmp_path, tmp_path / "s")
    (tmp_path / "s" / "tiny").mkdir(parents=True)
    (tmp_path / "s" / "tiny" / "study.json").write_text('{"format_version": 1}')
    r = run_cli("study", str(spec))
    assert r.returncode == 2 and "format 1" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    legacy = write_spec(tmp_path, tmp_path / "old", name="legacy")
    (tmp_path / "old" / "legacy").mkdir(parents=True)
    (tmp_path / "old" / "legacy" / "sweep.json").write_text("[]")
    r = run_cli("status", str(legacy))
    assert r.returncode == 0  # status only reads
    r = run_cli("study", str(legacy))
    assert r.returncode == 2 and "older plasticity" in r.stderr
