"""Model families beyond Llama / OLMo-2 (issue 29): Mistral, Qwen2, Qwen3 and GPT-NeoX (fused QKV).

Tiny random-initialised models of each family, built offline: the attention pseudo-rank read through each
family's adapter equals a direct SVD of W_QK / W_VP rebuilt from the modules' outputs the way HF's attention
forward splits them into heads; greedy decoding of the families the lean Llama step does not cover goes
through the HF forward and equals `model.generate`; `plasticity evaluate` and `plasticity analyze` run end to
end on tiny GPT-NeoX, Qwen2 and Mistral checkpoints saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from plasticity import architectures
from plasticity.analysis.rank import attention_ranks, pseudo_rank
from plasticity.evaluate import engine
from plasticity.evaluate.sampler import generate
from tests.conftest import DEVICES, run_cli
from tests.evaluate.conftest import make_tokenizer
from tests.evaluate.test_sampler import _greedy, _hf_greedy

FAMILIES = ["llama", "olmo2", "mistral", "qwen2", "qwen3", "gpt_neox"]


def tiny(family: str, seed: int = 0, vocab_size: int = 128) -> torch.nn.Module:
    """A random model whose weight spectra decay (input columns scaled by 0.02..1), so heads differ in rank."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(architectures.tiny_config(family, vocab_size=vocab_size))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))  # norm gains and biases
            else:
                scale = torch.logspace(0, -1.7, p.shape[1])[torch.randperm(p.shape[1], generator=g)]
                p.copy_(0.2 * torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def direct_ranks(model: torch.nn.Module, layer: int, threshold: float = 0.95) -> list[tuple[int, int]]:
    """(qk, vp) pseudo-rank per query head from full hidden x hidden matrices, with the projections applied to
    the identity basis and split into heads as HF's attention forward splits its activations."""
    g = architectures.geometry(model)
    hid, nh, nkv, d = g.hidden_size, g.num_heads, g.num_kv_heads, g.head_dim
    eye = torch.eye(hid, dtype=torch.float64)

    def apply(lin: torch.nn.Linear) -> torch.Tensor:  # x W^T for every basis vector x, without the bias
        return torch.nn.functional.linear(eye, lin.weight.detach().double())

    if architectures.model_type(model) == "gpt_neox":
        attn = model.gpt_neox.layers[layer].attention
        q, k, v = apply(attn.query_key_value).view(hid, nh, 3 * d).chunk(3, dim=-1)  # HF: view, then chunk
        o = attn.dense.weight.detach().double()
    else:
        attn = model.model.layers[layer].self_attn
        q = apply(attn.q_proj).view(hid, nh, d)
        k, v = apply(attn.k_proj).view(hid, nkv, d), apply(attn.v_proj).view(hid, nkv, d)
        o = attn.o_proj.weight.detach().double()
    out = []
    for h in range(nh):
        kv = h // (nh // nkv)
        w_qk = k[:, kv, :] @ q[:, h, :].T  # W_K^T W_Q: [hidden, hidden]
        w_vp = o[:, h * d:(h + 1) * d] @ v[:, kv, :].T  # W_O^h W_V
        out.append((pseudo_rank(torch.linalg.svdvals(w_qk), threshold),
                    pseudo_rank(torch.linalg.svdvals(w_vp), threshold)))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_pseudo_rank_equals_direct_svd(family):
    model = tiny(family, seed=FAMILIES.index(family))
    res = attention_ranks(model, 0.95)
    assert res["num_layers"] == 2 and res["max_rank"] == architectures.geometry(model).head_dim
    seen = set()
    for layer in res["layers"]:
        want = direct_ranks(model, layer["layer"])
        got = [(h["qk"]["rank"], h["vp"]["rank"]) for h in layer["heads"]]
        assert got == want, (family, layer["layer"])
        seen |= set(got)
    assert len(seen) > 1  # the spectra differ across heads: a wrong head split would show


def test_fused_qkv_adapter_reads_neox_head_layout():
    """GPT-NeoX interleaves q|k|v per head: head h's query rows are h*3d .. h*3d+d of query_key_value."""
    model = tiny("gpt_neox")
    d = architectures.geometry(model).head_dim
    hw = architectures.head_weights(model, 1)
    w = model.gpt_neox.layers[1].attention.query_key_value.weight.double()
    for h in range(4):
        assert torch.equal(hw.wq[h], w[h * 3 * d:h * 3 * d + d])
        assert torch.equal(hw.wk[h], w[h * 3 * d + d:h * 3 * d + 2 * d])
        assert torch.equal(hw.wv[h], w[h * 3 * d + 2 * d:(h + 1) * 3 * d])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3", "gpt_neox"])
def test_other_families_decode_through_the_hf_forward(family, device):
    tok = make_tokenizer()
    model = tiny(family, vocab_size=len(tok)).to(device)
    assert not engine.supports(model)  # the engine's step is Llama's and OLMo-2's; these keep the HF forward
    prompts = ["Human: What is two plus three?", "The quick brown fox", "Paris is"]
    out = generate(model, tok, prompts, 1, _greedy(max_new_tokens=12))
    assert [s[0].token_ids for s in out] == _hf_greedy(model, tok, prompts, 12)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    tok = make_tokenizer()
    out = {}
    for family in ("gpt_neox", "qwen2", "mistral"):
        d = root / family
        tiny(family, vocab_size=len(tok) + 16).save_pretrained(d)  # room for a family tokenizer's own specials
        tok.save_pretrained(d)
        out[family] = d
    return out


@pytest.mark.parametrize("family", ["gpt_neox", "qwen2", "mistral"])
def test_evaluate_and_analyze_end_to_end(saved, family, tmp_path):
    d = saved[family]
    r = run_cli("evaluate", str(d), "--task", "demo_arith", "--k", "2", "--max-questions", "2",
                "--max-new-tokens", "8", "--out", str(tmp_path / "eval"))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "eval" / "demo_arith.json").read_text())
    assert {"greedy", "maj@2", "pass@2"} <= set(res["metrics"])
    r = run_cli("analyze", str(d), "--what", "rank,norms", "--out", str(tmp_path / "an"))
    assert r.returncode == 0, r.stderr[-2000:]
    rank = json.loads((tmp_path / "an" / "rank.json").read_text())["checkpoints"][-1]
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    assert [[(h["qk"]["rank"], h["vp"]["rank"]) for h in layer["heads"]] for layer in rank["layers"]] == [
        direct_ranks(model, i) for i in range(2)]
    norms = json.loads((tmp_path / "an" / "norms.json").read_text())
    names = [g["name"] for g in norms["groups"]]
    assert names == ["embedding", "layers.0", "layers.1", "final_norm", "lm_head"]  # nothing left in "other"


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral"])
def test_finetune_other_families(family, tmp_path):
    """Fine-tuning loads, trains and saves each family (GPT-NeoX: the study test below)."""
    import math

    import plasticity

    tok, d = make_tokenizer(), tmp_path / family
    tiny(family, vocab_size=len(tok) + 16).save_pretrained(d)
    tok.save_pretrained(d)
    s = plasticity.finetune({"init_from": str(d), "task": "demo_arith", "task_options": {"n_train": 16, "n_test": 4},
                             "cutoff_len": 256, "out_dir": str(tmp_path / "ft"), "optim": {"lr": 1e-3},
                             "train": {"micro_batch_size": 8, "grad_accum": 1, "epochs": 1, "precision": "fp32"}})
    assert s["status"] == "completed" and s["steps"] == 2 and math.isfinite(s["final_train_loss"])
    saved = json.loads((tmp_path / "ft" / "final" / "config.json").read_text())
    assert saved["model_type"] == family


