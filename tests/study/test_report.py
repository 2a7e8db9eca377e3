"""plasticity report: build an HTML report from a hand-written fake study directory."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from plasticity.errors import UserError
from plasticity.report.build import build_report

WDS = [0.0, 0.1, 1.0]
VAL = {0.0: 5.40, 0.1: 5.31, 1.0: 5.55}  # lowest at wd = 0.1


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
                "layers": layers,
            }
            for k, s in enumerate((10, 20, 30))
        ],
    }
    (an / "rank.json").write_text(json.dumps(rank))
    probes = {
        "sets": {
            name: {
                "layers": [{"layer": ly, "test_accuracy": 0.5 + 0.05 * ly + 0.01 * i} for ly in range(3)],
                "best_test_accuracy": 0.6 + 0.01 * i,
            }
            for name in ("sst2", "ag_news")
        }
    }
    (an / "probes.json").write_text(json.dumps(probes))
    groups = ["embedding", "layers.0", "layers.1", "final_norm", "lm_head"]
    norms = {"groups": [{"name": g, "fraction": (k + 1 + wd) / 20} for k, g in enumerate(groups)]}
    (an / "norms.json").write_text(json.dumps(norms))
    gap = {"train_val": {"gap": -0.001 * i}, "unseen_seen": {"gap": 0.002 * i}}
    (an / "gap.json").write_text(json.dumps(gap))


def _fake_study(root: Path) -> Path:
    study = root / "runs" / "demo"
    study.mkdir(parents=True)
    fields = [
        "optim.weight_decay", "run", "demo_arith/greedy", "demo_arith/pass@4", "forgetting", "probe_sst2",
        "qk_rank_frac", "status", "train_loss", "train_val_gap", "unseen_seen_gap", "val_loss", "vp_rank_frac",
        "weight_norm",
    ]  # fmt: skip
    rows = []
    for i, wd in enumerate(WDS):
        run = study / f"pretrain-{i:04x}"
        _write_run(run, wd, i)
        rows.append({
            "optim.weight_decay": wd, "run": f"runs/demo/{run.name}", "demo_arith/greedy": 0.1 * i,
            "demo_arith/pass@4": [0.2, 0.5, 0.3][i], "forgetting": 0.5 - 0.1 * i, "probe_sst2": 0.6 + 0.01 * i,
            "qk_rank_frac": 0.8 - 0.05 * i, "status": "completed", "train_loss": VAL[wd] - 0.01,
            "train_val_gap": -0.001 * i, "unseen_seen_gap": 0.002 * i, "val_loss": VAL[wd], "vp_rank_frac": 0.9,
            "weight_norm": 40 - 3 * i,
        })  # fmt: skip
    with (study / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    (study / "sweep.json").write_text(json.dumps(rows))
    return study


def test_build_report(tmp_path: Path) -> None:
    study = _fake_study(tmp_path)
    path = build_report(study)
    assert path == study / "report" / "index.html"
    text = path.read_text()
    pngs = sorted((study / "report").glob("*.png"))
    assert len(pngs) >= 8  # figs 1, 2, 3, 4 (x2 sets), 5, 6, 7, 8
    for png in pngs:
        assert f'src="{png.name}"' in text
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 5000
        assert png.with_suffix(".svg").is_file()
    assert set(re.findall(r'src="([^"]+)"', text)) == {p.name for p in pngs}
    assert (study / "report" / "results.csv").read_text() == (study / "results.csv").read_text()
    summary = re.search(r'<p id="summary">(.*?)</p>', text, re.S).group(1)
    assert "Lowest val loss at wd = 0.1 (5.3100" in summary
    assert "Highest demo_arith/pass@4 at wd = 0.1" in summary
    assert "single seed: no CI" in summary
    assert "Pearson r(val loss, demo_arith/pass@4)" in summary and "leave-one-out range" in summary
    assert "Weight norm falls monotonically from 40 to 34" in summary
    assert "Skipped" not in text
    assert "http" not in text and "<script" not in text


def test_build_report_missing_analysis_skips_with_note(tmp_path: Path) -> None:
    study = _fake_study(tmp_path)
    for run in study.glob("pretrain-*"):
        (run / "analysis" / "probes.json").unlink()
    out = tmp_path / "elsewhere"
    text = build_report(study, out).read_text()
    assert "Skipped" in text and "probes.json" in text
    assert not list(out.glob("fig4_*"))


def test_build_report_missing_study_dir(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="results.csv"):
        build_report(tmp_path / "empty")
