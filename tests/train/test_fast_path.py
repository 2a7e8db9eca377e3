"""The optimized training step (fused linear + cross-entropy, fused AdamW, one host sync per step) gives the
plain loop's loss curve; the fused loss and its gradients equal the plain ones; a compile failure falls back."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from plasticity.config import OptimizerConfig, TrainConfig
from plasticity.models import PRESETS, build_model
from plasticity.train.fused_ce import linear_cross_entropy
from plasticity.train.loop import PLAIN, FastPath, LoopState, TrainJob, train
from plasticity.train.optim import build_optimizer
from tests.conftest import DEVICES


def _batches(vocab: int, bs: int = 4, seq: int = 32, ignore_tail: bool = True):
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (8, bs, seq), generator=g)

    class Src:
        def step_batches(self, step):
            ids = data[step % len(data)]
            labels = ids.clone()
            if ignore_tail:
                labels[0, -5:] = -100  # padding-like targets are ignored
            return [{"input_ids": ids, "labels": labels}, {"input_ids": ids.flip(0), "labels": ids.flip(0)}]

    return Src()


def _curve(tmp_path, fast: FastPath, fused_adamw: bool | None, precision: str = "fp32", steps: int = 8,
           preset: str = "llama2-tiny", logs: list[str] | None = None, device: str = "cpu",
           master_weights: bool = False) -> list[float]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    shape = replace(PRESETS[preset], vocab_size=256)
    model = build_model(shape, seed=0, device=torch.device(device))
    cfg = TrainConfig(log_every=1, checkpoint_fractions=[], precision=precision)  # type: ignore[arg-type]
    opt = build_optimizer(model, OptimizerConfig(lr=3e-3), "all", fused=fused_adamw)
    job = TrainJob(model=model, optimizer=opt, batches=_batches(256), total_steps=steps, lr_fn=lambda s: 3e-3,
                   run_dir=tmp_path, cfg=cfg, device=torch.device(device), precision=precision, grad_clip=1.0,
                   log=(logs.append if logs is not None else lambda m: None), fast=fast, write_final=False,
                   master_weights=master_weights)
    losses: list[float] = []
    import json

    train(job, LoopState())
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            losses.append(rec["loss"])
    return losses


@pytest.mark.parametrize("n,vocab,chunk", [(37, 50, 8), (64, 300, 64)])
def test_fused_ce_equals_plain_loss_and_grads(n, vocab, chunk):
    torch.manual_seed(0)
    h = torch.randn(n, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(vocab, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, vocab, (n,))
    t[::5] = -100
    ref = F.cross_entropy(h @ w.T, t, ignore_index=-100, reduction="sum") / 7
    gh, gw = torch.autograd.grad(ref * 3, (h, w))
    got = linear_cross_entropy(h, w, t, scale=1 / 7, chunk=chunk)
    fh, fw = torch.autograd.grad(got * 3, (h, w))
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(fh, gh, rtol=1e-10, atol=1e-12) and torch.allclose(fw, gw, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_optimized_loop_matches_plain_loop_fp32(tmp_path, device):
    plain = _curve(tmp_path / "plain", PLAIN, fused_adamw=False, device=device)
    fast = _curve(tmp_path / "fast", FastPath(fused_ce=True), fused_adamw=True, device=device)  # fused CE forced on
    assert len(plain) == len(fast) == 8
    assert plain[-1] < plain[0]  # it learns
    # same math, different summation order: fp32 rounding only
    for a, b in zip(plain, fast, strict=True):
        assert math.isclose(a, b, rel_tol=2e-5), (plain, fast)


@pytest.mark.parametrize("device", DEVICES)
def test_optimized_loop_matches_plain_loop_bf16(tmp_path, device):
    """bf16 autocast (the AMX path): each matmul rounds its inputs to bf16 (8 mantissa bits, relative error
    2^-9 per operand), so logits differ by ~2^-8 relative between the two orders of operations; over a few
    steps the loss curves agree to a few bf16 ulps of the loss, not to fp32 precision."""
    plain = _curve(tmp_path / "plain", PLAIN, fused_adamw=False, precision="bf16", steps=3, device=device)
    fast = _curve(tmp_path / "fast", FastPath(fused_ce=True), fused_adamw=True, precision="bf16", steps=3,
                  device=device)
    eps_bf16 = 2.0**-8
    for a, b in zip(plain, fast, strict=True):
        assert abs(a - b) <= 4 * eps_bf16 * abs(a), (plain, fast)


def test_compile_failure_falls_back_with_one_warning(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    logs: list[str] = []
    plain = _curve(tmp_path / "plain", PLAIN, fused_adamw=False, steps=3)
    got = _curve(tmp_path / "c", FastPath(compile=True), fused_adamw=False, steps=3, logs=logs)
    warnings = [m for m in logs if "torch.compile" in m]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "training eagerly" in warnings[0]
    assert all(math.isclose(a, b, rel_tol=2e-5) for a, b in zip(plain, got, strict=True))


def test_nonfinite_loss_still_detected(tmp_path):
    """The single combined sync still sees a NaN loss: skip_batch skips, stop raises DivergenceError."""
    from plasticity.errors import DivergenceError

    shape = replace(PRESETS["llama2-tiny"], vocab_size=256)
    model = build_model(shape, seed=0)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    for policy in ("skip_batch", "stop"):
        (tmp_path / policy).mkdir()
        cfg = TrainConfig(log_every=1, checkpoint_fractions=[], precision="fp32", nan_policy=policy,
                          max_skipped_batches=2)  # type: ignore[arg-type]
        job = TrainJob(model=model, optimizer=build_optimizer(model, OptimizerConfig(), "all"),
                       batches=_batches(256), total_steps=2, lr_fn=lambda s: 1e-3, run_dir=tmp_path / policy,
                       cfg=cfg, device=torch.device("cpu"), precision="fp32", grad_clip=1.0, log=lambda m: None,
                       write_final=False)
        if policy == "stop":
            with pytest.raises(DivergenceError):
                train(job, LoopState())
        else:
            assert train(job, LoopState()).skipped_batches == 2


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_model_and_loss_match_plain_loop_fp32(tmp_path, device):
    """`train.compile` without the fused CE (the CUDA default) compiles the model and its loss as one graph;
    the loss curve is the plain loop's up to fp32 rounding (inductor fuses and reorders reductions)."""
    plain = _curve(tmp_path / "plain", PLAIN, fused_adamw=False, steps=4, device=device)
    logs: list[str] = []
    got = _curve(tmp_path / "c", FastPath(fused_ce=False, compile=True), fused_adamw=False, steps=4, logs=logs,
                 device=device)
    assert not [m for m in logs if "warning" in m], logs  # it compiled, no eager fallback
    for a, b in zip(plain, got, strict=True):
        assert math.isclose(a, b, rel_tol=1e-4), (plain, got)


