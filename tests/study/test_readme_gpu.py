"""README "The paper's study on GPUs": its commands, run at tiny scale on CPU.

The paper study file is replaced by a llama2-tiny study with the same shape of resources (2-process torchrun
fine-tuning and evaluation nodes); ``RAY_ADDRESS=HEAD_IP:6379`` by an empty address (the CLI starts a local
Ray), and the ``ray start`` lines, which would start cluster daemons on this shared machine, are checked against
``ray start --help`` only. The local and the Ray run compute the same study (the Ray run from scratch) and must
give the same results.csv."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.project.test_readme import is_gpu_study, readme_commands, without_env

TINY = {
    "name": "gpu", "axes": {"optim.weight_decay": [0.1]}, "tasks": ["demo_arith"],
    "base": {"model": {"preset": "llama2-tiny", "max_seq_len": 256},
             "tokenizer": {"vocab_size": 512, "train_documents": 150},
             "data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
             "optim": {"lr": 0.01}, "train": {"micro_batch_size": 4, "max_steps": 8, "log_every": 4}},
    "finetune": {"task_options": {"n_train": 32, "n_test": 8}, "cutoff_len": 256,
                 "train": {"micro_batch_size": 4, "grad_accum": 2, "max_steps": 3, "activation_checkpointing": True}},
    "evaluate": {"k": 2, "max_new_tokens": 8, "max_questions": 4, "batch_size": 2, "stability_tasks": ["demo_choice"],
                 "stability_max_questions": 4, "stability_sequences": 8},
    "resources": {"finetune_nproc": 2, "evaluate_nproc": 2},
    "executor": "ray",
}


def gpu_section() -> list[list[str]]:
    cmds = [a for a in readme_commands() if is_gpu_study(a) or a[0] == "ray"
            or (a[:2] == ["plasticity", "study"] and any(x.startswith("configs/paper/") for x in a))]
    assert len(cmds) >= 5, cmds
    return cmds


def test_readme_gpu_section_is_complete():
    cmds = gpu_section()
    assert any("--dry-run" in a for a in cmds)
    assert any(without_env(a)[1][-2:] == ["--executor", "local"] for a in cmds)
    assert any(without_env(a)[0].get("RAY_ADDRESS") and without_env(a)[1][-2:] == ["--executor", "ray"] for a in cmds)
    assert [a[:2] for a in cmds if a[0] == "ray"] == [["ray", "start"], ["ray", "start"]]


@pytest.mark.slow
def test_readme_gpu_study_commands_run_at_tiny_scale(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'lm-plasticity[ray]')")
    spec = tmp_path / "tiny-gpu-study.yaml"
    out = tmp_path / "runs"
    spec.write_text(yaml.safe_dump(dict(TINY, out_dir=str(out))))
    ray_help = None
    results = {}
    for argv in gpu_section():
        if argv[0] == "ray":  # cluster daemons: only the options are checked
            if ray_help is None:
                ray_help = subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--help"],
                                          capture_output=True, text=True, timeout=300).stdout
            opts = [a.split("=")[0] for a in argv if a.startswith("--")]
            assert all(o in ray_help for o in opts), (argv, opts)
            continue
        env, cmd = without_env(argv)
        env = {k: "" if k == "RAY_ADDRESS" else v for k, v in env.items()}
        args = [str(spec) if a.startswith("configs/paper/") else a for a in cmd[2:]]
        executor = args[args.index("--executor") + 1]
        if executor == "ray" and out.exists():  # the Ray run computes the study from scratch
            shutil.move(str(out), str(tmp_path / "runs_local"))
        r = subprocess.run([sys.executable, "-m", "plasticity.cli", "study", *args, "--no-report"],
                           capture_output=True, text=True, timeout=1800, cwd=REPO,
                           env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", **env))
        progress = [ln for ln in r.stderr.splitlines() if ln.startswith(("  ", "study", "error"))]  # not Ray's
        assert r.returncode == 0, (argv, "\n".join(progress[-40:]))
        if "--dry-run" in args:
            assert "CPU proc (ddp)" in r.stdout and "CPU proc (split)" in r.stdout, r.stdout[-3000:]
            continue
        with open(out / "gpu" / "results.csv") as f:
            results[executor] = list(csv.DictReader(f))
    assert set(results) == {"local", "ray"}
    assert [row["status"] for row in results["ray"]] == ["completed"]
    a, b = results["local"], results["ray"]
    assert a[0].keys() == b[0].keys()
    for k in a[0]:  # same nodes, same numbers (fine-tuning is DDP in both: bit-identical on CPU)
        assert a[0][k] == b[0][k], k
