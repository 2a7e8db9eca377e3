"""End to end: pretrain a tiny model on the packaged text, then fine-tune it with the real CLI on the generated
demo_arith task (core, no ../shared/data) and on local GSM8K rows (extra: needs ../shared/data/gsm8k)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from plasticity.data.sft import SFTBatches, encode_example, prompt_text
from tests.conftest import DATA_ROOT, needs_data, run_cli

gsm8k = needs_data("gsm8k", "train.jsonl")
GSM8K = {"task": "gsm8k", "data_root": str(DATA_ROOT)}


@pytest.fixture(scope="module")
def pretrained(tiny_run) -> Path:
    """The session's shared tiny run (tests/conftest.py; 512-token context): fine-tuned, analysed, never changed."""
    return tiny_run


def _ft_args(pre: Path, out: Path, **extra) -> list[str]:
    base = {"init_from": str(pre), "out_dir": str(out), "task": "demo_arith", "max_examples": 24,
            "cutoff_len": 512, "train.micro_batch_size": 4, "train.grad_accum": 2, "train.epochs": 4,
            "optim.lr": 3e-3, "train.log_every": 1, "train.threads": 1}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@gsm8k
def test_finetune_gsm8k_end_to_end(pretrained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "ft"
    r = run_cli("finetune", *_ft_args(pretrained, out, **GSM8K))
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "completed" and s["task"] == "gsm8k" and s["kind"] == "finetune"
    assert s["examples"] + s["dropped_over_cutoff"] == 24
    assert s["total_steps"] == 4 * s["examples"] // 8 or s["total_steps"] == -(-4 * s["examples"] // 8)
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").open() if "loss" in json.loads(x)]
    assert len(losses) == s["total_steps"]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.3, losses  # response-token loss goes down
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.model_type == "llama" and len(tok) <= model.config.vocab_size
    base = load_file(str(pretrained / "final" / "model.safetensors"))
    tuned = load_file(str(out / "final" / "model.safetensors"))
    assert any(not torch.equal(base[k], tuned[k]) for k in base)


def test_prompt_tokens_carry_no_loss(pretrained):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pretrained / "final")
    template = "Human: {question}\nAssistant: {response}"
    ex = encode_example(tok, template, "What is 2+3?", "2+3=5\n#### 5")
    n_prompt = len(tok(prompt_text(template, "What is 2+3?"))["input_ids"])
    assert ex.labels[:n_prompt] == [-100] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == tok.eos_token_id
    assert tok.decode(ex.input_ids[n_prompt:-1]) == "2+3=5\n#### 5"
    b = SFTBatches([ex, encode_example(tok, template, "Hi", "there")], 2, 1, 0, tok.pad_token_id).step_batches(0)[0]
    assert ((b["labels"] != -100) <= (b["attention_mask"] == 1)).all()  # padding never has a label


def test_finetune_resume_is_bit_identical(pretrained, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    extra = {"train.checkpoint_every": 2, "train.epochs": 3}
    ref = tmp_path / "ref"
    assert run_cli("finetune", *_ft_args(pretrained, ref, **extra)).returncode == 0
    run = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "plasticity.cli", "finetune", *_ft_args(pretrained, run, **extra)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None and not any((run / "checkpoints").glob("step_000000[4-9]")):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = run_cli("finetune", *_ft_args(pretrained, run, **extra), "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_file(str(ref / "final/model.safetensors")), load_file(str(run / "final/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_yaml_defined_task_finetunes(pretrained, tmp_path):
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"q": f"What is {i} plus {i}?", "a": f"{i} + {i} = {2 * i}\n#### {2 * i}"})
                            + "\n" for i in range(20)))
    task = tmp_path / "toy_task.yaml"
    task.write_text(f"name: toy_add\nfamily: cot\nanswer_type: numeric\ndata:\n  train: {data}\n  eval: {data}\n"
                    "question_template: '{q}'\nresponse_template: '{a}'\ngold_field: a\n")
    out = tmp_path / "ft_yaml"
    r = run_cli("finetune", *_ft_args(pretrained, out, task=str(task), max_examples=20, **{"train.epochs": 1}))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["examples"] == 20


