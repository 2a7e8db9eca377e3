"""Throughput of plasticity's KV-cache sampler vs `model.generate` on the same tiny random Llama.

Both decode the same prompts with k samples each (temperature 1, no EOS, no stop strings, so every
sequence runs exactly `max_new_tokens`), measured in the same process after one untimed full-size round,
with the order rotated between repeats; the median wall time of the repeats is reported. Runs at
two batch sizes: all sequences in one batch, and 16 sequences per forward (`model.generate` then gets
16 // k prompts per call). Prints one JSON line, then a small table.

    python benchmarks/bench_sampler.py [--threads 1] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from plasticity.evaluate.sampler import SamplingConfig, generate

CORPUS = [
    "Human: What is two plus three?\nAssistant: Two plus three is five. The answer is 5.",
    "Human: Name a colour of the sky.\nAssistant: The sky is blue on a clear day.",
    "The quick brown fox jumps over the lazy dog. A cat sat on the mat.",
    "Weight decay shrinks the weights a little at every optimizer step.",
    "Paris is the capital of France; Rome is the capital of Italy.",
]
PROMPTS = [
    "Human: What is two plus three?\nAssistant:",
    "Human: Name a colour of the sky.\nAssistant:",
    "The quick brown fox",
    "Weight decay shrinks",
    "Human: Why is the sky blue on a clear day? Explain briefly.\nAssistant:",
    "Paris is the capital of",
    "A cat sat",
    "Human: What is the capital of Italy?\nAssistant: The capital",
]


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build(device: str) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 8, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).to(device).eval()
    model.generation_config.eos_token_id = None  # run every sequence to max_new_tokens
    return model, tokenizer


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_ours(model, tokenizer, k: int, max_new: int, batch_size: int, device: str) -> tuple[float, int]:
    cfg = SamplingConfig(
        max_new_tokens=max_new,
        temperature=1.0,
        stop_strings=(),
        batch_size=batch_size,
        add_special_tokens=False,
        eos_token_ids=(),
    )
    sync(device)
    t0 = time.perf_counter()
    out = generate(model, tokenizer, PROMPTS, k, cfg)
    sync(device)
    return time.perf_counter() - t0, sum(s.num_tokens for row in out for s in row)


@torch.inference_mode()
def run_hf(
    model, tokenizer, k: int, max_new: int, device: str, batch_size: int | None = None
) -> tuple[float, int]:
    """`model.generate` with num_return_sequences=k, on groups of batch_size // k prompts (all by default)."""
    per_call = len(PROMPTS) if batch_size is None else max(1, batch_size // k)
    groups = [PROMPTS[i : i + per_call] for i in range(0, len(PROMPTS), per_call)]
    encs = [
        tokenizer(g, return_tensors="pt", padding=True, add_special_tokens=False).to(device) for g in groups
    ]
    sync(device)
    t0 = time.perf_counter()
    n_tokens = 0
    for enc in encs:
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new,
            num_return_sequences=k,
            pad_token_id=tokenizer.pad_token_id,
        )
        n_tokens += int(out[:, enc["input_ids"].shape[1] :].numel())
    sync(device)
    return time.perf_counter() - t0, n_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = build(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    k, max_new = args.k, args.max_new_tokens
    total = len(PROMPTS) * k

    runs = {
        f"hf_bs{total}": lambda: run_hf(model, tokenizer, k, max_new, args.device),
        f"ours_bs{total}": lambda: run_ours(model, tokenizer, k, max_new, total, args.device),
        "hf_bs16": lambda: run_hf(model, tokenizer, k, max_new, args.device, batch_size=16),
        "ours_bs16": lambda: run_ours(model, tokenizer, k, max_new, 16, args.device),
    }
    # One untimed full-size round first: the first large growing-KV-cache run in a process pays for fresh
    # memory pages (glibc mmap threshold), whichever implementation it is. Then rotate the order per repeat.
    for fn in runs.values():
        fn()
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in runs}
    tokens: dict[str, int] = {}
    for rep in range(args.repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            seconds, n_tok = runs[name]()
            times[name].append(seconds)
            tokens[name] = n_tok

    results = {}
    for name in runs:
        med = statistics.median(times[name])
        results[name] = {
            "seconds": round(med, 4),
            "tokens": tokens[name],
            "tokens_per_s": round(tokens[name] / med, 1),
        }
    base = results[f"hf_bs{total}"]["tokens_per_s"]
    record = {
        "bench": "sampler",
        "cpu": cpu_model_name(),
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model_params": n_params,
        "prompts": len(PROMPTS),
        "k": k,
        "max_new_tokens": max_new,
        "repeats": args.repeats,
        "results": results,
        # each run's tokens/s relative to model.generate on all sequences in one batch
        "speedup_vs_hf_bs_all": {n: round(r["tokens_per_s"] / base, 2) for n, r in results.items()},
    }
    print(json.dumps(record))
    print(f"\n{'run':<14} {'seconds':>9} {'tokens':>7} {'tok/s':>9} {'vs hf_bs' + str(total):>10}")
    for name, r in results.items():
        print(
            f"{name:<14} {r['seconds']:>9.3f} {r['tokens']:>7} {r['tokens_per_s']:>9.1f} "
            f"{record['speedup_vs_hf_bs_all'][name]:>10.2f}"
        )
    print(
        f"\n{n_params / 1e6:.2f}M-param Llama, {len(PROMPTS)} prompts x k={k}, {max_new} new tokens, "
        f"{record['device']} / {record['cpu']}, torch threads {record['torch_threads']}"
    )


if __name__ == "__main__":
    main()