def test_compile_auto_is_on_only_where_it_repays(monkeypatch):
    from plasticity.train import loop

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert loop.resolve_compile(True, cpu, "fp32", 0)[0] is True  # an explicit setting wins
    assert loop.resolve_compile(False, cuda, "bf16", 1e30)[0] is False
    assert loop.resolve_compile("auto", cuda, "bf16", loop.COMPILE_AUTO_FLOPS["cuda"])[0] is True
    on, why = loop.resolve_compile("auto", cuda, "bf16", 1e12)  # a short run: compiling would not pay
    assert on is False and "below" in why
    assert loop.resolve_compile("auto", cpu, "fp32", 1e30)[0] is False  # fp32 CPUs: measured not to pay
    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: True)
    assert loop.resolve_compile("auto", cpu, "bf16", loop.COMPILE_AUTO_FLOPS["cpu"])[0] is True
    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: False)
    assert loop.resolve_compile("auto", cpu, "bf16", 1e30)[0] is False


def test_pretrain_compile_auto_is_off_for_a_tiny_run(tmp_path):
    """The auto rule reaches the loop: a tiny run's log says compile is off (or nothing, on fp32 CPUs) and
    TrainConfig's default is auto."""
    assert TrainConfig().compile == "auto"
    logs: list[str] = []
    _curve(tmp_path / "a", FastPath(), fused_adamw=False, steps=2, logs=logs, precision="bf16")
    assert not [m for m in logs if "torch.compile on" in m], logs
