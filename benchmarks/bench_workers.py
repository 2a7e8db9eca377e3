"""Study throughput vs worker layout: W spawn worker processes x T torch threads each, same CPU budget.

Each measurement runs ``--runs`` real pretraining runs (``plasticity.train.pretrain.run_pretrain``, the embedded
default study's settings: packaged:bbc_news, BPE vocab 2048, seq_len 128, micro batch 16, lr 3e-3) for
``--steps`` optimizer steps each, on a spawn ``multiprocessing.Pool(W)`` as the study's local executor does, and
reports total training tokens/s across processes:

- ``study``: all runs' tokens / wall time from pool start to the last result (process start, imports, model
  build, training, final eval and checkpoint write: what a study sees);
- ``loop``: W x all runs' tokens / their summed training-loop time (``summary.json`` ``train_time``).

The baseline is the first layout (default ``1x2``: one worker with all threads), measured in the same run;
``ratio`` is the median over repeats of each repeat's study tok/s over the baseline's (layouts alternate order
between repeats). Prints one JSON line and a table.

Usage: python benchmarks/bench_workers.py [--presets llama2-tiny llama2-small] [--layouts 1x2 2x1] [--repeats 3]
Run under ``source scripts/env.sh`` to measure with tcmalloc when it is installed (recorded as ``allocator``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from plasticity.config import PretrainConfig, deep_merge, from_dict, to_dict, validate
from plasticity.hardware import cpu_name, hardware_info

# the embedded default study's pretraining settings (study default: llama2-tiny)
BASE: dict[str, Any] = {
    "model": {"preset": "llama2-tiny"},
    "tokenizer": {"vocab_size": 2048, "train_documents": 2000},
    "data": {"source": "packaged:bbc_news", "seq_len": 128},
    "optim": {"lr": 0.003, "min_lr": 0.0003},
    "train": {"micro_batch_size": 16, "log_every": 10, "eval_every": 0, "eval_sequences": 64,
              "eval_max_sequences": 256, "checkpoint_fractions": [], "checkpoint_every": 0},
}
WDS = (0.0, 0.1, 1.0, 0.3)


def _config(preset: str, steps: int, i: int, out_dir: Path, threads: int) -> dict[str, Any]:
    over = {"out_dir": str(out_dir), "model": {"preset": preset}, "optim": {"weight_decay": WDS[i % len(WDS)]},
            "train": {"max_steps": steps, "seed": i, "threads": threads}}
    cfg = from_dict(PretrainConfig, deep_merge(BASE, over))
    validate(cfg)
    return to_dict(cfg)


def _run_one(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Worker: one pretraining run; its tokens and loop time (threads come from ``train.threads``)."""
    from plasticity.train.pretrain import run_pretrain

    cfg = from_dict(PretrainConfig, cfg_dict)
    t = time.perf_counter()
    s = run_pretrain(cfg, log=lambda m: None)
    return {"tokens": s["tokens_seen"], "train_time": s["train_time"], "wall": time.perf_counter() - t,
            "status": s["status"], "threads": torch.get_num_threads(), "params": s["params_total"]}


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat; None where unavailable."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(v) - v[3] - v[4]) / hz, sum(v) / hz


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_quiet(max_busy: float, timeout: float) -> float | None:
    """Wait until the machine's CPUs are at most ``max_busy`` busy over 3 s (other users' work); return the last
    busy fraction seen (None where /proc/stat is unavailable)."""
    end, waited = time.time() + timeout, 0
    while True:
        a = _cpu_seconds()
        time.sleep(3)
        b = _cpu_seconds()
        if a is None or b is None:
            return None
        busy = (b[0] - a[0]) / max(b[1] - a[1], 1e-9)
        if busy <= max_busy or time.time() > end:
            return busy
        if waited % 10 == 0:
            print(f"# waiting for a quiet machine: {100 * busy:.0f}% busy", flush=True)
        waited += 1


