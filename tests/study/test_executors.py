"""Study executors: `--executor ray` against a real local Ray instance (started by the CLI); torchrun nodes."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from tests.conftest import run_cli


def test_ray_executor_runs_the_study_and_matches_local(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'lm-plasticity[ray]')")
    spec = {
        "name": "ray", "axes": {"optim.weight_decay": [0.0, 1.0]}, "analyze": ["norms"],
        "base": {"model": {"preset": "llama2-tiny"}, "tokenizer": {"vocab_size": 512, "train_documents": 150},
                 "data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
                 "optim": {"lr": 0.01}, "train": {"micro_batch_size": 4, "max_steps": 12, "log_every": 4}},
    }
    rows = {}
    for executor in ("ray", "local"):
        path = tmp_path / f"{executor}.yaml"
        path.write_text(yaml.safe_dump(dict(spec, out_dir=str(tmp_path / executor))))
        r = run_cli("study", str(path), "--executor", executor, "--workers", "2", "--no-report",
                    env={"RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"})
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"{executor} executor" in r.stderr and "6 to run" in r.stderr
        with open(tmp_path / executor / "ray" / "results.csv") as f:
            rows[executor] = list(csv.DictReader(f))
    assert [x["status"] for x in rows["ray"]] == ["completed", "completed"]
    assert rows["ray"] == rows["local"]  # same nodes, same numbers, whichever executor ran them


def test_study_pretrains_a_node_with_torchrun(tmp_path):
    """resources.pretrain_nproc: 2 runs each pretraining node as a 2-process torchrun job (gloo on CPU)."""
    spec = {
        "name": "ddp", "out_dir": str(tmp_path / "s"), "axes": {"optim.weight_decay": [0.1]},
        "resources": {"pretrain_nproc": 2},
        "base": {"model": {"preset": "llama2-tiny"}, "tokenizer": {"vocab_size": 512, "train_documents": 150},
                 "data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
                 "optim": {"lr": 0.01}, "train": {"micro_batch_size": 4, "max_steps": 8, "log_every": 4}},
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("study", str(path), "--workers", "1", "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = next((tmp_path / "s" / "runs").glob("pretrain-*/summary.json"))
    s = json.loads(summary.read_text())
    assert s["status"] == "completed" and s["world_size"] == 2
