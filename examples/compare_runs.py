"""Compare two pretraining runs side by side: final losses, weight norm, attention pseudo-rank, and the
training curves (from each run's metrics.jsonl) at the steps both logged.

    python examples/compare_runs.py runs/tiny-wd0 runs/tiny-wd1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

import plasticity


def summary_of(run: Path, out: Path) -> dict[str, float]:
    """The run's summary.json numbers plus its weight norm and final pseudo-rank (analysed into `out`)."""
    s = json.loads((run / "summary.json").read_text())
    ana = plasticity.analyze(run, what=["rank", "norms"], out_dir=out)
    final = ana["rank"]["checkpoints"][-1]["mean"]
    return {"weight_decay": s["weight_decay"], "val_loss": s["final_val_loss"], "train_loss": s["final_train_loss"],
            "tokens": s["tokens_seen"], "weight_norm": ana["norms"]["total_norm"],
            "qk_rank_frac": final["qk"]["fraction"], "vp_rank_frac": final["vp"]["fraction"]}


def curves(run: Path) -> pd.DataFrame:
    """Training loss and validation loss per logged step (metrics.jsonl has one record of each per step)."""
    recs = pd.read_json(run / "metrics.jsonl", lines=True)
    cols = [c for c in ("loss", "val_loss") if c in recs]
    return recs.groupby("step")[cols].first()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/compare"), help="where the analyses are written")
    args = ap.parse_args()
    a, b = args.run_a, args.run_b
    if a.name == b.name:
        raise SystemExit("give two runs with different directory names")
    table = pd.DataFrame({a.name: summary_of(a, args.out / a.name), b.name: summary_of(b, args.out / b.name)})
    table["b - a"] = table[b.name] - table[a.name]
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    both = curves(a).join(curves(b), lsuffix=f" {a.name}", rsuffix=f" {b.name}", how="inner")
    print(both.to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
