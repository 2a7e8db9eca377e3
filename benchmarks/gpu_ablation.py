"""Training-step ablation at GPU scale: llama2-0.5b (seq 2048, micro-batch 4, bf16 autocast), HF eager fp32 as
the same-run baseline, each lever of our loop on/off (BENCHMARKS.md "GPU (CUDA)"). Prints a table and a JSON line.

    python benchmarks/gpu_ablation.py [--preset llama2-0.5b] [--batch 4] [--seq 2048] [--steps 5] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json

import torch

from plasticity.bench.suite import BenchPlan, bench_train, environment
from plasticity.hardware import default_device
from plasticity.train.loop import FastPath


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama2-0.5b")
    ap.add_argument("--batch", type=int, default=4)  # 8 ran out of memory with all arms resident
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    plan = BenchPlan(train_presets=(a.preset,), batch=a.batch, seq=a.seq, train_steps=a.steps, repeats=a.repeats)
    arms = {"ours": {}, "ours_fused_ce": {"fast": FastPath(fused_ce=True)},
            "ours_no_fused_ce": {"fast": FastPath(fused_ce=False)},
            "ours_compile_fused_ce": {"fast": FastPath(fused_ce=True, compile=True)},
            "ours_compile_no_fused_ce": {"fast": FastPath(fused_ce=False, compile=True)},
            "ours_unfused_adamw": {"fused_adamw": False}}
    device = default_device()
    r = bench_train(plan, a.preset, device, "bf16", arms)
    peak = 989e3 if device.type == "cuda" else None  # GFLOP/s, dense bf16 datasheet (H100/H200 SXM)
    print(f"{'arm':<28}{'tok/s':>12}{'TFLOP/s':>10}{'vs HF fp32':>12}{'MFU':>8}")
    for name, v in r.items():
        if isinstance(v, dict) and "tok_per_s" in v:
            mfu = f"{100 * v['gflops'] / peak:.1f}%" if peak else "-"
            speedup = v.get("speedup", 1.0)
            print(f"{name:<28}{v['tok_per_s']:>12,.0f}{v['gflops'] / 1e3:>10.1f}{speedup:>11.2f}x{mfu:>8}")
    print(json.dumps({"ablation": r, **environment(), "gpu": torch.cuda.get_device_name() if device.type == "cuda"
                      else None}))


if __name__ == "__main__":
    main()
