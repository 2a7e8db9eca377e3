"""Token-cache preparation throughput and memory: 1 vs N workers on a synthetic corpus (issue 25).

Generates a deterministic synthetic JSONL corpus of ``--size-mb`` (default 2048 MiB; Zipf-distributed pseudo-words
in documents of 100-4000 words, every document unique), trains the BPE once (``--vocab``, default 4096, on 2,000
documents), then prepares the token cache from scratch once per worker count in ``--workers`` (default ``1 N``,
N = usable CPUs), each in a fresh process, and reports per run: wall seconds, tokens/s, the driver's and the
workers' peak RSS (``getrusage`` ``ru_maxrss``: the OS's high-water mark of resident memory; workers: the largest
one) and the sum bound driver + workers x largest worker; and the tokens/s ratio over the first worker count.
The caches of all runs are checked to be identical (same meta.json). Prints one JSON line and a table.

Usage: python benchmarks/data_bench.py [--size-mb 2048] [--workers 1 2] [--repeats 1] [--dir DIR] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FILE_MB = 64  # the corpus is written as files of this size (a corpus of many files, split across workers)


def make_corpus(root: Path, size_mb: float, seed: int = 0) -> dict[str, Any]:
    """Write ``root/part-XXXX.jsonl`` until `size_mb` MiB: documents drawn from a pool of 4,000 generated ones,
    each prefixed with its own number (so every document, and its split hash, is unique)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    probs = 1.0 / np.arange(1, 27) ** 0.9
    words = ["".join(rng.choice(letters, size=int(rng.integers(1, 11)), p=probs / probs.sum()))
             for _ in range(30000)]
    zipf = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    zipf /= zipf.sum()
    pool = []
    for _ in range(4000):
        ids = rng.choice(len(words), size=int(rng.integers(100, 4000)), p=zipf)
        sent = [words[i] for i in ids]
        for j in range(0, len(sent), int(rng.integers(8, 20))):
            sent[j] = sent[j].capitalize()
            if j:
                sent[j - 1] += "."
        pool.append(" ".join(sent) + ".")
    target = int(size_mb * 2**20)
    written = docs = k = 0
    while written < target:
        with open(root / f"part-{k:04d}.jsonl", "w") as f:
            size = 0
            while size < FILE_MB * 2**20 and written + size < target:
                line = json.dumps({"text": f"Document {docs}. " + pool[int(rng.integers(len(pool)))]}) + "\n"
                f.write(line)
                size += len(line)
                docs += 1
        written += size
        k += 1
    return dict(bytes=written, documents=docs, files=k)