@pytest.mark.parametrize("extra, needle", [
    ({"task": "no_such_task"}, "no_such_task"),
    ({"init_from": "/nonexistent/run"}, "/nonexistent/run"),
    ({"template": "Q: {question}"}, "template"),
    ({"train.master_weights": "true", "train.precision": "fp32"}, "train.master_weights"),
])
def test_finetune_bad_input_one_line_exit_2(pretrained, tmp_path, extra, needle):
    r = run_cli("finetune", *_ft_args(pretrained, tmp_path / "bad", **extra))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


@gsm8k
def test_evaluate_finetuned_model_on_gsm8k(pretrained, tmp_path):
    """pretrain -> finetune -> `plasticity evaluate` on real GSM8K test rows, plus upstream stability."""
    out = tmp_path / "ft_eval"
    assert run_cli("finetune", *_ft_args(pretrained, out, **GSM8K, **{"train.epochs": 1})).returncode == 0
    args = ["evaluate", str(out), "--max-questions", "5", "--k", "3", "--max-new-tokens", "24",
            "--data-root", str(DATA_ROOT)]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "eval" / "gsm8k.json").read_text())
    assert res["n_questions"] == 5
    assert {"greedy", "maj@3", "pass@3", "correct_ratio", "heldout_loss"} <= set(res["metrics"])
    assert res["metrics"].pop("heldout_loss")["value"] > 0  # nats per response token
    for m in res["metrics"].values():
        assert m["value"] is None or 0.0 <= m["value"] <= 1.0
    samples = [json.loads(x) for x in (out / "eval" / "gsm8k.samples.jsonl").open()]
    assert len(samples) == 5 * 4  # greedy + 3 samples per question
    assert all({"prompt_id", "sample_index", "text", "correct"} <= set(s) for s in samples)
    st = json.loads((out / "eval" / "stability.json").read_text())
    assert st["base_val_loss"] > 0
    assert abs(st["upstream_loss_change"] - (st["finetuned_val_loss"] - st["base_val_loss"])) < 1e-9
    assert st["cloze_sets"] == ["hellaswag", "piqa", "winogrande", "arc_easy", "arc_challenge"]  # App. D, local
    assert abs(st["stability"] - (st["finetuned_avg_acc"] - st["base_avg_acc"])) < 1e-9
    before = (out / "eval" / "gsm8k.samples.jsonl").read_bytes()
    assert run_cli(*args).returncode == 0
    assert (out / "eval" / "gsm8k.samples.jsonl").read_bytes() == before  # same seed, identical files


def test_analyze_cli_on_pretrained_run(pretrained):
    r = run_cli("analyze", str(pretrained), "--what", "rank,norms,gap", "--n-probe", "40")
    assert r.returncode == 0, r.stderr[-3000:]
    rank = json.loads((pretrained / "analysis" / "rank.json").read_text())
    assert [c["step"] for c in rank["checkpoints"]] == [5, 10, 15, 20]
    norms = json.loads((pretrained / "analysis" / "norms.json").read_text())
    assert abs(sum(g["fraction"] for g in norms["groups"]) - 1) < 1e-9
    gap = json.loads((pretrained / "analysis" / "gap.json").read_text())
    assert gap["unseen_seen"] is not None


def test_finetune_with_master_weights(pretrained, tmp_path):
    """Padded, variable-length batches (attention mask) through the bf16 copies: the run completes, learns, and
    keeps fp32 weights."""
    out = tmp_path / "ft_master"
    r = run_cli("finetune", *_ft_args(pretrained, out, **{"train.precision": "bf16", "train.master_weights": "true",
                                                           "train.epochs": 2}))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "master weights on" in r.stderr and "warning" not in r.stderr.lower()
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").open() if "loss" in json.loads(x)]
    assert losses[-1] < losses[0], losses
    assert {t.dtype for t in load_file(str(out / "final" / "model.safetensors")).values()} == {torch.float32}