def measure(preset: str, workers: int, threads: int, runs: int, steps: int) -> dict[str, Any]:
    """Run ``runs`` pretraining runs on a spawn pool of ``workers`` processes with ``threads`` threads each.
    ``foreign_cpu`` is the fraction of the machine's CPU time used by other processes meanwhile (noise)."""
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as d:
        cfgs = [_config(preset, steps, i, Path(d) / f"run{i}", threads) for i in range(runs)]
        c0, own0, t = _cpu_seconds(), _own_cpu(), time.perf_counter()
        pool = mp.get_context("spawn").Pool(workers)
        res = pool.map(_run_one, cfgs, chunksize=1)
        pool.close()
        pool.join()  # workers exit normally, so their CPU time is counted in os.times().children_*
        wall = time.perf_counter() - t
        c1, own = _cpu_seconds(), _own_cpu() - own0
    bad = [r for r in res if r["status"] != "completed" or r["threads"] != threads]
    if bad:
        raise RuntimeError(f"unexpected run result: {bad}")
    tokens = sum(r["tokens"] for r in res)
    foreign = None
    if c0 and c1:
        foreign = max(0.0, (c1[0] - c0[0] - own) / max(c1[1] - c0[1], 1e-9))
    return {"study_tok_per_s": tokens / wall, "loop_tok_per_s": workers * tokens / sum(r["train_time"] for r in res),
            "wall_s": wall, "tokens": tokens, "params": res[0]["params"],
            "own_cpu_frac": own / (wall * (os.cpu_count() or 1)), "foreign_cpu": foreign}


