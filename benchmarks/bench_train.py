"""Training throughput: our loop vs a plain HF eager fp32 loop, same preset, same process (A/B interleaved).

Thin wrapper over `plasticity.bench.suite` (what `plasticity bench` runs). Prints one JSON line.
Usage: python benchmarks/bench_train.py [--preset llama2-small] [--steps 4] [--repeats 3] [--ablation]
       [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from plasticity.bench.suite import PLANS, ablation_arms, bench_train, environment, loadavg, set_clock
from plasticity.hardware import default_device, resolve_precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama2-small")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"))
    ap.add_argument("--ablation", action="store_true", help="each lever off, and torch.compile on")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    set_clock(a.clock)
    plan = replace(PLANS["quick"], train_steps=a.steps, repeats=a.repeats, batch=a.batch, seq=a.seq)
    device = default_device()
    precision = resolve_precision("auto", device)
    arms = ablation_arms(precision) if a.ablation else {"ours": {}}
    load = loadavg()
    r = bench_train(plan, a.preset, device, precision, arms)
    print(json.dumps({"benchmark": "train_throughput", "clock": a.clock, **environment(), "load_start": load,
                      "load_end": loadavg(), **r}))


if __name__ == "__main__":
    main()
