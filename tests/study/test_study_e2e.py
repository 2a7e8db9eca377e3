"""A tiny study from YAML: pretrain (2 weight decays) -> analyze -> fine-tune -> evaluate, then cached."""

from __future__ import annotations

import csv
import time

import yaml

from tests.conftest import run_cli

SPEC = {
    "name": "tiny",
    "axes": {"optim.weight_decay": [0.0, 1.0]},
    "analyze": ["rank", "norms", "gap"],
    "base": {
        "model": {"preset": "llama2-tiny"},
        "tokenizer": {"vocab_size": 512, "train_documents": 150},
        "data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
        "optim": {"lr": 0.01},
        "train": {"micro_batch_size": 4, "max_steps": 20, "log_every": 10},
    },
    "finetune": {"task": "demo_arith", "task_options": {"n_train": 32, "n_test": 8}, "cutoff_len": 256,
                 "optim": {"lr": 0.001}, "train": {"micro_batch_size": 8, "grad_accum": 1, "epochs": 1}},
    "evaluate": {"k": 2, "max_questions": 4, "max_new_tokens": 12, "batch_size": 8},
}


def test_tiny_study_end_to_end_and_cached(tmp_path):
    spec = dict(SPEC, out_dir=str(tmp_path / "studies"))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("study", str(path), "--workers", "2")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    rows = list(csv.DictReader(open(tmp_path / "studies" / "tiny" / "results.csv")))
    assert [float(x["optim.weight_decay"]) for x in rows] == [0.0, 1.0]
    for row in rows:
        assert row["status"] == "completed"
        for col in ("val_loss", "weight_norm", "qk_rank_frac", "train_val_gap", "demo_arith/maj@2",
                    "demo_arith/pass@2", "forgetting"):
            assert row[col] not in ("", None), col
    assert float(rows[1]["weight_norm"]) < float(rows[0]["weight_norm"])  # wd 1.0 shrinks the weights

    t0 = time.time()
    r2 = run_cli("study", str(path), "--workers", "2")
    assert r2.returncode == 0
    assert "2 cached, 0 failed" in r2.stderr and "0 to run" in r2.stderr
    assert (tmp_path / "studies" / "tiny" / "report" / "index.html").exists()
    assert time.time() - t0 < 60
    assert list(csv.DictReader(open(tmp_path / "studies" / "tiny" / "results.csv"))) == rows


def test_study_dry_run_and_bad_spec(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(dict(SPEC, out_dir=str(tmp_path / "s"))))
    r = run_cli("study", str(path), "--dry-run")
    assert r.returncode == 0 and r.stdout.count("pending") == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dict(SPEC, axes={"optim.weight_decay": [-1.0]})))
    r = run_cli("study", str(bad))
    assert r.returncode == 2 and "optim.weight_decay" in r.stderr and "Traceback" not in r.stderr


def test_failed_point_is_reported_and_the_others_finish(tmp_path):
    axes = {"optim.weight_decay": [0.1], "optim.lr": [0.01, 1.0e6]}
    spec = dict(SPEC, name="nan", out_dir=str(tmp_path / "s"), axes=axes, analyze=["norms"], finetune=None,
                evaluate=None)
    spec["base"] = dict(SPEC["base"], optim={"min_lr": 0.0, "grad_clip": 0.0},
                        schedule={"warmup_fraction": 0.0})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("study", str(path), "--workers", "2")
    assert r.returncode == 1, r.stderr[-3000:]
    rows = {float(x["optim.lr"]): x for x in csv.DictReader(open(tmp_path / "s" / "nan" / "results.csv"))}
    assert rows[0.01]["status"] == "completed" and rows[0.01]["weight_norm"]
    assert rows[1.0e6]["status"] == "diverged"
    assert (tmp_path / "s" / "nan" / "report" / "index.html").exists()
    r2 = run_cli("study", str(path), "--workers", "2")
    assert r2.returncode == 1 and "1 failed before" in r2.stderr and "0 to run" in r2.stderr
    r3 = run_cli("study", str(path), "--workers", "2", "--retry-failed")
    assert "1 to run" in r3.stderr
