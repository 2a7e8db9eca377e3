"""`plasticity evaluate --workers 2` (torchrun, CPU/gloo) writes the files of one process byte for byte: every
metric, every per-item record and samples.jsonl, for sampled CoT with a reward model (RM@k), and for cloze scoring
(raw and in the fine-tuning template) with the held-out loss. Each batched computation is split by whole batches
(`plasticity.evaluate.shard`), so each number comes from the same batch as in one process."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plasticity.evaluate.sampler import SamplingConfig, generate
from plasticity.evaluate.shard import Shard
from tests.conftest import run_cli


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


@pytest.mark.parametrize("family", ["cot", pytest.param("cloze", marks=pytest.mark.slow)])
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


class _Exchange:
    """What `torch.distributed.all_gather_object` does, between threads."""

    def __init__(self, n: int):
        self.barrier, self.slots = threading.Barrier(n), [None] * n


@dataclass(frozen=True)
class _ThreadShard(Shard):
    ex: Any = None

    def merge(self, values):
        self.ex.slots[self.rank] = values
        self.ex.barrier.wait()
        parts = list(self.ex.slots)
        self.ex.barrier.wait()  # nobody overwrites a slot before every rank has read them all
        return [next((p[i] for p in parts if p[i] is not None), None) for i in range(len(values))]


def _two_ranks(fn):
    """fn(shard) run as two ranks (threads) that gather like torchrun's; both results."""
    ex = _Exchange(2)
    with ThreadPoolExecutor(2) as pool:
        return [f.result() for f in [pool.submit(fn, _ThreadShard(r, 2, ex)) for r in range(2)]]


def test_every_batched_scorer_splits_into_the_single_process_numbers(llama, tokenizer, rm_dir):
    """cloze log-likelihoods (raw and templated), held-out losses and reward scores: two ranks, each computing
    its own batches, give exactly (==) the floats of one process."""
    from plasticity.evaluate.heldout import example_losses
    from plasticity.evaluate.loglikelihood import ClozeItem, cloze_accuracy
    from plasticity.evaluate.reward import HFRewardModel

    items = [ClozeItem(contexts=[f"Question {i}: which one fits{' well' * (i % 4)}?\nAnswer:"] * 3,
                       continuations=[" blue", " the lazy dog" * (1 + i % 2), " five"], gold=i % 3) for i in range(9)]
    template = "Human: {question}\nAssistant: {response}"
    pairs = [(f"What is {i} plus {i}?" + " Think." * (i % 3), f"{i} + {i} = {2 * i}. The answer is {2 * i}.")
             for i in range(9)]
    rm = HFRewardModel(str(rm_dir), device="cpu", batch_size=2)
    calls = {
        "cloze": lambda sh: cloze_accuracy(llama, tokenizer, items, batch_size=4, shard=sh)["per_item"],
        "cloze_template": lambda sh: cloze_accuracy(llama, tokenizer, items, batch_size=4, template=template,
                                                    shard=sh)["per_item"],
        "heldout": lambda sh: example_losses(llama, tokenizer, template, pairs, batch_size=4, shard=sh),
        "reward": lambda sh: rm.score([template.split("{response}")[0].format(question=q) for q, _ in pairs],
                                      [r for _, r in pairs], shard=sh),
    }
    for name, call in calls.items():
        one = call(Shard())
        two = _two_ranks(call)
        assert two[0] == two[1] == one, name
