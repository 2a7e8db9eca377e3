"""Where a pretraining step's GPU time goes: llama2-0.5b (seq 2048, bf16), our loop's step (forward +
backward, grad clip, fused AdamW), eager, per attention backend, then a torch.profiler trace of the default
backend summed by kernel category (GEMM, attention, fused/elementwise, reductions, optimizer, copies).

    python benchmarks/gpu_profile.py [--preset llama2-0.5b] [--batch 16] [--seq 2048] [--steps 4] [--json OUT]
                                     [--master-weights]

`--master-weights` profiles the step on bf16 copies of the fp32 weights (`train.master_weights`) instead of autocast.

Prints a table and one JSON line. The FLOPs per token are `plasticity models`' (6N + 12 L d T).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time

import torch

from plasticity.config import OptimizerConfig
from plasticity.models import build_model, count_params, flops_per_token, get_preset
from plasticity.train.loop import _clip_grad_norm, sdpa_backends, step_loss
from plasticity.train.master_weights import Bf16Weights
from plasticity.train.optim import build_optimizer

CATEGORIES = [  # first match wins (kernel names of cuBLAS/cuDNN/flash/triton/ATen)
    ("attention", r"flash|fmha|attention|sdpa|cudnn|mha"),
    ("gemm", r"gemm|cutlass|nvjet|sm90_xmma|cublas|matmul|wgmma|sm80_xmma"),
    ("optimizer", r"adam|multi_tensor|foreach|fused_adamw"),
    ("triton (fused)", r"^triton_"),
    ("cross-entropy/softmax", r"softmax|nll|log_softmax|cross_entropy"),
    ("reduction/norm", r"reduce|norm|rms"),
    ("copy/cast", r"copy|memcpy|memset|cast|to_copy|cat"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise|mul|add|silu|neg"),
]


def category(name: str) -> str:
    low = name.lower()
    for cat, pat in CATEGORIES:
        if re.search(pat, low):
            return cat
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama2-0.5b")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--json", default=None)
    ap.add_argument("--master-weights", action="store_true", help="bf16 weight copies instead of autocast")
    a = ap.parse_args()
    dev = torch.device("cuda")
    shape = get_preset(a.preset)
    model = build_model(shape, device=dev)
    fpt = flops_per_token(count_params(model), shape, a.seq)
    opt = build_optimizer(model, OptimizerConfig(lr=1e-4), "all")
    gen = torch.Generator().manual_seed(0)
    micro = [{"input_ids": (ids := torch.randint(0, shape.vocab_size, (a.batch, a.seq), generator=gen)),
              "labels": ids.clone()}]
    tokens = a.batch * a.seq

    weights = Bf16Weights(model) if a.master_weights else None

    def one_step() -> None:
        opt.zero_grad(set_to_none=True)
        if weights is None:
            loss, _, _ = step_loss(model, micro, dev, "bf16")
        else:
            weights.refresh()
            loss, _, _ = step_loss(weights, micro, dev, "fp32", after_backward=weights.collect_grads)
        _clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        float(loss)

    rec: dict = {"preset": a.preset, "batch": a.batch, "seq": a.seq, "flops_per_token": fpt,
                 "precision": "bf16 master weights" if weights is not None else "bf16 autocast", "eager": {}}
    for backend in ("", "flash", "cudnn", "efficient"):
        os.environ["PLASTICITY_SDPA_BACKEND"] = backend
        try:
            with sdpa_backends(dev):
                one_step()
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(a.steps):
                    one_step()
                torch.cuda.synchronize()
                sec = (time.perf_counter() - t) / a.steps
        except Exception as e:  # noqa: BLE001 - a backend that cannot run this shape is reported, not fatal
            rec["eager"][backend or "default"] = {"error": f"{type(e).__name__}: {str(e)[:160]}"}
            continue
        tps = tokens / sec
        rec["eager"][backend or "default"] = {"step_s": round(sec, 4), "tok_per_s": round(tps, 1),
                                              "mfu": round(tps * fpt / 989e12, 4)}
    os.environ["PLASTICITY_SDPA_BACKEND"] = ""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            one_step()
        torch.cuda.synchronize()
    by_cat: dict[str, float] = {}
    top: list[tuple[float, str]] = []
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if us <= 0 or ev.key.startswith(("ProfilerStep", "aten::", "autograd::")):
            continue
        by_cat[category(ev.key)] = by_cat.get(category(ev.key), 0.0) + us / 2e3  # ms per step
        top.append((us / 2e3, ev.key))
    total = sum(by_cat.values())
    rec["profile_ms_per_step"] = {k: round(v, 2) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])}
    rec["profile_top_kernels"] = [(round(ms, 2), name[:90]) for ms, name in sorted(top, reverse=True)[:12]]
    print(f"{a.preset} batch {a.batch} x seq {a.seq}, {rec['precision']}, eager step:")
    for b, v in rec["eager"].items():
        print(f"  sdpa {b:10s} " + (f"{v['tok_per_s']:>10,.0f} tok/s  MFU {100 * v['mfu']:.1f}%" if "mfu" in v
                                    else v["error"]))
    print(f"kernel time by category (ms per step, {total:.1f} ms in all):")
    for k, v in rec["profile_ms_per_step"].items():
        print(f"  {k:24s} {v:9.2f}  {100 * v / max(total, 1e-9):5.1f}%")
    print(json.dumps(rec))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=1)


if __name__ == "__main__":
    main()
