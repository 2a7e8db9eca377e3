"""Sampler throughput: plasticity's KV-cache sampler vs `model.generate` on the same toy Llama, same process.

Thin wrapper over `plasticity.bench.bench_sampler` (what `plasticity bench` runs): k samples per prompt,
temperature 1, no EOS, every sequence runs `max_new_tokens`; 16 sequences per forward and all in one batch;
A/B interleaved medians. Prints one JSON line.
Usage: python benchmarks/bench_sampler.py [--k 16] [--max-new-tokens 48] [--repeats 3] [--threads 1] [--clock cpu]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from plasticity.bench.suite import PLANS, bench_sampler, environment, loadavg, set_clock
from plasticity.hardware import default_device


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    set_clock(a.clock)
    plan = replace(PLANS["quick"], sampler_k=a.k, sampler_new=a.max_new_tokens, repeats=a.repeats)
    load = loadavg()
    r = bench_sampler(plan, default_device())
    print(json.dumps({"benchmark": "sampler", "clock": a.clock, **environment(), "load_start": load,
                      "load_end": loadavg(), **r}))


if __name__ == "__main__":
    main()
