"""Shared fixture for the report tests: a hand-written fake study directory (results.csv + analysis files)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

WDS = [0.0, 0.1, 1.0]
VAL = {0.0: 5.40, 0.1: 5.31, 1.0: 5.55}  # lowest at wd = 0.1
PASS4 = [0.2, 0.5, 0.3]  # highest at wd = 0.1
# per-seed offsets (seed s adds s * offset): val loss CIs do not overlap, pass@4 CIs of wd 0.1 and 1 overlap
SEED_OFFSET = {"val_loss": 0.04, "pass@4": 0.25}


def _write_run(run: Path, wd: float, i: int) -> None:
    an = run / "analysis"
    an.mkdir(parents=True)
    with (run / "metrics.jsonl").open("w") as f:
        for step in (25, 50):
            f.write(json.dumps({"step": step, "tokens": step * 2048, "loss": 6.0 - step / 100}) + "\n")
            f.write(json.dumps({"step": step, "val_loss": 6.1 - step / 100}) + "\n")
    layers = [{"layer": ly, "mean": {"qk": {"fraction": 0.8 - 0.1 * wd}, "vp": {"fraction": 0.9}}} for ly in range(2)]
    rank = {
        "threshold": 0.95,
        "checkpoints": [
            {
                "step": s,
                "mean": {"qk": {"fraction": 0.9 - 0.05 * wd * k}, "vp": {"fraction": 0.92 - 0.01 * k}},
                "layers": layers, "num_layers": 2,
            }
            for k, s in enumerate((10, 20, 30))
        ],
    }
    (an / "rank.json").write_text(json.dumps(rank))
    probes = {
        "sets": {
            name: {
                "layers": [{"layer": ly, "test_accuracy": 0.5 + 0.05 * ly + 0.01 * i,
                            "train_accuracy": 0.6 + 0.05 * ly + 0.01 * i} for ly in range(3)],
                "best_test_accuracy": 0.6 + 0.01 * i,
            }
            for name in ("sst2", "ag_news")
        }
    }
    (an / "probes.json").write_text(json.dumps(probes))
    groups = ["embedding", "layers.0", "layers.1", "final_norm", "lm_head"]
    norms = {"groups": [{"name": g, "fraction": (k + 1 + wd) / 20, "norm": 10.0 - wd + k}
                        for k, g in enumerate(groups)]}
    (an / "norms.json").write_text(json.dumps(norms))
    gap = {"train_val": {"gap": -0.001 * i, "train_loss": 5.0 + 0.01 * i, "val_loss": 5.0 + 0.009 * i},
           "unseen_seen": {"gap": 0.002 * i}}
    (an / "gap.json").write_text(json.dumps(gap))


def make_fake_study(root: Path, seeds: Sequence[int] | None = None) -> Path:
    """``root/out/demo`` with one run per weight decay in WDS (per seed, plus a ``train.seed`` column, if given) in
    ``root/out/runs/``: a study's layout, ``run`` relative to the study directory."""
    study = root / "out" / "demo"
    study.mkdir(parents=True)
    fields = [
        "optim.weight_decay", "run", "demo_arith/greedy", "demo_arith/pass@4", "forgetting", "probe_sst2",
        "qk_rank_frac", "status", "train_loss", "train_val_gap", "unseen_seen_gap", "val_loss", "vp_rank_frac",
        "weight_norm", "upstream_acc_pretrained", "upstream_acc",
    ]  # fmt: skip
    if seeds is not None:
        fields.insert(0, "train.seed")
    rows = []
    for s in seeds if seeds is not None else [None]:
        k = s or 0
        for i, wd in enumerate(WDS):
            run = study.parent / "runs" / (f"pretrain-{i:04x}" + (f"-s{s}" if s is not None else ""))
            _write_run(run, wd, i)
            row = {
                "optim.weight_decay": wd, "run": f"../runs/{run.name}", "demo_arith/greedy": 0.1 * i,
                "demo_arith/pass@4": PASS4[i] + k * SEED_OFFSET["pass@4"], "forgetting": 0.5 - 0.1 * i,
                "probe_sst2": 0.6 + 0.01 * i, "qk_rank_frac": 0.8 - 0.05 * i, "status": "completed",
                "train_loss": VAL[wd] - 0.01, "train_val_gap": -0.001 * i, "unseen_seen_gap": 0.002 * i,
                "val_loss": VAL[wd] + k * SEED_OFFSET["val_loss"], "vp_rank_frac": 0.9, "weight_norm": 40 - 3 * i,
                "upstream_acc_pretrained": 0.4 + 0.01 * i, "upstream_acc": 0.38 + 0.01 * i,
            }  # fmt: skip
            if s is not None:
                row["train.seed"] = s
            rows.append(row)
    with (study / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    (study / "sweep.json").write_text(json.dumps(rows))
    return study


@pytest.fixture
def fake_study() -> Callable[..., Path]:
    """``fake_study(root, seeds=None) -> study_dir``: see :func:`make_fake_study`."""
    return make_fake_study
