"""Training throughput: our loop (plasticity.train.loop) vs a plain HF eager fp32 loop, same preset, same run.

Prints one JSON line and a table. Usage: python benchmarks/bench_train.py [--preset llama2-mini] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from plasticity.config import OptimizerConfig, ScheduleConfig, TrainConfig
from plasticity.hardware import cpu_name, default_device, hardware_info, resolve_precision
from plasticity.models import PRESETS, build_model, count_params
from plasticity.train.loop import LoopState, TrainJob, train
from plasticity.train.optim import build_optimizer
from plasticity.train.schedule import lr_at


class RandomBatches:
    def __init__(self, vocab: int, bs: int, seq: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.data = torch.randint(0, vocab, (64, bs, seq), generator=g)

    def step_batches(self, step: int):
        ids = self.data[step % len(self.data)]
        return [{"input_ids": ids, "labels": ids}]


def plain_hf(model, batches, steps: int, lr: float) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    t = time.perf_counter()
    for s in range(steps):
        ids = batches.step_batches(s)[0]["input_ids"]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def ours(model, batches, steps: int, lr: float, precision: str) -> float:
    cfg = TrainConfig(log_every=10**9, checkpoint_fractions=[])
    with tempfile.TemporaryDirectory() as d:
        job = TrainJob(model=model, optimizer=build_optimizer(model, OptimizerConfig(lr=lr), "all"),
                       batches=batches, total_steps=steps, run_dir=Path(d), cfg=cfg, device=default_device(),
                       lr_fn=lambda s: lr_at(s, steps, lr, lr / 10, ScheduleConfig()), precision=precision,
                       grad_clip=1.0, log=lambda m: None)
        import plasticity.train.loop as loop

        save_final = loop.save_final
        loop.save_final = lambda job, state: None  # time the loop, not the final checkpoint write
        try:
            t = time.perf_counter()
            train(job, LoopState())
            return time.perf_counter() - t
        finally:
            loop.save_final = save_final


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama2-mini")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    shape = replace(PRESETS[a.preset], vocab_size=PRESETS[a.preset].vocab_size or a.vocab)
    batches = RandomBatches(shape.vocab_size, a.batch, a.seq)
    tokens = a.steps * a.batch * a.seq
    device = default_device()
    precision = resolve_precision("auto", device)
    results = {}
    for name, fn in (("hf_eager_fp32", lambda m: plain_hf(m, batches, a.steps, 1e-3)),
                     ("plasticity_loop", lambda m: ours(m, batches, a.steps, 1e-3, precision))):
        model = build_model(shape, seed=0, device=device)
        fn_w = plain_hf(build_model(shape, seed=1, device=device), batches, a.warmup, 1e-3)  # warm caches
        del fn_w
        sec = fn(model)
        results[name] = {"seconds": round(sec, 3), "tok_per_s": round(tokens / sec, 1)}
    out = {
        "benchmark": "train_throughput", "preset": a.preset, "params": count_params(model).total,
        "steps": a.steps, "batch": a.batch, "seq_len": a.seq, "precision_ours": precision,
        "cpu": cpu_name(), "hardware": hardware_info(device), "results": results,
        "speedup": round(results["plasticity_loop"]["tok_per_s"] / results["hf_eager_fp32"]["tok_per_s"], 3),
    }
    print(json.dumps(out))
    print(f"\n{'loop':<18}{'tok/s':>12}{'seconds':>10}")
    for k, v in results.items():
        print(f"{k:<18}{v['tok_per_s']:>12,.0f}{v['seconds']:>10.2f}")
    print(f"speedup {out['speedup']}x on {out['cpu']} ({torch.get_num_threads()} threads, {precision})")


if __name__ == "__main__":
    main()
