"""One pretraining run in 2 processes (the real CLI under ``torchrun``, CPU/gloo) follows the single-process loss
curve, writes the single-process run directory, and resumes across world sizes and strategies.

Tolerances: with train.threads=1 everywhere the 2-process runs differ from 1 process only by float32 summation
order (each rank sums half the rows, then the gradients are averaged). Measured on this CPU over 12 steps: loss
<= 2.4e-7 absolute (DDP and FSDP2), grad norm <= 2.3e-5 relative, validation loss <= 3e-8, weights <= 6.3e-6.
The bounds leave 30-50x headroom and still catch real bugs: both ranks training on the same rows moved the
loss by 2.6e-3 at step 1 and 4e-3 at step 2; a missing world-size scale would halve the gradient norm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from plasticity.train.distributed import Dist, resolve_strategy, shard_rows
from tests.conftest import needs_data, run_cli, tiny_overrides

# 2 x 4 = 8 sequences per step: each rank runs 4 rows as 2 micro-batches (DDP skips the first all-reduce)
EXTRA = {"train.max_steps": 12, "train.micro_batch_size": 2, "train.grad_accum": 4, "train.log_every": 1}
LOSS_ATOL, GNORM_RTOL, VAL_ATOL, WEIGHT_ATOL = 1e-5, 1e-3, 1e-6, 3e-4
DROP = ("tok_per_s", "elapsed")

data = needs_data("wikipedia", "train.jsonl")


def torchrun(out: Path, *args: str, nproc: int = 2, check: bool = True, **extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "plasticity.cli", "pretrain", *tiny_overrides(out, **{**EXTRA, **extra}), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert not check or r.returncode == 0, r.stderr[-4000:]
    return r


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in DROP} for x in (run / "metrics.jsonl").open()]


def assert_same_run(ref: Path, run: Path) -> None:
    """Same records (steps, tokens, lr exactly; loss, grad norm, val loss within tolerance) and weights."""
    a, b = metrics(ref), metrics(run)
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert (ra["step"], ra["tokens"], ra.get("lr")) == (rb["step"], rb["tokens"], rb.get("lr"))
        if "loss" in ra:
            assert rb["loss"] == pytest.approx(ra["loss"], abs=LOSS_ATOL), ra["step"]
            assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=GNORM_RTOL), ra["step"]
        if "val_loss" in ra:
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=VAL_ATOL), ra["step"]
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (ref, run))
    assert sb["status"] == "completed" and sb["steps"] == sa["steps"] and sb["tokens_seen"] == sa["tokens_seen"]
    assert sb["final_val_loss"] == pytest.approx(sa["final_val_loss"], abs=VAL_ATOL)
    wa, wb = (load_file(str(r / "final" / "model.safetensors")) for r in (ref, run))
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=WEIGHT_ATOL) for k in wa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "one"
    r = run_cli("pretrain", *tiny_overrides(out, **EXTRA))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "fsdp"
    torchrun(out, **{"train.parallel": "fsdp"})
    return out


@data
def test_ddp_two_processes_match_one_process(reference, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "ddp"
    torchrun(out)  # train.parallel=auto -> ddp on CPU
    assert_same_run(reference, out)
    summary = json.loads((out / "summary.json").read_text())
    info = json.loads((out / "run_info.json").read_text())
    assert (summary["world_size"], summary["parallel"]) == (info["world_size"], info["parallel"]) == (2, "ddp")
    assert json.loads((reference / "summary.json").read_text())["parallel"] == "none"
    # rank 0 alone wrote the run directory: the same files as one process, no leftovers
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000003", "step_0000006", "step_0000009"]
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert model.config.model_type == "llama"


@data
def test_fsdp2_two_processes_match_one_process(reference, fsdp_run):
    from transformers import AutoModelForCausalLM

    assert_same_run(reference, fsdp_run)
    assert json.loads((fsdp_run / "summary.json").read_text())["parallel"] == "fsdp"
    AutoModelForCausalLM.from_pretrained(fsdp_run / "final")
    # the gathered trainer state has the single-process layout (index-keyed optimizer state)
    a, b = (torch.load(r / "checkpoints" / "step_0000009" / "trainer_state.pt", weights_only=True)
            for r in (reference, fsdp_run))
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, st in a["optimizer"]["state"].items():
        assert {n: t.shape for n, t in st.items()} == {n: t.shape for n, t in b["optimizer"]["state"][k].items()}
    assert a["loop"]["step"] == b["loop"]["step"] == 9


def _unfinished_copy(run: Path, dst: Path) -> Path:
    """The run as it was when its step-9 checkpoint was the newest (final/ and summary removed)."""
    shutil.copytree(run, dst)
    shutil.rmtree(dst / "final")
    (dst / "summary.json").unlink()
    return dst


@data
def test_resume_one_process_checkpoint_with_fsdp2(reference, tmp_path):
    run = _unfinished_copy(reference, tmp_path / "to_fsdp")
    r = torchrun(run, "--resume", **{"train.parallel": "fsdp"})
    assert "resumed from" in r.stderr and "step_0000009" in r.stderr
    assert_same_run(reference, run)


@data
def test_resume_fsdp2_checkpoint_in_one_process(reference, fsdp_run, tmp_path):
    run = _unfinished_copy(fsdp_run, tmp_path / "to_one")
    r = run_cli("pretrain", *tiny_overrides(run, **EXTRA), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    assert_same_run(reference, run)
    assert json.loads((run / "summary.json").read_text())["world_size"] == 1


@data
def test_global_batch_must_split_evenly(tmp_path):
    r = torchrun(tmp_path / "odd", check=False, **{"train.micro_batch_size": 3, "train.grad_accum": 1})
    assert r.returncode != 0
    assert "config error: train.micro_batch_size: micro_batch_size x grad_accum = 3" in r.stderr
    assert r.stderr.count("error: config error") == 2  # one line per rank
    assert r.stderr.count("Traceback") == 1  # torchrun's own report of the failed workers, none from them


def test_shard_rows_splits_the_step_exactly():
    ids = torch.arange(24).reshape(12, 2)
    micro = [{"input_ids": ids[i: i + 3], "labels": ids[i: i + 3]} for i in range(0, 12, 3)]  # 4 x 3 rows
    shards = [shard_rows(micro, Dist(rank=r, world_size=4)) for r in range(4)]
    assert all(max(b["input_ids"].shape[0] for b in s) <= 3 for s in shards)
    assert torch.equal(torch.cat([b["input_ids"] for s in shards for b in s]), ids)
    assert shard_rows(micro, Dist()) is micro


def test_strategy_resolution():
    cpu, two = torch.device("cpu"), Dist(rank=0, world_size=2)
    assert resolve_strategy("auto", Dist(), 10**10, cpu) == "none"
    assert resolve_strategy("auto", two, 10**10, cpu) == "ddp"
    assert resolve_strategy("auto", two, 4 * 10**9, torch.device("cuda")) == "fsdp"
    assert resolve_strategy("auto", two, 10**9, torch.device("cuda")) == "ddp"
    assert resolve_strategy("fsdp", two, 10, cpu) == "fsdp"
