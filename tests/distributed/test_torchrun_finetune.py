"""Fine-tuning in 2 processes (the real CLI under ``torchrun``, CPU/gloo, DDP and FSDP2) follows the single-process
loss curve, writes the single-process run directory, and a run killed mid-way resumes under another world size to
the uninterrupted result; activation checkpointing changes no number.

Tolerance: `tests.distributed.test_torchrun.FP32`, the pretraining bound (fp32 pinned, train.threads=1: the runs
differ only by float32 summation order). The fine-tuning loss is the response-token cross-entropy normalised by the
whole step's target tokens (not each rank's): both ranks' micro-batches carry different numbers of response tokens
(padded examples of different lengths), so a per-rank mean would weight their tokens differently (not measured).
Measured on an AVX2 CPU over 6 steps (DDP and FSDP2): loss <= 4.8e-7 absolute, grad norm <= 4e-7 relative,
weights <= 1.3e-6.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from plasticity.train.distributed import Dist, shard_rows
from tests.conftest import run_cli
from tests.distributed.test_torchrun import FP32, Tol, metrics

# 4 x 2 = 8 examples per step over 24 examples: 3 steps per epoch; each rank runs one micro-batch of 4 per step
FT = {"task": "demo_arith", "max_examples": 24, "cutoff_len": 512, "train.micro_batch_size": 4,
      "train.grad_accum": 2, "train.epochs": 2, "optim.lr": 3e-3, "train.log_every": 1, "train.threads": 1,
      "train.precision": "fp32", "train.checkpoint_every": 2}
LONG = {**FT, "train.epochs": 4}  # 12 steps: room to kill mid-way


def ft_args(pre: Path, out: Path, base: dict = FT, **extra) -> list[str]:
    return [f"{k}={v}" for k, v in {"init_from": str(pre), "out_dir": str(out), **base, **extra}.items()]


def torchrun_cmd(pre: Path, out: Path, *args: str, nproc: int = 2, base: dict = FT, **extra) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "plasticity.cli", "finetune", *ft_args(pre, out, base, **extra), *args]


def torchrun(pre: Path, out: Path, *args: str, base: dict = FT, **extra) -> subprocess.CompletedProcess:
    r = subprocess.run(torchrun_cmd(pre, out, *args, base=base, **extra), capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def one_process(pre: Path, out: Path, *args: str, base: dict = FT, **extra) -> subprocess.CompletedProcess:
    r = run_cli("finetune", *ft_args(pre, out, base, **extra), *args)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def assert_same_finetune(ref: Path, run: Path, tol: Tol = FP32) -> None:
    """Same metric records (steps, tokens, lr exactly; loss and grad norm within `tol`), summary and weights."""
    a, b = metrics(ref), metrics(run)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert (ra["tokens"], ra["lr"]) == (rb["tokens"], rb["lr"]), ra["step"]
        assert rb["loss"] == pytest.approx(ra["loss"], abs=tol.loss_abs), ra["step"]
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=tol.gnorm_rel), ra["step"]
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (ref, run))
    assert sb["status"] == "completed" and (sb["steps"], sb["tokens_seen"]) == (sa["steps"], sa["tokens_seen"])
    assert sb["final_train_loss"] == pytest.approx(sa["final_train_loss"], abs=tol.loss_abs)
    wa, wb = (load_file(str(r / "final" / "model.safetensors")) for r in (ref, run))
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=tol.weight_abs) for k in wa)


@pytest.fixture(scope="module")
def reference(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft_dist") / "one"
    one_process(tiny_run, out)
    return out


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_process(tiny_run, reference, tmp_path, parallel):
    from transformers import AutoModelForCausalLM

    out = tmp_path / parallel
    r = torchrun(tiny_run, out, **{"train.parallel": parallel})
    assert f"2 processes ({parallel}, gloo)" in r.stderr
    assert_same_finetune(reference, out)
    summary = json.loads((out / "summary.json").read_text())
    info = json.loads((out / "run_info.json").read_text())
    assert (summary["world_size"], summary["parallel"]) == (info["world_size"], info["parallel"]) == (2, parallel)
    assert json.loads((reference / "summary.json").read_text())["parallel"] == "none"
    # rank 0 alone wrote the run directory: the same files as one process, checkpoints in the HF format
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in (out / "final").iterdir()) == sorted(p.name for p in (reference / "final").iterdir())
    assert AutoModelForCausalLM.from_pretrained(out / "final").config.model_type == "llama"


def test_activation_checkpointing_changes_no_number(tiny_run, reference, tmp_path):
    out = tmp_path / "ac"
    one_process(tiny_run, out, **{"train.activation_checkpointing": "true"})
    a, b = metrics(reference), metrics(out)
    assert [(r["loss"], r["grad_norm"]) for r in a] == [(r["loss"], r["grad_norm"]) for r in b]
    wa, wb = (load_file(str(r / "final" / "model.safetensors")) for r in (reference, out))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_padded_rows_split_evenly_across_ranks():
    """Micro-batches of different widths (right-padded): each rank gets a contiguous half of the step's rows,
    re-padded to its longest real row; whole micro-batches pass through untouched."""
    def micro(lengths: list[int], start: int) -> dict[str, torch.Tensor]:
        w = max(lengths)
        mask = torch.tensor([[1] * n + [0] * (w - n) for n in lengths])
        ids = (torch.arange(len(lengths) * w).reshape(len(lengths), w) + start) * mask
        return {"input_ids": ids, "labels": ids.masked_fill(mask == 0, -100), "attention_mask": mask}

    step = [micro([3, 5, 2], 0), micro([7, 1, 4], 100)]  # 6 rows, widths 5 and 7
    halves = [shard_rows(step, Dist(rank=r, world_size=2)) for r in range(2)]
    assert [b["input_ids"].shape for b in halves[0]] == [(3, 5)] and halves[0][0] is step[0]
    assert [b["input_ids"].shape for b in halves[1]] == [(3, 7)] and halves[1][0] is step[1]
    thirds = [shard_rows(step, Dist(rank=r, world_size=3)) for r in range(3)]
    assert [[b["input_ids"].shape for b in t] for t in thirds] == [[(2, 5)], [(2, 7)], [(2, 4)]]
    for t, rows in zip(thirds, [(0, 1), (2, 3), (4, 5)], strict=True):
        for r, i in enumerate(rows):
            src, j = step[i // 3], i % 3
            n = int(src["attention_mask"][j].sum())
            assert all(torch.equal(t[0][k][r, :n], src[k][j, :n]) for k in src)
            assert t[0]["attention_mask"][r, n:].sum() == 0 and (t[0]["labels"][r, n:] == -100).all()


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (from /proc: torchrun starts its workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _kill_mid_way(cmd: list[str], run: Path) -> None:
    """Start `cmd` and SIGKILL it and every process under it (torchrun's workers too) once step 4's checkpoint
    exists: the hardest stop, no checkpoint on the way out."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None and not (run / "checkpoints" / "step_0000004").is_dir():
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    victims = [p.pid, *_descendants(p.pid)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()
    for pid in victims[1:]:  # not our children: wait until the kernel has reaped them (their run lock goes with them)
        while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            time.sleep(0.05)
    assert not (run / "summary.json").exists()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


@pytest.mark.slow
def test_killed_fsdp2_run_resumes_in_one_process(tiny_run, tmp_path):
    ref = tmp_path / "ref"
    one_process(tiny_run, ref, base=LONG)
    run = tmp_path / "killed"
    _kill_mid_way(torchrun_cmd(tiny_run, run, base=LONG, **{"train.parallel": "fsdp"}), run)
    r = one_process(tiny_run, run, "--resume", base=LONG)
    assert "resumed from" in r.stderr
    assert_same_finetune(ref, run)
    assert json.loads((run / "summary.json").read_text())["world_size"] == 1


@pytest.mark.slow
def test_killed_one_process_run_resumes_with_ddp(tiny_run, tmp_path):
    ref = tmp_path / "ref"
    one_process(tiny_run, ref, base=LONG)
    run = tmp_path / "killed"
    _kill_mid_way([sys.executable, "-m", "plasticity.cli", "finetune", *ft_args(tiny_run, run, LONG)], run)
    r = torchrun(tiny_run, run, "--resume", base=LONG, **{"train.parallel": "ddp"})
    assert "resumed from" in r.stderr
    assert_same_finetune(ref, run)
    assert json.loads((run / "summary.json").read_text())["parallel"] == "ddp"


def test_activation_checkpointing_keeps_fewer_activations():
    """The option really recomputes the decoder layers: autograd keeps far fewer tensors for backward."""
    from plasticity.models import ModelShape, build_model
    from plasticity.train.distributed import wrap_model

    def saved_bytes(checkpointing: bool) -> int:
        model = build_model(ModelShape("llama2", 64, 128, 4, 4, 4, 128, 64), 0.02, seed=0, device=torch.device("cpu"),
                            bos_id=1, eos_id=2, pad_id=0)
        wrap_model(model, Dist(), "auto", activation_checkpointing=checkpointing)
        model.train()
        total = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(input_ids=torch.randint(3, 128, (2, 64))).logits.float().logsumexp(-1).mean()
        loss.backward()
        return total[0]

    assert saved_bytes(True) < 0.5 * saved_bytes(False)


def test_activation_checkpointing_in_pretraining_changes_no_number(tmp_path):
    from tests.conftest import tiny_overrides

    runs = {}
    for ac in (False, True):
        out = tmp_path / f"ac{ac}"
        extra = {"train.max_steps": 4, "train.log_every": 1, "train.precision": "fp32",
                 "train.activation_checkpointing": str(ac).lower()}
        r = run_cli("pretrain", *tiny_overrides(out, **extra))
        assert r.returncode == 0, r.stderr[-3000:]
        runs[ac] = [(m["loss"], m["grad_norm"]) if "loss" in m else m["val_loss"] for m in metrics(out)]
    assert runs[True] == runs[False]
