"""One pretraining run in 2 processes (the real CLI under ``torchrun``, CPU/gloo) follows the single-process loss
curve, writes the single-process run directory, and resumes across world sizes and strategies.

fp32 (the exactness tests pin ``train.precision=fp32``: ``auto`` is bf16 on AMX/AVX512-BF16 CPUs and GPUs): with
train.threads=1 everywhere the 2-process runs differ from 1 process only by float32 summation order (each rank
sums half the rows, then the gradients are averaged). Measured on an AVX2 CPU over 12 steps: loss <= 2.4e-7
absolute (DDP and FSDP2), grad norm <= 2.3e-5 relative, validation loss <= 3e-8, weights <= 6.3e-6. The bounds
leave 30-50x headroom and still catch real bugs: both ranks training on the same rows moved the loss by 2.6e-3
at step 1 and 4e-3 at step 2; a missing world-size scale would halve the gradient norm.

bf16 (``train.precision=bf16``, 4 steps: bf16 is ~17x slower than fp32 on AVX2-only CPUs): under autocast every
matmul rounds its inputs and its output to bf16 (8 significant bits, unit roundoff u = 2**-9), so the two runs
differ by bf16 rounding, not by summation order: each rank's partial weight gradient is rounded to bf16 before
the fp32 all-reduce, where one process rounds the full sum once, so the gradients differ elementwise by up to
2u = 2**-8 relative per step. Bounds: grad norm 4 x 2**-8 relative (2u per step over the 4 steps, worst case
adding up); loss and validation loss 2**-8 relative (each token's cross-entropy is computed from bf16 logits,
whose rounding moves it by at most ~2u x |logit| <= 2u x loss at this scale); weights: the per-tensor relative L2
difference, 4 steps x 2**-8 (Adam's update direction m / sqrt(v) inherits the gradients' 2**-8, scaled by
lr / init scale < 1 here). Measured: on an AVX2 CPU (bf16 emulated) DDP and FSDP2 give the same losses, grad norms
(<= 7e-8 relative) and validation losses as one process, weights 3e-9 relative; on AMX (issue 15, 12 steps, when
these tests still ran with ``auto``) validation losses differed by 6e-6 to 7e-5 absolute, i.e. <= 1.2e-5 relative,
300x inside 2**-8. A missing world-size scale (2x grad norm) still fails them; unsynchronised gradients should
too (rank 0's weights would drift from one process by up to lr per element and step; not measured).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from plasticity.train.distributed import Dist, resolve_strategy, shard_rows
from tests.conftest import run_cli, tiny_overrides

# 2 x 4 = 8 sequences per step: each rank runs 4 rows as 2 micro-batches (DDP skips the first all-reduce)
EXTRA = {"train.max_steps": 12, "train.micro_batch_size": 2, "train.grad_accum": 4, "train.log_every": 1,
         "train.precision": "fp32"}
BF16 = {**EXTRA, "train.precision": "bf16", "train.max_steps": 4, "train.checkpoint_fractions": "[0.5]"}
DROP = ("tok_per_s", "elapsed")


@dataclass(frozen=True)
class Tol:
    """How close a 2-process run must be to 1 process (``None``: that comparison is not made)."""

    loss_abs: float | None = None
    loss_rel: float | None = None
    gnorm_rel: float = 0.0
    val_abs: float | None = None
    val_rel: float | None = None
    weight_abs: float | None = None  # every element
    weight_rel_l2: float | None = None  # ||a - b|| / ||a|| per tensor


FP32 = Tol(loss_abs=1e-5, gnorm_rel=1e-3, val_abs=1e-6, weight_abs=3e-4)
BF16_EPS = 2.0**-8
BF16_TOL = Tol(loss_rel=BF16_EPS, gnorm_rel=4 * BF16_EPS, val_rel=BF16_EPS, weight_rel_l2=4 * BF16_EPS)


def torchrun(out: Path, *args: str, nproc: int = 2, check: bool = True, base: dict = EXTRA,
             **extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "plasticity.cli", "pretrain", *tiny_overrides(out, **{**base, **extra}), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert not check or r.returncode == 0, r.stderr[-4000:]
    return r


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in DROP} for x in (run / "metrics.jsonl").open()]


def assert_same_run(ref: Path, run: Path, tol: Tol = FP32) -> None:
    """Same records (steps, tokens, lr exactly; loss, grad norm, val loss within `tol`) and weights."""
    a, b = metrics(ref), metrics(run)
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert (ra["step"], ra["tokens"], ra.get("lr")) == (rb["step"], rb["tokens"], rb.get("lr"))
        if "loss" in ra:
            assert rb["loss"] == pytest.approx(ra["loss"], abs=tol.loss_abs, rel=tol.loss_rel), ra["step"]
            assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=tol.gnorm_rel), ra["step"]
        if "val_loss" in ra:
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=tol.val_abs, rel=tol.val_rel), ra["step"]
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (ref, run))
    assert sb["status"] == "completed" and sb["steps"] == sa["steps"] and sb["tokens_seen"] == sa["tokens_seen"]
    assert sb["final_val_loss"] == pytest.approx(sa["final_val_loss"], abs=tol.val_abs, rel=tol.val_rel)
    wa, wb = (load_file(str(r / "final" / "model.safetensors")) for r in (ref, run))
    assert wa.keys() == wb.keys()
    if tol.weight_abs is not None:
        assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=tol.weight_abs) for k in wa)
    if tol.weight_rel_l2 is not None:
        rel = {k: float((wa[k] - wb[k]).norm() / wa[k].norm()) for k in wa if wa[k].norm() > 0}
        assert max(rel.values()) <= tol.weight_rel_l2, max(rel.items(), key=lambda kv: kv[1])


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
    """The run as it was when its last checkpoint was the newest (final/ and summary removed)."""
    shutil.copytree(run, dst)
    shutil.rmtree(dst / "final")
    (dst / "summary.json").unlink()
    return dst


def test_resume_one_process_checkpoint_with_fsdp2(reference, tmp_path):
    run = _unfinished_copy(reference, tmp_path / "to_fsdp")
    r = torchrun(run, "--resume", **{"train.parallel": "fsdp"})
    assert "resumed from" in r.stderr and "step_0000009" in r.stderr
    assert_same_run(reference, run)


def test_resume_fsdp2_checkpoint_in_one_process(reference, fsdp_run, tmp_path):
    run = _unfinished_copy(fsdp_run, tmp_path / "to_one")
    r = run_cli("pretrain", *tiny_overrides(run, **EXTRA), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    assert_same_run(reference, run)
    assert json.loads((run / "summary.json").read_text())["world_size"] == 1


@pytest.fixture(scope="module")
def bf16_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "one_bf16"
    r = run_cli("pretrain", *tiny_overrides(out, **BF16))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "run_info.json").read_text())["precision"] == "bf16"
    return out


def test_bf16_ddp_follows_one_process(bf16_reference, tmp_path):
    out = tmp_path / "ddp_bf16"
    torchrun(out, base=BF16)
    assert_same_run(bf16_reference, out, BF16_TOL)
    assert json.loads((out / "summary.json").read_text())["parallel"] == "ddp"
    assert json.loads((out / "run_info.json").read_text())["precision"] == "bf16"


def test_bf16_resume_one_process_checkpoint_with_fsdp2(bf16_reference, tmp_path):
    """Steps 1-2 in one process, steps 3-4 in two FSDP2 processes: all in bf16, the one-process curve."""
    run = _unfinished_copy(bf16_reference, tmp_path / "to_fsdp_bf16")
    r = torchrun(run, "--resume", base=BF16, **{"train.parallel": "fsdp"})
    assert "resumed from" in r.stderr and "step_0000002" in r.stderr
    assert_same_run(bf16_reference, run, BF16_TOL)
    assert json.loads((run / "summary.json").read_text())["parallel"] == "fsdp"


MASTER = {**BF16, "train.master_weights": "true"}


def test_bf16_master_weights_fsdp2_follows_one_process(tmp_path):
    """`train.master_weights`: one process runs on bf16 copies of its fp32 weights; FSDP2 all-gathers bf16
    weights from its fp32 shards and reduces fp32 gradients (its mixed-precision policy). Both round each
    micro-batch's gradient to bf16 once before summing in fp32, so they differ like the bf16 DDP run above."""
    one = tmp_path / "one_master"
    r = run_cli("pretrain", *tiny_overrides(one, **MASTER))
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "fsdp_master"
    r = torchrun(out, base=MASTER, **{"train.parallel": "fsdp"})
    assert "master weights on (train.master_weights=true)" in r.stderr
    assert_same_run(one, out, BF16_TOL)
    weights = load_file(str(out / "final" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}  # the fp32 shards, gathered


def test_global_batch_must_split_evenly(tmp_path):
    r = torchrun(tmp_path / "odd", check=False, **{"train.micro_batch_size": 3, "train.grad_accum": 1})
    assert r.returncode != 0
    assert "config error: train.micro_batch_size: micro_batch_size x grad_accum = 3" in r.stderr
    assert r.stderr.count("error: config error") == 2  # one line per rank
    assert r.stderr.count("Traceback") == 1  # torchrun's own report of the failed workers, none from them


def test_master_weights_under_ddp_are_refused_before_anything_is_written(tmp_path):
    """`parallel: auto` resolves to DDP for a small model: `master_weights: true` cannot run there (DDP's hooks
    belong to the fp32 parameters), and the run directory is not created."""
    out = tmp_path / "ddp_master"
    r = torchrun(out, check=False, base=MASTER)
    assert r.returncode != 0
    assert "config error: train.master_weights: true does not work with DDP" in r.stderr
    assert r.stderr.count("Traceback") == 1  # torchrun's own report of the failed workers, none from them
    assert not (out / "config.yaml").exists()


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
