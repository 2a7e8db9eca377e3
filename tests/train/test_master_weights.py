"""`train.master_weights`: each step runs on bf16 copies of the fp32 weights, which stay the master copy.

The gradients are exactly those of a bf16 model (same kernels on the same bf16 weights), summed over micro-batches
in fp32; the fp32 weights, the optimizer and the checkpoints are untouched by the mode (a resumed run is
bit-identical); the loss curve follows bf16 autocast's within bf16 rounding: both round every matmul's inputs to
bf16 (unit roundoff u = 2**-9), and the bf16 weights additionally round the residual stream and the norms' outputs
at every layer, so the two differ by a few u per op; over a few steps the losses agree to 4 x 2**-8 relative, the
bound the optimized-vs-plain bf16 test uses (measured on an AVX512-BF16 CPU over 6 steps: <= 1.3e-4 relative).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from plasticity.errors import ConfigError
from plasticity.models import PRESETS, build_model
from plasticity.train.loop import PLAIN, FastPath, causal_lm_loss
from plasticity.train.master_weights import Bf16Weights, resolve_master_weights
from plasticity.train.run_lifecycle import _config_diffs
from tests.conftest import run_cli, tiny_overrides
from tests.train.test_fast_path import _batches, _curve

BF16_EPS = 2.0**-8
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("preset,tied", [("llama2-tiny", False), ("olmo2-tiny", False), ("llama2-tiny", True)])
def test_gradients_are_a_bf16_models_summed_in_fp32(preset, tied):
    """Also with tied input/output embeddings: one bf16 copy, both uses' gradients summed into it."""
    shape = replace(PRESETS[preset], vocab_size=256, tie_embeddings=tied)
    model = build_model(shape, seed=0)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    ref = copy.deepcopy(model)  # bf16 parameters; the buffers (rotary frequencies) stay fp32 as in the copies
    for p in ref.parameters():
        p.data = p.data.to(torch.bfloat16)
    micro = _batches(256).step_batches(0)
    weights = Bf16Weights(model)
    weights.refresh()
    for b in micro:
        causal_lm_loss(weights, b["input_ids"], None, b["labels"]).backward()
        weights.collect_grads()
        causal_lm_loss(ref, b["input_ids"], None, b["labels"]).backward()
        for p in ref.parameters():  # the reference sums each micro-batch's bf16 gradient in fp32 too
            p.summed = p.grad.float() if not hasattr(p, "summed") else p.summed + p.grad.float()
            p.grad = None
    for (name, p), r in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
        assert torch.equal(p.grad, r.summed), name
    assert all(c.grad is None for c in weights.copies)  # freed after each micro-batch


def test_copies_follow_the_master_weights():
    model = build_model(replace(PRESETS["llama2-tiny"], vocab_size=256), seed=0)
    weights = Bf16Weights(model)
    weights.refresh()
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    weights.refresh()
    assert torch.equal(weights.copy_of(model.lm_head.weight), model.lm_head.weight.to(torch.bfloat16))
    assert all(c.dtype == torch.bfloat16 for c in weights.copies)


@pytest.mark.parametrize("fast", [PLAIN, FastPath(fused_ce=True)], ids=["logits", "fused_ce"])
def test_loss_curve_follows_bf16_autocast(tmp_path, fast):
    amp = _curve(tmp_path / "amp", fast, fused_adamw=False, precision="bf16", steps=4)
    master = _curve(tmp_path / "master", fast, fused_adamw=False, precision="bf16", steps=4, master_weights=True)
    assert len(master) == 4 and all(math.isfinite(x) for x in master)
    for a, b in zip(amp, master, strict=True):
        assert abs(a - b) <= 4 * BF16_EPS * abs(a), (amp, master)


@pytest.mark.slow
def test_compiled_master_weights_follow_eager(tmp_path):
    """torch.compile traces the step through `functional_call` on the bf16 copies (no eager fallback); inductor
    fuses bf16 ops (computing inside a fused kernel in fp32, rounding once), so the curves agree to bf16 rounding."""
    eager = _curve(tmp_path / "eager", PLAIN, fused_adamw=False, precision="bf16", steps=3, master_weights=True)
    logs: list[str] = []
    compiled = _curve(tmp_path / "c", FastPath(fused_ce=False, compile=True), fused_adamw=False, precision="bf16",
                      steps=3, master_weights=True, logs=logs)
    assert not [m for m in logs if "warning" in m], logs
    for a, b in zip(eager, compiled, strict=True):
        assert abs(a - b) <= 4 * BF16_EPS * abs(a), (eager, compiled)


def test_resolution_rules():
    assert resolve_master_weights("auto", CUDA, "bf16", "none", False) == (True, "auto: on for bf16 on CUDA")
    assert resolve_master_weights("auto", CUDA, "bf16", "fsdp", True)[0] is True  # FSDP2 recomputes on bf16 too
    assert resolve_master_weights("auto", CPU, "bf16", "none", False)[0] is False  # measured not to pay on CPUs
    assert resolve_master_weights("auto", CUDA, "fp32", "none", False)[0] is False
    assert resolve_master_weights("auto", CUDA, "bf16", "ddp", False)[0] is False
    assert resolve_master_weights("auto", CUDA, "bf16", "none", True)[0] is False
    assert resolve_master_weights(True, CPU, "bf16", "none", False)[0] is True
    assert resolve_master_weights(False, CUDA, "bf16", "none", False)[0] is False
    for bad, why in [(("fp32", "none", False), "needs bf16"), (("bf16", "ddp", False), "DDP"),
                     (("bf16", "none", True), "activation_checkpointing")]:
        with pytest.raises(ConfigError, match=why):
            resolve_master_weights(True, CPU, *bad)


def test_a_run_written_before_the_option_still_resumes():
    old = {"train": {"precision": "auto", "compile": "auto"}}
    assert _config_diffs(old, {"train": {"precision": "auto", "compile": "auto", "master_weights": "auto"}}) == []
    assert _config_diffs(old, {"train": {"precision": "auto", "compile": "auto", "master_weights": True}}) == [
        "train.master_weights"]


MASTER = {"train.precision": "bf16", "train.master_weights": "true", "train.max_steps": 4,
          "train.checkpoint_fractions": "[0.5]", "train.log_every": 1}


def test_pretrain_cli_with_master_weights_resumes_bit_identically(tmp_path):
    """The real CLI: the log says so, final/ holds fp32 weights, and a run resumed from its step-2 checkpoint ends
    with the same bytes as the run that went straight through (the bf16 copies are rebuilt from the masters)."""
    full = tmp_path / "full"
    r = run_cli("pretrain", *tiny_overrides(full, **MASTER))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "master weights on (train.master_weights=true)" in r.stderr
    assert "warning" not in r.stderr.lower()
    assert json.loads((full / "run_info.json").read_text())["master_weights"] is True
    weights = load_file(str(full / "final" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    part = tmp_path / "part"  # the run as it was when its step-2 snapshot was the newest checkpoint
    shutil.copytree(full, part)
    shutil.rmtree(part / "final")
    (part / "summary.json").unlink()
    r = run_cli("pretrain", *tiny_overrides(part, **MASTER), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step_0000002" in r.stderr
    resumed = load_file(str(part / "final" / "model.safetensors"))
    assert weights.keys() == resumed.keys() and all(torch.equal(weights[k], resumed[k]) for k in weights)
    strip = ("tok_per_s", "elapsed")
    ma, mb = ([{k: v for k, v in json.loads(x).items() if k not in strip} for x in (d / "metrics.jsonl").open()]
              for d in (full, part))
    assert ma == mb
