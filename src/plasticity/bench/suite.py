"""`plasticity bench`: throughput of every hot path against its plain baseline, measured in ONE process.

Sections: GEMM peaks (fp32, bf16), pretraining (plain Hugging Face eager fp32 loop vs our loop, per preset),
sampling (`model.generate` vs our sampler, k samples per prompt, 16 sequences per forward and all in one
batch), cloze scoring and one analysis pass (attention ranks + parameter norms). Baseline and ours are
interleaved (A/B/A/B...) and the medians are compared, so load from other processes hits both alike; the load
average is recorded with the result. Prints a table and one JSON line.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from plasticity.config import EvaluateConfig
from plasticity.hardware import cpu_flags, cpu_name, default_device, resolve_precision


@dataclass(frozen=True)
class BenchPlan:
    """What one `bench` run measures."""

    train_presets: tuple[str, ...] = ("llama2-small", "llama2-base")
    batch: int = 8
    seq: int = 256
    vocab: int = 4096
    train_steps: int = 6  # steps per timed segment
    repeats: int = 3  # A/B pairs per comparison
    sampler_prompts: int = 8
    sampler_k: int = EvaluateConfig.k  # samples per prompt, as `plasticity evaluate`
    sampler_new: int = 48
    gemm_n: int = 1024
    bf16_gemm_n: int = 256  # bf16 is emulated (slow) without AMX/AVX512-BF16: keep it small there
    cloze_items: int = 64
    compile: bool = False


PLANS = {
    "full": BenchPlan(repeats=5, train_steps=10, sampler_new=64),
    "quick": BenchPlan(train_steps=4, sampler_new=32),
    # seconds, for the test suite: exercises every section on a toy model
    "tiny": BenchPlan(train_presets=("llama2-tiny",), batch=2, seq=32, vocab=512, train_steps=2, repeats=1,
                      sampler_prompts=2, sampler_k=2, sampler_new=4, gemm_n=128, bf16_gemm_n=64,
                      cloze_items=4),
}


def machine_kind() -> str:
    flags = cpu_flags()
    if torch.cuda.is_available():
        return "cuda"
    if "amx_bf16" in flags:
        return "cpu-amx"
    if "avx512f" in flags:
        return "cpu-avx512"
    return "cpu-avx2" if "avx2" in flags else "cpu"


def environment() -> dict[str, Any]:
    import transformers

    flags = cpu_flags()
    return {
        "cpu": cpu_name(), "kind": machine_kind(),
        "flags": sorted(f for f in ("amx_bf16", "amx_tile", "avx512f", "avx512_bf16", "avx2", "fma") if f in flags),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "allocator": os.environ.get("LD_PRELOAD", "") or "system",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "device": str(default_device()),
    }


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


_CLOCK = {"fn": time.perf_counter, "name": "wall"}


def set_clock(name: str) -> None:
    """``wall`` (default) or ``cpu``: this process's CPU seconds, robust to other processes on a shared machine
    (use with 1 thread; with several, spinning worker threads count too)."""
    _CLOCK.update(fn=time.process_time if name == "cpu" else time.perf_counter, name=name)


def _now() -> float:
    return _CLOCK["fn"]()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_peak(dtype: torch.dtype, n: int, device: torch.device, min_seconds: float = 0.3) -> float:
    """Best-of GFLOP/s of an n x n x n matmul."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = a @ b
    best = 0.0
    t_end = _now() + min_seconds
    while True:
        _sync(device)
        t = _now()
        torch.matmul(a, b, out=c)
        _sync(device)
        best = max(best, 2 * n**3 / (_now() - t) / 1e9)
        if _now() > t_end:
            return best


