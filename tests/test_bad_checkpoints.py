"""Tampered, truncated or foreign checkpoints are refused with one line (exit 2); a failed write (disk full)
leaves the previous checkpoint intact."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from plasticity.errors import CheckpointError
from plasticity.train import checkpoint_writer as ckpt
from tests.conftest import TINY_RUN, run_cli, tiny_overrides


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    """The session's shared tiny run (tests/conftest.py): only read or copied here."""
    return tiny_run


def _finetune(init: Path, tmp: Path):
    return run_cli("finetune", f"init_from={init}", f"out_dir={tmp / 'ft'}", "task=demo_arith",
                   "train.max_steps=1", "train.threads=1", timeout=300)


def _one_line_exit_2(r, needle: str) -> None:
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_tampered_weights_are_refused(run, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(run / "final", bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    _one_line_exit_2(_finetune(bad, tmp_path), "sha256")


def test_truncated_weights_are_refused(run, tmp_path):
    bad = tmp_path / "truncated"
    shutil.copytree(run / "final", bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    _one_line_exit_2(_finetune(bad, tmp_path), "truncated")


def test_foreign_architecture_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path / "gpt2"
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    _one_line_exit_2(_finetune(d, tmp_path), "is not Llama, OLMo-2, Mistral, Qwen2, Qwen3 or GPT-NeoX")


def test_resume_with_other_architecture_is_refused(run):
    r = run_cli("pretrain", *tiny_overrides(run, **{**TINY_RUN, "model.preset": "olmo2-tiny"}), "--resume",
                timeout=300)
    _one_line_exit_2(r, "model.preset")


def test_failed_write_keeps_previous_checkpoint(run, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "final")
    target = tmp_path / "ckpt"
    ckpt.save_checkpoint(target, model, None, None, {"step": 1})
    before = json.loads((target / "manifest.json").read_text())

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save_pretrained", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        ckpt.save_checkpoint(target, model, None, None, {"step": 2})
    assert ckpt.verify_checkpoint(target) is None
    assert json.loads((target / "manifest.json").read_text()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt")]  # no temp dirs left behind
