"""`plasticity evaluate --workers 2` (torchrun, CPU/gloo) writes the files of one process byte for byte: every
metric, every per-item record and samples.jsonl, for sampled CoT with a reward model (RM@k), and for cloze scoring
(raw and in the fine-tuning template) with the held-out loss. Each batched computation is split by whole batches
(`plasticity.evaluate.shard`), so each number comes from the same batch as in one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForSequenceClassification

from plasticity.evaluate.sampler import SamplingConfig, generate
from plasticity.evaluate.shard import Shard
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tokenizer, llama) -> Path:
    d = tmp_path_factory.mktemp("tiny_llama")
    llama.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def rm_dir(ckpt, tmp_path_factory, tokenizer) -> Path:
    d = tmp_path_factory.mktemp("tiny_rm")
    torch.manual_seed(1)
    LlamaForSequenceClassification.from_pretrained(ckpt, num_labels=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def cloze_task(tmp_path_factory) -> Path:
    """A YAML cloze task (no data needed): items of different lengths and choice counts, so batches mix them."""
    d = tmp_path_factory.mktemp("cloze_task")
    words = ["blue", "green", "the lazy dog", "five", "a cat on the mat", "Paris", "Rome", "heavy"]
    rows = [{"q": f"Question {i}: which one fits{' well' * (i % 4)}?", "choices": words[i % 3: i % 3 + 2 + i % 4],
             "answer": i % 2} for i in range(12)]
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "toy_cloze.yaml").write_text("name: toy_cloze\nfamily: cloze\ndata: {train: rows.jsonl, eval: rows.jsonl}\n"
                                      "context_template: '{q}\\nAnswer:'\nchoices_field: choices\n"
                                      "gold_field: answer\n")
    return d / "toy_cloze.yaml"


def _evaluate(out: Path, *args: str) -> None:
    r = run_cli("evaluate", *args, "--out", str(out), "--no-stability", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]


def _same_files(a: Path, b: Path) -> list[str]:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    return names


@pytest.mark.parametrize("family", ["cot", "cloze"])
def test_two_processes_write_the_files_of_one(ckpt, rm_dir, cloze_task, tmp_path, family):
    if family == "cot":
        task, extra = "demo_arith", ["--k", "3", "--max-new-tokens", "12", "--reward-model", str(rm_dir)]
    else:
        task, extra = "toy_cloze", []
    args = [str(ckpt), "--task", str(cloze_task) if family == "cloze" else task, "--max-questions", "10",
            "--batch-size", "4", *extra]
    _evaluate(tmp_path / "one", *args)
    _evaluate(tmp_path / "two", *args, "--workers", "2")
    names = _same_files(tmp_path / "one", tmp_path / "two")
    assert names == [f"{task}.json", f"{task}.samples.jsonl"]
    res = json.loads((tmp_path / "two" / f"{task}.json").read_text())
    assert res["n_questions"] == 10
    records = [json.loads(x) for x in (tmp_path / "two" / f"{task}.samples.jsonl").open()]
    if task == "demo_arith":
        assert {"rm@3", "heldout_loss"} <= set(res["metrics"])
        assert len(records) == 10 * 4 and all(isinstance(r["reward"], float) for r in records)
    else:
        assert {"acc", "acc_norm", "acc_template", "heldout_loss"} <= set(res["metrics"])
        assert len(records) == 10 and all(len(r["logprobs"]) >= 2 for r in records)


class _NoGather(Shard):
    """A rank's own share, without the gather (to see what each rank computes by itself)."""

    def merge(self, values):
        return values


def test_each_rank_decodes_whole_prefill_batches_of_its_own(llama, tokenizer):
    prompts = [f"Human: What is {i} plus {i * 7}?\nAssistant:" + " x" * (i % 5) for i in range(11)]
    cfg = SamplingConfig(max_new_tokens=6, batch_size=4, seed=3)
    whole = generate(llama, tokenizer, prompts, 3, cfg)
    parts = [generate(llama, tokenizer, prompts, 3, cfg, shard=_NoGather(r, 2)) for r in range(2)]
    mine = [{i for i, s in enumerate(p) if s} for p in parts]
    assert mine[0] and mine[1] and not mine[0] & mine[1] and mine[0] | mine[1] == set(range(11))
    assert sorted(map(len, mine)) == [4, 7]  # prefill batches of 4, 4, 3 prompts (longest first), round robin
    for i in range(11):
        assert next(p[i] for p in parts if p[i]) == whole[i]