def ab(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median seconds per arm, arms interleaved in rotating order (A B, B A, ...)."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            times[n].append(fns[n]())
    return {n: statistics.median(v) for n, v in times.items()}


# ----------------------------------------------------------------------------------------------- training


class RandomBatches:
    def __init__(self, vocab: int, batch: int, seq: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.data = torch.randint(0, vocab, (16, batch, seq), generator=g)

    def step_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        ids = self.data[step % len(self.data)]
        return [{"input_ids": ids, "labels": ids}]


class HFEager:
    """The plain loop a researcher would write: HF loss from `labels`, AdamW, clip_grad_norm_."""

    def __init__(self, model: torch.nn.Module, batches: RandomBatches, lr: float = 1e-3):
        self.model, self.batches, self.step = model, batches, 0
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
        model.train()

    def run(self, steps: int) -> float:
        dev = next(self.model.parameters()).device
        _sync(dev)
        t = _now()
        for _ in range(steps):
            ids = self.batches.step_batches(self.step)[0]["input_ids"].to(dev)
            loss = self.model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            float(loss.detach())
            self.step += 1
        _sync(dev)
        return _now() - t


class OurLoop:
    """`plasticity.train.loop.train` driven in segments (same model, optimizer and state across them)."""

    def __init__(self, model: torch.nn.Module, batches: RandomBatches, precision: str, run_dir: Path,
                 fast: Any = None, fused_adamw: bool | None = None, lr: float = 1e-3,
                 master_weights: bool = False):
        from plasticity.config import OptimizerConfig, TrainConfig
        from plasticity.train.loop import FastPath, LoopState, TrainJob
        from plasticity.train.optim import build_optimizer

        cfg = TrainConfig(log_every=10**9, checkpoint_fractions=[], precision=precision)  # type: ignore[arg-type]
        opt = build_optimizer(model, OptimizerConfig(lr=lr), "all", fused=fused_adamw)
        self.state = LoopState()
        self.job = TrainJob(model=model, optimizer=opt, batches=batches, total_steps=0, lr_fn=lambda s: lr,
                            run_dir=run_dir, cfg=cfg, device=next(model.parameters()).device,
                            precision=precision, grad_clip=1.0, log=lambda m: None,
                            fast=fast or FastPath(), write_final=False, master_weights=master_weights)

    def run(self, steps: int) -> float:
        from plasticity.train.loop import train

        self.job.total_steps = self.state.step + steps
        _sync(self.job.device)
        t = _now()
        self.state = train(self.job, self.state)
        _sync(self.job.device)
        return _now() - t


def ablation_arms(precision: str) -> dict[str, dict[str, Any]]:
    """The arms of `--ablation` (kwargs of `OurLoop`): the shipped loop, each lever off or on, and compiled."""
    from plasticity.train.loop import FastPath

    arms: dict[str, dict[str, Any]] = {
        "ours": {}, "ours_no_fused_ce": {"fast": FastPath(fused_ce=False)}, "ours_fused_adamw": {"fused_adamw": True},
        "ours_plain": {"fast": FastPath(fused_ce=False), "fused_adamw": False},
        "ours_compile": {"fast": FastPath(compile=True)}}
    if precision == "bf16":  # bf16 copies of fp32 master weights instead of autocast (the CUDA default)
        arms["ours_master_weights"] = {"master_weights": True}
    return arms


def train_flops_per_token(model: torch.nn.Module, seq: int) -> float:
    from plasticity.models import count_params

    cfg = model.config
    return 6.0 * count_params(model).matmul + 12.0 * cfg.num_hidden_layers * cfg.hidden_size * seq


def bench_train(plan: BenchPlan, preset: str, device: torch.device, precision: str,
                arms: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """tok/s of the HF eager fp32 loop and of each arm of ours (kwargs of OurLoop), interleaved."""
    from plasticity.models import PRESETS, build_model

    shape = PRESETS[preset]
    shape = replace(shape, vocab_size=shape.vocab_size or plan.vocab, max_seq_len=max(shape.max_seq_len, plan.seq))
    batches = RandomBatches(shape.vocab_size, plan.batch, plan.seq)
    arms = arms or {"ours": {}}
    runners: dict[str, Any] = {"hf_eager_fp32": HFEager(build_model(shape, seed=0, device=device), batches)}
    with tempfile.TemporaryDirectory() as d:
        for name, kw in arms.items():
            kw = dict(kw)
            runners[name] = OurLoop(build_model(shape, seed=0, device=device), batches,
                                    kw.pop("precision", precision), Path(d), **kw)
        for r in runners.values():  # warm-up: allocator, one-time compile
            r.run(2)
        med = ab({n: (lambda r=r: r.run(plan.train_steps)) for n, r in runners.items()}, plan.repeats)
    tokens = plan.train_steps * plan.batch * plan.seq
    fpt = train_flops_per_token(runners["hf_eager_fp32"].model, plan.seq)
    out: dict[str, Any] = {"preset": preset, "batch": plan.batch, "seq": plan.seq, "precision_ours": precision}
    for n, sec in med.items():
        out[n] = {"tok_per_s": round(tokens / sec, 1), "gflops": round(tokens * fpt / sec / 1e9, 2)}
    base = out["hf_eager_fp32"]["tok_per_s"]
    for n in arms:
        out[n]["speedup"] = round(out[n]["tok_per_s"] / base, 3)
    return out


# ----------------------------------------------------------------------------------------------- sampling

_CORPUS = [
    "Human: What is two plus three?\nAssistant: Two plus three is five. The answer is 5.",
    "Human: Name a colour of the sky.\nAssistant: The sky is blue on a clear day.",
    "The quick brown fox jumps over the lazy dog. A cat sat on the mat.",
    "Weight decay shrinks the weights a little at every optimizer step.",
    "Paris is the capital of France; Rome is the capital of Italy.",
]
PROMPTS = [
    "Human: What is two plus three?\nAssistant:", "Human: Name a colour of the sky.\nAssistant:",
    "The quick brown fox", "Weight decay shrinks",
    "Human: Why is the sky blue on a clear day? Explain briefly.\nAssistant:", "Paris is the capital of",
    "A cat sat", "Human: What is the capital of Italy?\nAssistant: The capital",
]


def toy_lm(device: torch.device, hidden: int = 256, layers: int = 4, vocab: int = 512) -> tuple[Any, Any]:
    """A random Llama with a small BPE tokenizer trained on a few sentences (no files, no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_CORPUS * 8, trainer=trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        padding_side="left")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                             num_hidden_layers=layers, num_attention_heads=8 if hidden >= 128 else 4,
                             num_key_value_heads=4 if hidden >= 128 else 2, max_position_embeddings=512,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        model = LlamaForCausalLM(config).to(device).eval()
    model.generation_config.eos_token_id = None  # every sequence runs to max_new_tokens
    return model, tokenizer


def _ours_sampler(model: Any, tokenizer: Any, prompts: list[str], k: int, new: int, batch_size: int) -> float:
    from plasticity.evaluate import sampler

    cfg = sampler.SamplingConfig(max_new_tokens=new, temperature=1.0, stop_strings=(), batch_size=batch_size,
                                 add_special_tokens=False, eos_token_ids=())
    dev = next(model.parameters()).device
    _sync(dev)
    t = _now()
    sampler.generate(model, tokenizer, prompts, k, cfg)
    _sync(dev)
    return _now() - t


@torch.inference_mode()
def _hf_generate(model: Any, tokenizer: Any, prompts: list[str], k: int, new: int, batch_size: int) -> float:
    """`model.generate(num_return_sequences=k)` on groups of batch_size // k prompts."""
    per_call = max(1, batch_size // k)
    dev = next(model.parameters()).device
    encs = [tokenizer(prompts[i:i + per_call], return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
            for i in range(0, len(prompts), per_call)]
    _sync(dev)
    t = _now()
    for enc in encs:
        model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new,
                       num_return_sequences=k, pad_token_id=tokenizer.pad_token_id)
    _sync(dev)
    return _now() - t


def bench_sampler(plan: BenchPlan, device: torch.device) -> dict[str, Any]:
    model, tokenizer = toy_lm(device, hidden=256 if plan.sampler_new > 8 else 64)
    prompts = PROMPTS[:plan.sampler_prompts]
    k, new = plan.sampler_k, plan.sampler_new
    total = len(prompts) * k
    tokens = total * new
    out: dict[str, Any] = {"prompts": len(prompts), "k": k, "max_new_tokens": new}
    # bf16 decode (`evaluate.precision: bf16`; auto on CUDA) where bf16 is fast: against the same fp32 `generate`
    bf16 = copy.deepcopy(model).to(torch.bfloat16) if resolve_precision("auto", device) == "bf16" else None
    for label, bs in (("bs16", 16), (f"bs{total}", total)):
        fns = {"generate": lambda bs=bs: _hf_generate(model, tokenizer, prompts, k, new, bs),
               "ours": lambda bs=bs: _ours_sampler(model, tokenizer, prompts, k, new, bs)}
        if bf16 is not None:
            fns["ours_bf16"] = lambda bs=bs: _ours_sampler(bf16, tokenizer, prompts, k, new, bs)
        for f in fns.values():
            f()  # warm-up (kernels, CUDA graphs)
        med = ab(fns, plan.repeats)
        out[label] = {n: round(tokens / s, 1) for n, s in med.items()}
        out[label]["speedup"] = round(med["generate"] / med["ours"], 3)
        if bf16 is not None:
            out[label]["speedup_bf16"] = round(med["generate"] / med["ours_bf16"], 3)
    return out


# ----------------------------------------------------------------------------------------- cloze, analysis


def bench_cloze(plan: BenchPlan, device: torch.device) -> dict[str, Any]:
    from plasticity.evaluate.loglikelihood import ClozeItem, cloze_accuracy

    model, tokenizer = toy_lm(device, hidden=256 if plan.cloze_items > 8 else 64)
    items = [ClozeItem(contexts=[PROMPTS[i % len(PROMPTS)]], continuations=[" blue sky", " the cat", " five", " Rome"],
                       gold=i % 4) for i in range(plan.cloze_items)]
    cloze_accuracy(model, tokenizer, items[:2])
    t = _now()
    cloze_accuracy(model, tokenizer, items)
    sec = _now() - t
    return {"items": len(items), "requests_per_s": round(4 * len(items) / sec, 1)}


def bench_analysis(plan: BenchPlan, device: torch.device) -> dict[str, Any]:
    from plasticity.analysis.norms import parameter_norms
    from plasticity.analysis.rank import attention_ranks

    model, _ = toy_lm(device, hidden=256 if plan.cloze_items > 8 else 64)
    t = _now()
    attention_ranks(model)
    parameter_norms(model)
    return {"seconds": round(_now() - t, 3)}


# ------------------------------------------------------------------------------------------------- driver


def run(mode: str = "quick", log: Callable[[str], None] = print, ablation: bool = False) -> dict[str, Any]:
    """Run every section of the plan `mode` ("quick", "full", "tiny"); return the record (also printed)."""
    plan = PLANS[mode]
    device = default_device()
    precision = resolve_precision("auto", device)
    env = environment()
    rec: dict[str, Any] = {"bench": "plasticity", "mode": mode, **env, "precision_auto": precision,
                           "clock": _CLOCK["name"]}
    t0 = time.perf_counter()
    rec["load_start"] = loadavg()
    fast_bf16 = precision == "bf16"
    rec["gemm_gflops"] = {"fp32": round(gemm_peak(torch.float32, plan.gemm_n, device), 1),
                          "bf16": round(gemm_peak(torch.bfloat16, plan.gemm_n if fast_bf16 else plan.bf16_gemm_n,
                                                  device, 0.3 if fast_bf16 else 0.05), 1)}
    log(f"GEMM peak: fp32 {rec['gemm_gflops']['fp32']} GFLOP/s, bf16 {rec['gemm_gflops']['bf16']} GFLOP/s")
    arms = ablation_arms(precision) if ablation else {"ours": {}}
    rec["train"] = []
    for preset in plan.train_presets:
        r = bench_train(plan, preset, device, precision, arms)
        r["ours"]["pct_of_peak"] = round(100 * r["ours"]["gflops"] / rec["gemm_gflops"][
            "bf16" if precision == "bf16" else "fp32"], 1)
        rec["train"].append(r)
        log(f"train {preset}: ours {r['ours']['tok_per_s']:,.0f} tok/s vs HF eager fp32 "
            f"{r['hf_eager_fp32']['tok_per_s']:,.0f} tok/s = {r['ours']['speedup']}x")
    rec["sampler"] = bench_sampler(plan, device)
    log(f"sampler: {json.dumps(rec['sampler'])}")
    rec["cloze"] = bench_cloze(plan, device)
    rec["analysis"] = bench_analysis(plan, device)
    rec["load_end"] = loadavg()
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def table(rec: dict[str, Any]) -> str:
    lines = [f"{'what':<44}{'baseline':>14}{'ours':>14}{'ratio':>8}"]
    for r in rec["train"]:
        for arm, v in r.items():
            if isinstance(v, dict) and "speedup" in v:
                lines.append(f"{'train ' + r['preset'] + ' tok/s (' + arm + ')':<44}"
                             f"{r['hf_eager_fp32']['tok_per_s']:>14,.0f}{v['tok_per_s']:>14,.0f}{v['speedup']:>7.2f}x")
        o = r["ours"]
        lines.append(f"{'  ours GFLOP/s, % of GEMM peak':<44}{'':>14}{o['gflops']:>14,.1f}{o['pct_of_peak']:>7.1f}%")
    s = rec["sampler"]
    for key, v in s.items():
        if isinstance(v, dict):
            lines.append(f"{'sampler tok/s, k=' + str(s['k']) + ', ' + key:<44}{v['generate']:>14,.0f}"
                         f"{v['ours']:>14,.0f}{v['speedup']:>7.2f}x")
            if "ours_bf16" in v:
                lines.append(f"{'  ours with bf16 decode (evaluate.precision)':<44}{'':>14}{v['ours_bf16']:>14,.0f}"
                             f"{v['speedup_bf16']:>7.2f}x")
    lines.append(f"{'cloze requests/s':<44}{'':>14}{rec['cloze']['requests_per_s']:>14,.1f}")
    lines.append(f"{'analysis pass (ranks + norms), s':<44}{'':>14}{rec['analysis']['seconds']:>14.3f}")
    lines.append(f"GEMM peak fp32 {rec['gemm_gflops']['fp32']} / bf16 {rec['gemm_gflops']['bf16']} GFLOP/s; "
                 f"{rec['cpu']} [{rec['kind']}: {' '.join(rec['flags'])}], {rec['threads']} threads, "
                 f"allocator {rec['allocator']}, torch {rec['torch']}, transformers {rec['transformers']}, "
                 f"load {rec['load_start']}->{rec['load_end']}, {rec['seconds']} s")
    return "\n".join(lines)