def test_checkpoints_study_over_neox_training_steps(tmp_path):
    """configs/study-pythia-over-training.yaml at tiny scale: GPT-NeoX 'training-step revisions' of one Hub repo
    (served offline by the mock Hub) analysed, fine-tuned and evaluated; one results row per revision."""
    import csv

    import yaml

    from plasticity.study.plan import build_plan
    from plasticity.study.spec import load_spec

    shipped = load_spec(Path(__file__).resolve().parents[2] / "configs" / "study-pythia-over-training.yaml")
    assert {c.path for c in shipped.checkpoints.values()} == {"EleutherAI/pythia-160m"}
    assert all(c.revision == name and name.startswith("step") for name, c in shipped.checkpoints.items())
    hub, tok = tmp_path / "hub", make_tokenizer()
    for seed, rev in enumerate(("step1000", "step143000")):
        d = hub / f"EleutherAI__pythia-160m@{rev}"
        tiny("gpt_neox", seed=seed, vocab_size=len(tok)).save_pretrained(d)
        tok.save_pretrained(d)
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "neox-steps", "out_dir": str(tmp_path / "out"),
        "checkpoints": {rev: {"path": "EleutherAI/pythia-160m", "revision": rev} for rev in ("step1000", "step143000")},
        "analyze": ["rank", "norms"],
        "finetune": {"task": "demo_arith", "task_options": {"n_train": 16, "n_test": 4}, "cutoff_len": 256,
                     "optim": {"lr": 0.001}, "train": {"micro_batch_size": 8, "epochs": 1, "threads": 1}},
        "evaluate": {"k": 2, "max_questions": 2, "max_new_tokens": 8, "batch_size": 8, "stability_sequences": 8,
                     "stability_tasks": ["demo_choice"], "stability_max_questions": 4}}, sort_keys=False))
    r = run_cli("study", str(spec), "--workers", "1", "--no-report", env={"PLASTICITY_HUB_MOCK": str(hub)})
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    with open(tmp_path / "out" / "neox-steps" / "results.csv") as f:
        rows = {row["checkpoint"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["step1000", "step143000"]
    plan = build_plan(load_spec(spec))
    labels = sorted(n.label for n in plan.nodes.values() if n.kind == "finetune")
    assert labels == ["checkpoint=step1000", "checkpoint=step143000"]  # the entry named once
    assert rows["step1000"]["weights_sha256"] != rows["step143000"]["weights_sha256"]
    assert "identical weights" not in r.stdout + r.stderr
    for seed, rev in enumerate(("step1000", "step143000")):
        row = rows[rev]
        assert row["status"] == "completed" and row["source"] == f"EleutherAI/pythia-160m@{rev}"
        model = tiny("gpt_neox", seed=seed, vocab_size=len(tok))
        want = [q for i in range(2) for q, _ in direct_ranks(model, i)]
        assert float(row["qk_rank_frac"]) == pytest.approx(sum(want) / len(want) / 8)
        assert row["demo_arith/demo_arith/pass@2"] != ""


def test_weights_digest_spots_revisions_that_serve_one_file(tmp_path):
    """A Hub snapshot links to blobs named by their sha256 (read for free), a plain dir is hashed: one digest for
    the same weights either way; the study warns when two entries hold the same weights."""
    from plasticity.checkpoints import sha256_file, weights_digest
    from plasticity.study.stages.checkpoint import CheckpointStage

    plain, other, snap = tmp_path / "plain", tmp_path / "other", tmp_path / "snap"
    for d in (plain, other, snap):
        d.mkdir()
    (plain / "model.safetensors").write_bytes(b"weights-a")
    (other / "model.safetensors").write_bytes(b"weights-b")
    blob = tmp_path / sha256_file(plain / "model.safetensors")
    blob.write_bytes(b"weights-a")
    (snap / "model.safetensors").symlink_to(blob)
    assert weights_digest(plain) == weights_digest(snap) != weights_digest(other)
    logged: list[str] = []
    rows = [{"checkpoint": "step1000", "weights_sha256": "x"}, {"checkpoint": "step2000", "weights_sha256": "x"},
            {"checkpoint": "step3000", "weights_sha256": "y"}]
    CheckpointStage().review(rows, logged.append)
    assert len(logged) == 1 and "step1000, step2000 have identical weights" in logged[0]
