"""The CUDA path end to end, with the real CLI: pretrain with bf16 autocast + torch.compile + fused AdamW +
fused linear/cross-entropy, then fine-tune, evaluate (KV-cache sampler) and analyze, all on the GPU; the
checkpoints load with `AutoModelForCausalLM`. Skipped without a GPU (CI has none); `benchmarks/gpu_check.sh`
runs it on one, with the device-parametrized tests of the CPU suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import CUDA, run_cli, tiny_overrides

pytestmark = CUDA


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu") / "pre"
    r = run_cli("pretrain", *tiny_overrides(out, **{"model.max_seq_len": 512, "train.precision": "bf16",
                                                    "train.compile": "true", "train.max_steps": 40,
                                                    "train.threads": 4}))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_pretrain_on_cuda_bf16_compiled(gpu_run: Path) -> None:
    from transformers import AutoModelForCausalLM

    info = json.loads((gpu_run / "run_info.json").read_text())
    assert info["hardware"]["device"].startswith("cuda") and info["precision"] == "bf16"
    assert info["master_weights"] is True  # `train.master_weights: auto` on CUDA: bf16 copies, compiled
    losses = _losses(gpu_run)
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0] - 0.5, losses
    summary = json.loads((gpu_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_val_loss"] < losses[0]
    model = AutoModelForCausalLM.from_pretrained(gpu_run / "final").to("cuda")
    ids = torch.tensor([[1, 2, 3, 4]], device="cuda")
    assert torch.isfinite(model(input_ids=ids).logits).all()


def test_finetune_evaluate_analyze_on_cuda(gpu_run: Path, tmp_path: Path) -> None:
    ft = tmp_path / "ft"
    args = {"init_from": str(gpu_run), "out_dir": str(ft), "task": "demo_arith", "max_examples": 64,
            "cutoff_len": 512, "train.micro_batch_size": 8, "train.epochs": 2, "optim.lr": 3e-3,
            "train.precision": "bf16", "train.log_every": 1}
    r = run_cli("finetune", *[f"{k}={v}" for k, v in args.items()])
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((ft / "run_info.json").read_text())["hardware"]["device"].startswith("cuda")
    losses = _losses(ft)
    assert losses[-1] < losses[0], losses
    r = run_cli("evaluate", str(ft), "--max-questions", "8", "--k", "4", "--max-new-tokens", "32")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((ft / "eval" / "demo_arith.json").read_text())
    assert res["n_questions"] == 8 and {"greedy", "pass@4", "maj@4"} <= set(res["metrics"])
    assert res["config"]["precision"] == "bf16"  # `evaluate.precision: auto` on a GPU
    r = run_cli("analyze", str(gpu_run), "--what", "rank,norms,gap,probes", "--n-probe", "40")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (gpu_run / "analysis" / "rank.json").exists()
