"""The evaluation sampler against `model.generate` at evaluation scale: P prompts x k samples, up to N new tokens.

A random-init model of a preset's shape (default llama2-0.5b, bf16 weights on CUDA) and a word-level tokenizer
of the model's vocabulary (token ``t<i>`` is id i; no files, no network). Prompts are random token strings of
32-256 tokens. So that completions end at different lengths, as real ones do, `--eos-tokens` ids count as EOS
(default 160 of 32,000: a random model then stops after ~200 tokens on average). Both sides sample at
temperature 1 with the same EOS ids; throughput counts the tokens each side actually generated (up to and
including EOS), per second of wall time.

`generate` runs the way a user would: `model.generate(num_return_sequences=k, do_sample=True)` over groups of
`--hf-prompts` prompts per call (its largest tried batch), on the first `--hf-calls` groups only (its tok/s is a
rate; the full set would take minutes). Ours is `plasticity.evaluate.sampler.generate` over all P prompts.
Where the installed transformers has it, its own continuous batching (`model.generate_batch`, paged KV cache,
CUDA graphs) samples the first `--cb-prompts` prompts x k too, in one call; its tok/s is over the window from the
first request's start to the last one's end (its own `lifespan` stamps), so the manager's setup, memory sizing and
graph capture are not counted (`wall_seconds` includes them).
A greedy check compares the first 8 prompts' greedy completions (32 tokens) with `generate`'s.

    python benchmarks/bench_engine.py [--preset llama2-0.5b] [--prompts 512] [--k 16] [--new 512] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def word_tokenizer(vocab: int):
    """A fast tokenizer whose token ``t<i>`` is id i (ids 0-2: pad, bos, eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", bos_token="t1", eos_token="t2",
                                   padding_side="left")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def continuous_batching(model, tok, prompts: list[str], k: int, new: int, eos: tuple[int, ...],
                        dev: torch.device) -> dict:
    """transformers' continuous batching (`generate_batch`) on `prompts` x k at temperature 1: tok/s counted up to
    and including the first EOS, as for the other two. Its failure is recorded, not raised."""
    from transformers import GenerationConfig

    gc = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new,
                          eos_token_id=list(eos), pad_token_id=0)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    try:
        sync(dev)
        t = time.perf_counter()
        out = model.generate_batch(inputs=[x for x in ids for _ in range(k)], generation_config=gc)
        sync(dev)
        wall = time.perf_counter() - t
        sec = max(r.lifespan[1] for r in out.values()) - min(r.lifespan[0] for r in out.values())
    except Exception as e:  # noqa: BLE001 - a transformers version whose API differs: reported, not fatal
        return {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    stop = set(eos)
    n_tok = 0
    for r in out.values():
        gen = list(r.generated_tokens)
        n_tok += next((i + 1 for i, t in enumerate(gen) if t in stop), len(gen))
    return {"seconds": round(sec, 2), "wall_seconds": round(wall, 2), "tokens": n_tok,
            "tok_per_s": round(n_tok / sec, 1), "requests": len(out), "prompts": len(prompts)}


def main() -> None:
    from plasticity.evaluate import sampler
    from plasticity.models import build_model, get_preset

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama2-0.5b")
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--eos-tokens", type=int, default=160)
    ap.add_argument("--hf-prompts", type=int, default=64)
    ap.add_argument("--hf-calls", type=int, default=1)
    ap.add_argument("--cb-prompts", type=int, default=128, help="prompts for generate_batch (0: skip it)")
    ap.add_argument("--batch-size", type=int, default=None, help="SamplingConfig.batch_size (default: its own)")
    ap.add_argument("--vocab", type=int, default=None, help="model vocabulary (default: the preset's, else 4096)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = get_preset(a.preset)
    vocab = a.vocab or shape.vocab_size or 4096
    from dataclasses import replace

    shape = replace(shape, vocab_size=vocab)
    tok = word_tokenizer(vocab)
    model = build_model(shape, device=dev, bos_id=1, eos_id=2, pad_id=0)
    if dev.type == "cuda":
        model = model.to(torch.bfloat16)
    model.eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(32, 257, (a.prompts,), generator=g).tolist()
    prompts = [" ".join(f"t{int(i)}" for i in torch.randint(3, vocab, (n,), generator=g)) for n in lengths]
    eos = tuple(range(2, 2 + a.eos_tokens))
    rec: dict = {"preset": a.preset, "device": str(dev), "prompts": a.prompts, "k": a.k, "max_new_tokens": a.new,
                 "eos_tokens": len(eos), "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None}

    # ours: all prompts
    cfg = sampler.SamplingConfig(max_new_tokens=a.new, temperature=1.0, stop_strings=(), add_special_tokens=False,
                                 eos_token_ids=eos, seed=0,
                                 **({"batch_size": a.batch_size} if a.batch_size else {}))
    sampler.generate(model, tok, prompts[:4], 2, cfg)  # warm-up (CUDA context, kernels, graphs)
    sync(dev)
    t = time.perf_counter()
    out = sampler.generate(model, tok, prompts, a.k, cfg)
    sync(dev)
    sec = time.perf_counter() - t
    n_tok = sum(s.num_tokens for per in out for s in per)
    rec["ours"] = {"seconds": round(sec, 2), "tokens": n_tok, "tok_per_s": round(n_tok / sec, 1),
                   "mean_len": round(n_tok / (a.prompts * a.k), 1)}

    # generate: the first hf_calls groups of hf_prompts prompts
    n_hf, sec_hf = 0, 0.0
    for c in range(a.hf_calls):
        group = prompts[c * a.hf_prompts:(c + 1) * a.hf_prompts]
        if not group:
            break
        enc = tok(group, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
        sync(dev)
        t = time.perf_counter()
        with torch.inference_mode():
            gen = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=a.new,
                                 num_return_sequences=a.k, pad_token_id=0, eos_token_id=list(eos))
        sync(dev)
        sec_hf += time.perf_counter() - t
        new = gen[:, enc["input_ids"].shape[1]:]
        is_eos = torch.isin(new, torch.tensor(eos, device=dev))
        first = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, torch.full_like(new[:, 0], new.shape[1]))
        n_hf += int(first.sum())
    rec["generate"] = {"seconds": round(sec_hf, 2), "tokens": n_hf, "tok_per_s": round(n_hf / max(sec_hf, 1e-9), 1),
                       "prompts_per_call": a.hf_prompts, "rows_per_call": a.hf_prompts * a.k}
    rec["speedup"] = round(rec["ours"]["tok_per_s"] / max(rec["generate"]["tok_per_s"], 1e-9), 2)
    save(rec, a.json)  # each section's numbers are kept even if a later one runs past a timeout
    if a.cb_prompts and hasattr(model, "generate_batch"):
        rec["generate_batch"] = continuous_batching(model, tok, prompts[:a.cb_prompts], a.k, a.new, eos, dev)
        rec["speedup_vs_generate_batch"] = round(
            rec["ours"]["tok_per_s"] / max(rec["generate_batch"].get("tok_per_s", 0.0), 1e-9), 2)

    # greedy equality on a few prompts
    gcfg = replace(cfg, temperature=0.0, max_new_tokens=32, eos_token_ids=())
    ours_g = sampler.generate(model, tok, prompts[:8], 1, gcfg)
    same = 0
    for i, p in enumerate(prompts[:8]):
        enc = tok([p], return_tensors="pt", add_special_tokens=False).to(dev)
        with torch.inference_mode():
            ref = model.generate(**enc, do_sample=False, max_new_tokens=32, pad_token_id=0, eos_token_id=None)
        same += ref[0, enc["input_ids"].shape[1]:].tolist() == ours_g[i][0].token_ids
    rec["greedy_equal"] = f"{same}/8"
    print(f"{'':15s}{'tok/s':>12s}{'tokens':>12s}{'seconds':>10s}")
    for k in ("generate", "generate_batch", "ours"):
        if "tok_per_s" in rec.get(k, {}):
            print(f"{k:15s}{rec[k]['tok_per_s']:>12,.0f}{rec[k]['tokens']:>12,}{rec[k]['seconds']:>10.1f}")
    print(f"speedup {rec['speedup']}x; greedy equal to generate: {rec['greedy_equal']}")
    print(json.dumps(rec))
    save(rec, a.json)


def save(rec: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(rec, f, indent=1)


if __name__ == "__main__":
    main()
