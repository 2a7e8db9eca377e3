"""Sizing before launch: per-device memory of the paper's Llama-2-4B nodes (FSDP2 over 8 GPUs, activation
checkpointing) from the shape, and the one-line refusal of a 4B fine-tune on one 80 GB GPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from plasticity.config import from_dict
from plasticity.models import get_preset
from plasticity.study.plan import build_plan
from plasticity.study.sizing import check_fits, size_plan
from plasticity.study.spec import StudySpec, load_spec, validate_spec
from plasticity.train import memory as mem
from tests.conftest import run_cli

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper"
GB = 1e9


def _small_4b_study(tmp_path: Path, **resources) -> Path:
    """The paper's 4B study file cut to one weight decay and one task (same base, fine-tuning and evaluation)."""
    spec = yaml.safe_load((PAPER / "study-llama2-4b-20tpp.yaml").read_text())
    spec.update(axes={"optim.weight_decay": [0.1]}, tasks=["metamathqa"], task_axes={}, analyze=[],
                base_config=str(PAPER / spec["base_config"]), out_dir=str(tmp_path / "never_created"))
    spec["resources"].update(resources)
    path = tmp_path / "study-4b.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_4b_finetune_fsdp2_over_8_gpus_fits_with_the_sharded_estimate(tmp_path):
    spec = load_spec(_small_4b_study(tmp_path))
    plan = build_plan(spec)
    sizes = size_plan(plan)
    check_fits(plan, sizes)  # the shipped resources fit 80 GB GPUs
    ft = next(sizes[n] for n, node in plan.nodes.items() if node.kind == "finetune")
    assert (ft.devices, ft.processes, ft.strategy) == (8, 8, "fsdp")
    shape = mem.shape_of(get_preset("llama2-4b"))  # the Llama-2 tokenizer's 32,000 tokens
    est = ft.estimate
    assert est.params == shape.params and 3.5e9 < shape.params < 4.5e9
    # weights + gradients + AdamW moments (16 bytes/param) sharded over 8, plus ~2 gathered fp32 layers (+ grads)
    assert est.state == math.ceil(16 * shape.params / 8) + 16 * mem.layer_params(shape)
    tokens = 8 * 2048  # micro_batch_size x cutoff_len, bf16 activations, checkpointed: layer inputs + one layer
    bf16_weights = 2 * (mem.layer_params(shape) + 32000 * shape.hidden)  # autocast copies: one layer + the head
    assert est.activations == tokens * (shape.layers * shape.hidden + 10 * shape.hidden + 4 * shape.ffn
                                        + 2 * shape.kv_dim) * 2 + bf16_weights
    assert est.logits == 12 * tokens * 32000
    assert 15 * GB < est.total < 30 * GB
    single = mem.estimate(shape, 8, 2048, "bf16")  # one process, no checkpointing: far over an 80 GB GPU
    assert single.state == 16 * shape.params and single.total > 120 * GB


def test_dry_run_prints_devices_memory_and_time_per_node(tmp_path):
    r = run_cli("study", str(_small_4b_study(tmp_path)), "--dry-run", env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [ln for ln in r.stdout.splitlines() if "pretrain-" in ln or "finetune-" in ln or "evaluate-" in ln]
    assert len(rows) == 3
    assert all("8 GPU (fsdp)" in ln and " GB" in ln for ln in rows[:2]) and "1 GPU" in rows[2]
    assert "h" in rows[0].split("│")[-2]  # the pretraining node's time: hundreds of hours on 8 GPUs
    assert "80 GB GPUs (resources.gpu_memory_gb" in " ".join(r.stdout.split())
    assert not (tmp_path / "never_created").exists()


def test_4b_finetune_on_one_80gb_gpu_is_refused_in_one_line(tmp_path):
    r = run_cli("study", str(_small_4b_study(tmp_path, finetune_gpus=1)), "--dry-run")
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    line = lines[0]
    assert line.startswith("error: config error: resources.finetune_gpus: finetune node finetune-")
    assert "on 1 GPU(s) of 80 GB (resources.gpu_memory_gb" in line and "weights, gradients and AdamW state" in line
    assert "resources.finetune_gpus: " in line.split(";")[-1]  # what would fit
    assert not (tmp_path / "never_created").exists()


@pytest.mark.parametrize("resources, key", [({"gpu_memory_gb": 0}, "gpu_memory_gb"),
                                            ({"finetune_nproc": -1}, "finetune_nproc")])
def test_bad_resources_are_config_errors(resources, key):
    from plasticity.errors import ConfigError

    spec = from_dict(StudySpec, {"name": "x", "resources": resources})
    with pytest.raises(ConfigError, match=f"resources.{key}"):
        validate_spec(spec)


@pytest.mark.parametrize("name", sorted(p.name for p in PAPER.glob("study-*.yaml")))
def test_every_paper_study_fits_its_gpus(name):
    """`plasticity study` sizes every node before it starts: the shipped paper studies must pass on 80 GB GPUs."""
    plan = build_plan(load_spec(PAPER / name))
    sizes = size_plan(plan)
    check_fits(plan, sizes)
    assert {plan.nodes[n].kind for n in sizes} == {"pretrain", "finetune", "evaluate"}


def test_estimate_per_device_by_strategy():
    shape = mem.shape_of(get_preset("llama2-1b"))
    one = mem.estimate(shape, 4, 2048, "fp32")
    assert (one.state, one.devices, one.strategy) == (16 * shape.params, 1, "none")  # the single-process estimate
    ddp = mem.estimate(shape, 4, 2048, "fp32", world=8, strategy="ddp")
    fsdp = mem.estimate(shape, 4, 2048, "fp32", world=8, strategy="fsdp")
    assert ddp.state == 20 * shape.params and ddp.activations == fsdp.activations == one.activations
    assert fsdp.state == math.ceil(16 * shape.params / 8) + 16 * mem.layer_params(shape)
    ckpt = mem.estimate(shape, 4, 2048, "fp32", activation_checkpointing=True)
    assert ckpt.activations < one.activations / 5 and ckpt.logits == one.logits
    kv = mem.sampling_estimate(shape, 64, 512, 1024)
    assert kv.kv_cache == 64 * (512 + 1024 + 512) * 2 * shape.layers * shape.kv_dim * 4
    assert kv.state == 4 * shape.params and "KV cache" in kv.parts()