def child(args: argparse.Namespace) -> None:
    """One preparation in this fresh process; prints its record as JSON."""
    from plasticity.config import DataConfig
    from plasticity.data.packed import prepare_tokens

    data = DataConfig(source=args.corpus, cache_dir=args.cache, num_workers=args.child_workers,
                      shard_mb=args.shard_mb)
    t0 = time.perf_counter()
    prepared = prepare_tokens(data, Path(args.tok_dir), log=lambda m: None)
    wall = time.perf_counter() - t0
    tokens = prepared.meta["train_tokens"] + prepared.meta["val_tokens"]
    kib = 1024  # ru_maxrss is in KiB on Linux
    drv = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib
    wrk = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib
    cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    print(json.dumps(dict(workers=args.child_workers, seconds=round(wall, 2), tokens=tokens,
                          tokens_per_s=round(tokens / wall), cpu_seconds=round(cpu, 2), driver_peak_rss=drv,
                          worker_peak_rss=wrk if args.child_workers > 1 else 0,
                          peak_rss_bound=drv + (args.child_workers * wrk if args.child_workers > 1 else 0),
                          meta=prepared.meta)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=2048)
    ap.add_argument("--workers", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--shard-mb", type=float, default=64.0, help="data.shard_mb (input per shard job)")
    ap.add_argument("--dir", default=None, help="where the corpus and caches go (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the JSON record here")
    ap.add_argument("--child-workers", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tok-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_workers:
        return child(args)

    from plasticity.config import DataConfig, TokenizerConfig
    from plasticity.data.packed import prepare_tokenizer
    from plasticity.data.prepare import usable_cpus
    from plasticity.hardware import cpu_name

    workers = args.workers or [1, usable_cpus()]
    root = Path(args.dir or tempfile.mkdtemp(prefix="data_bench_"))
    corpus = root / f"corpus-{args.size_mb:g}mb"
    t0 = time.time()
    info = make_corpus(corpus, args.size_mb) if not (corpus / "DONE").exists() else json.loads(
        (corpus / "DONE").read_text())
    (corpus / "DONE").write_text(json.dumps(info))
    gen_s = time.time() - t0
    tok_dir = prepare_tokenizer(DataConfig(source=str(corpus), cache_dir=str(root / "tok")),
                                TokenizerConfig(vocab_size=args.vocab, train_documents=2000), log=lambda m: None)
    load_before = os.getloadavg()
    runs = []
    for rep in range(args.repeats):
        order = workers if rep % 2 == 0 else list(reversed(workers))
        for w in order:
            cache = root / f"cache-w{w}-r{rep}"
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            cmd = [sys.executable, __file__, "--child-workers", str(w), "--corpus", str(corpus), "--cache",
                   str(cache), "--tok-dir", str(tok_dir), "--shard-mb", str(args.shard_mb)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            rec["repeat"] = rep
            runs.append(rec)
            subprocess.run(["rm", "-rf", str(cache)], check=True)
    metas = {json.dumps(r.pop("meta"), sort_keys=True) for r in runs}
    base = np.median([r["tokens_per_s"] for r in runs if r["workers"] == workers[0]])
    summary = []
    for w in workers:
        rs = [r for r in runs if r["workers"] == w]
        tps = float(np.median([r["tokens_per_s"] for r in rs]))
        summary.append(dict(workers=w, tokens_per_s=round(tps), seconds=float(np.median([r["seconds"] for r in rs])),
                            cpu_seconds=float(np.median([r["cpu_seconds"] for r in rs])),
                            driver_peak_rss_mb=round(max(r["driver_peak_rss"] for r in rs) / 2**20),
                            worker_peak_rss_mb=round(max(r["worker_peak_rss"] for r in rs) / 2**20),
                            peak_rss_bound_mb=round(max(r["peak_rss_bound"] for r in rs) / 2**20),
                            ratio=round(tps / base, 3)))
    record = dict(bench="data", cpu=cpu_name(), usable_cpus=usable_cpus(), corpus=info, corpus_gen_s=round(gen_s, 1),
                  vocab=args.vocab, shard_mb=args.shard_mb, tokens=runs[0]["tokens"], identical_caches=len(metas) == 1,
                  load_before=[round(x, 2) for x in load_before], load_after=[round(x, 2) for x in os.getloadavg()],
                  summary=summary, runs=runs)
    print(json.dumps(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))
    print(f"\ncorpus {info['bytes'] / 2**20:,.0f} MiB, {info['documents']:,} documents, {runs[0]['tokens']:,} tokens "
          f"(BPE {args.vocab}); CPU {record['cpu']} ({record['usable_cpus']} usable); load {load_before[0]:.1f} -> "
          f"{record['load_after'][0]:.1f}; caches identical: {record['identical_caches']}")
    print(f"{'workers':>8} {'seconds':>9} {'CPU s':>8} {'tokens/s':>11} {'ratio':>6} {'driver RSS':>11} "
          f"{'worker RSS':>11} {'bound':>8}")
    for s in summary:
        print(f"{s['workers']:>8} {s['seconds']:>9.1f} {s['cpu_seconds']:>8.1f} {s['tokens_per_s']:>11,} "
              f"{s['ratio']:>6.2f} "
              f"{s['driver_peak_rss_mb']:>8} MB {s['worker_peak_rss_mb']:>8} MB {s['peak_rss_bound_mb']:>5} MB")


if __name__ == "__main__":
    main()