def _stats(values: list[float]) -> dict[str, Any]:
    med = statistics.median(values)
    return {"median": round(med, 1), "min": round(min(values), 1), "max": round(max(values), 1),
            "spread_pct": round(100 * (max(values) - min(values)) / med, 1), "values": [round(v, 1) for v in values]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["llama2-tiny", "llama2-small"])
    ap.add_argument("--layouts", nargs="+", default=["1x2", "2x1"], help="WORKERSxTHREADS; the first is the baseline")
    ap.add_argument("--runs", type=int, default=2, help="pretraining runs per measurement (a multiple of workers)")
    ap.add_argument("--steps", nargs="+", type=int, default=[120, 30], help="steps per run, one per preset")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-busy", type=float, default=0.15,
                    help="before each measurement wait until other processes use at most this CPU fraction")
    ap.add_argument("--max-foreign", type=float, default=0.10,
                    help="re-measure (up to --retries times) when others used more than this CPU fraction meanwhile")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--wait", type=float, default=600, help="seconds to wait for a quiet machine per measurement")
    a = ap.parse_args()
    layouts = [tuple(int(x) for x in s.lower().split("x")) for s in a.layouts]
    steps = dict(zip(a.presets, (a.steps * len(a.presets))[: len(a.presets)], strict=True))

    from plasticity.data.packed import prepare_data

    warm = from_dict(PretrainConfig, deep_merge(BASE, {}))
    prepare_data(warm.data, warm.tokenizer, log=lambda m: None)  # token cache ready before any timing

    load_before = os.getloadavg()
    # every measurement, noisy ones too (others used > --max-foreign of the CPUs meanwhile): kept apart
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {p: {s: [] for s in a.layouts} for p in a.presets}
    for preset in a.presets:
        for rep in range(a.repeats):
            order = list(zip(a.layouts, layouts, strict=True))
            for name, (w, t) in order if rep % 2 == 0 else order[::-1]:
                for _ in range(a.retries + 1):
                    wait_quiet(a.max_busy, a.wait)
                    m = measure(preset, w, t, a.runs, steps[preset])
                    f = m["foreign_cpu"]
                    m.update(repeat=rep, noisy=f is not None and f > a.max_foreign)
                    raw[preset][name].append(m)
                    print(f"# {preset} {name} repeat {rep}: study {m['study_tok_per_s']:,.0f} tok/s, loop "
                          f"{m['loop_tok_per_s']:,.0f} tok/s, {m['wall_s']:.1f} s, own CPU "
                          f"{100 * m['own_cpu_frac']:.0f}%, others' CPU "
                          f"{'n/a' if f is None else f'{100 * f:.0f}%'}", flush=True)
                    if not m["noisy"]:
                        break
    base = a.layouts[0]
    results: dict[str, Any] = {}
    for preset, by in raw.items():
        clean = {name: [m for m in ms if not m["noisy"]] for name, ms in by.items()}
        results[preset] = {"params": by[base][0]["params"], "steps_per_run": steps[preset], "layouts": {}}
        for name, ms in by.items():
            use = clean[name] or ms  # all noisy: report them, flagged
            paired = [m["study_tok_per_s"] / b["study_tok_per_s"] for m in clean[name] for b in clean[base]
                      if m["repeat"] == b["repeat"]]
            noisy = [m for m in ms if m["noisy"]]
            results[preset]["layouts"][name] = {
                "n_clean": len(clean[name]),
                "study_tok_per_s": _stats([m["study_tok_per_s"] for m in use]),
                "loop_tok_per_s": _stats([m["loop_tok_per_s"] for m in use]),
                "wall_s": _stats([m["wall_s"] for m in use]),
                "foreign_cpu_pct": [None if m["foreign_cpu"] is None else round(100 * m["foreign_cpu"], 1)
                                    for m in use],
                "ratio_vs_baseline": round(statistics.median(m["study_tok_per_s"] for m in use) / statistics.median(
                    m["study_tok_per_s"] for m in (clean[base] or by[base])), 3),
                "paired_ratios": [round(r, 3) for r in paired],
                "noisy": [{"study_tok_per_s": round(m["study_tok_per_s"], 1),
                           "loop_tok_per_s": round(m["loop_tok_per_s"], 1),
                           "foreign_cpu_pct": round(100 * m["foreign_cpu"], 1)} for m in noisy],
            }
    hw = hardware_info(torch.device("cpu"))
    out = {
        "benchmark": "study_workers", "cpu": cpu_name(), "cpu_count": os.cpu_count(), "allocator": hw["allocator"],
        "tcmalloc": "tcmalloc" in hw["allocator"], "torch": torch.__version__, "baseline": base,
        "runs_per_measurement": a.runs, "repeats": a.repeats, "max_foreign_cpu": a.max_foreign,
        "seq_len": BASE["data"]["seq_len"], "micro_batch_size": BASE["train"]["micro_batch_size"],
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "hardware": hw, "results": results,
    }
    print(json.dumps(out))
    print(f"\nquiet measurements (others <= {100 * a.max_foreign:.0f}% CPU); noisy ones listed after the table")
    print(f"{'preset':<14}{'layout':>7}{'n':>3}{'study tok/s':>13}{'[min, max]':>18}{'loop tok/s':>12}{'wall s':>8}"
          f"{'vs ' + base:>9}  paired")
    for preset, r in results.items():
        for name, v in r["layouts"].items():
            s = v["study_tok_per_s"]
            rng = f"[{s['min']:,.0f}, {s['max']:,.0f}]"
            print(f"{preset:<14}{name:>7}{v['n_clean']:>3}{s['median']:>13,.0f}{rng:>18}"
                  f"{v['loop_tok_per_s']['median']:>12,.0f}{v['wall_s']['median']:>8.1f}"
                  f"{v['ratio_vs_baseline']:>8.2f}x  {v['paired_ratios']}")
    for preset, r in results.items():
        for name, v in r["layouts"].items():
            for m in v["noisy"]:
                print(f"noisy: {preset} {name}: study {m['study_tok_per_s']:,.0f} tok/s, loop "
                      f"{m['loop_tok_per_s']:,.0f} tok/s with others using {m['foreign_cpu_pct']:.0f}% of the CPUs")
    print(f"{out['cpu']}, {out['cpu_count']} CPUs, allocator {out['allocator']}, torch {out['torch']}, "
          f"{a.runs} runs per measurement, {a.repeats} repeats per layout")

if __name__ == "__main__":
    main()
