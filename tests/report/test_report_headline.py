"""`report.headline: {task: metric}` (issue 16): each task at its own best fine-tuning learning rate per
pretraining run (paper App. E), the headline = the mean over the tasks, `report/downstream.csv` and
`report/summary.json` with CIs over seeds; `plasticity report --export` then rebuilds the same numbers from the
exported small files alone. Through the real CLI, on a hand-written study directory."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli
from tests.report.conftest import _write_run

WDS, SEEDS, LRS = (0.0, 1.0), (0, 1), (0.001, 0.003)
HEADLINE = {"addition": "greedy", "sst2": "acc"}


def _addition(wd: float, seed: int, lr: float) -> float:
    return 0.30 + 0.20 * wd + 0.01 * seed + (0.10 if lr == 0.003 else 0.0)  # lr 3e-3 is best on addition


def _sst2(wd: float, seed: int, lr: float) -> float:
    return 0.70 + 0.05 * wd - 0.01 * seed + (0.08 if lr == 0.001 else 0.0)  # lr 1e-3 is best on sst2


def make_study(root: Path) -> Path:
    """`root/out/demo`: results.csv (2 wd x 2 seeds x 2 fine-tuning lrs), study.json, and the run dirs."""
    study = root / "out" / "demo"
    study.mkdir(parents=True)
    rows, nodes = [], []
    for i, (wd, seed) in enumerate((w, s) for w in WDS for s in SEEDS):
        run = root / "out" / "runs" / f"pretrain-{i:04x}"
        _write_run(run, wd, i)
        nodes.append(run.name)
        for lr in LRS:
            ft = root / "out" / "runs" / f"finetune-{i:02x}{LRS.index(lr)}"
            ft.mkdir(parents=True)
            (ft / "summary.json").write_text(json.dumps({"status": "completed", "lr": lr}))
            (ft / "checkpoint.safetensors").write_bytes(b"\0" * 64)  # weights: never exported
            nodes.append(ft.name)
            a, s = _addition(wd, seed, lr), _sst2(wd, seed, lr)
            rows.append({"optim.weight_decay": wd, "train.seed": seed, "finetune.optim.lr": lr,
                         "run": f"../runs/{run.name}", "status": "completed", "val_loss": 3.2 + 0.1 * wd + 0.01 * seed,
                         "train_loss": 3.1, "probe_mean_best": 0.6 + 0.1 * wd, "qk_rank_frac": 0.8 - 0.1 * wd,
                         "vp_rank_frac": 0.9, "train_val_gap": 0.02 - 0.01 * wd, "unseen_seen_gap": 0.0,
                         "weight_norm": 40 - 10 * wd, "finetune_runs": f"../runs/{ft.name}",
                         "addition/addition/greedy": a, "addition/addition/pass@16": min(1.0, a + 0.2),
                         "addition/addition/heldout_loss": 1.0 - a, "sst2/sst2/acc": s,
                         "avg_cot/tasks": "addition", "avg_cot/greedy": a, "avg_cloze/tasks": "sst2",
                         "avg_cloze/acc": s, "addition/stability": -0.01, "sst2/stability": -0.03,
                         "stability": -0.01})
    with (study / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    spec = {"name": "demo", "report": {"headline": HEADLINE}}
    (study / "study.json").write_text(json.dumps({"format_version": 2, "name": "demo", "spec": spec, "nodes": nodes}))
    return study


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_each_task_takes_its_own_best_lr_and_the_headline_averages_them(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    r = run_cli("report", str(study))
    assert r.returncode == 0, r.stderr[-3000:]
    ds = _csv(study / "report" / "downstream.csv")
    assert len(ds) == len(WDS) * len(SEEDS)  # one row per pretraining run
    for fig in ("fig2_per_finetune_setting", "fig2_average_over_finetune_settings"):  # paper Figs 21-23
        assert (study / "report" / f"{fig}.png").is_file(), fig
    for row in ds:
        wd, seed = float(row["optim.weight_decay"]), int(row["train.seed"])
        assert row["addition/chosen"] == "finetune.optim.lr=0.003" and row["sst2/chosen"] == "finetune.optim.lr=0.001"
        assert float(row["addition/addition/greedy"]) == pytest.approx(_addition(wd, seed, 0.003))
        assert float(row["sst2/sst2/acc"]) == pytest.approx(_sst2(wd, seed, 0.001))
        assert float(row["headline"]) == pytest.approx((_addition(wd, seed, 0.003) + _sst2(wd, seed, 0.001)) / 2)
        assert float(row["avg_cloze/acc"]) == pytest.approx(_sst2(wd, seed, 0.001))  # recomputed, not lr 3e-3's
        assert "finetune.optim.lr" not in row
    s = json.loads((study / "report" / "summary.json").read_text())
    assert s["headline"] == "headline" and s["n_runs"] == 4 and s["weight_decays"] == [0.0, 1.0]
    h = s["columns"]["headline"]
    want = {wd: sum((_addition(wd, k, 0.003) + _sst2(wd, k, 0.001)) / 2 for k in SEEDS) / 2 for wd in WDS}
    for wd in WDS:
        d = h["per_wd"][f"{wd:g}"]
        assert d["mean"] == pytest.approx(want[wd]) and d["n"] == 2 and d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert h["optimum"]["best"] == 1.0 and h["optimum"]["p_best"]["1"] == 1.0  # wd 1 wins under every resample
    assert h["trend_vs_wd"]["spearman_rho"] > 0.8
    assert s["columns"]["val_loss"]["optimum"]["best"] == 0.0
    assert s["optimum_order"]["greater"] == 1.0  # downstream-optimal wd (1) > val-loss-optimal wd (0)
    assert s["columns"]["addition/addition/heldout_loss"]["optimum"]["lower_is_better"] is True
    tables = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduction_tables.py"),
                             str(study / "report" / "summary.json")], capture_output=True, text=True, check=True).stdout
    verdicts = {line.split(" | ")[0].strip("| "): line.rsplit("**", 2)[-2] for line in tables.splitlines()
                if line.endswith("** |")}
    assert verdicts == {"1. downstream-optimal wd > val-loss-optimal wd": "reproduced",
                        "2. larger wd, more linearly separable representations": "reproduced",
                        "3. larger wd, lower attention pseudo-rank (QK)": "reproduced",
                        "3. larger wd, lower attention pseudo-rank (VP)": "inconclusive",  # constant: no trend
                        "4. larger wd, smaller train-val gap": "reproduced"}
    assert "| headline | 0.590 [0.590, 0.590] | 0.715 [0.715, 0.715] |" in tables
    c = s["val_loss_vs_headline"]
    assert c["n"] == 4 and f"val loss vs headline over 4 runs: Pearson r = {c['pearson_r']:+.2f}" in tables
    html = (study / "report" / "index.html").read_text()
    assert "headline = mean over addition (greedy), sst2 (acc), each task at its best finetune.optim.lr per " \
           "pretraining run" in html
    # captions name it once, as a phrase ("vs the headline (mean over ...)"), never "headline headline (headline = "
    assert "Final val loss vs the headline (mean over addition (greedy), sst2 (acc)," in html
    assert "headline headline" not in html and "(headline = " not in html


def test_export_keeps_only_small_files_and_rebuilds_the_same_numbers(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    assert run_cli("report", str(study)).returncode == 0
    r = run_cli("report", str(study), "--export", str(tmp_path / "exported"))
    assert r.returncode == 0, r.stderr[-3000:]
    exp = tmp_path / "exported" / "demo"
    assert r.stdout.strip() == str(exp / "report" / "index.html") and "exported" in r.stderr
    files = {p.relative_to(tmp_path / "exported").as_posix() for p in (tmp_path / "exported").rglob("*")
             if p.is_file() and "report" not in p.parts}
    assert "demo/results.csv" in files and "demo/study.json" in files
    assert "runs/pretrain-0000/analysis/rank.json" in files and "runs/finetune-000/summary.json" in files
    assert not any(f.endswith(".safetensors") for f in files)
    ours, theirs = (json.loads((d / "report" / "summary.json").read_text()) for d in (study, exp))
    assert ours == theirs
    assert (exp / "report" / "fig5_rank_over_training.png").is_file()  # analysis files travelled
    assert (exp / "report" / "fig2_headline_vs_wd.png").is_file()
    bad = run_cli("report", str(study), "--export", str(study.parent / "runs" / "x"))
    assert bad.returncode == 2 and "outside the study's out_dir" in bad.stderr
    both = run_cli("report", str(study), "--export", str(tmp_path / "e2"), "--out", str(tmp_path / "r"))
    assert both.returncode == 2 and "give one" in both.stderr and not (tmp_path / "e2").exists()


@pytest.mark.parametrize("headline,needle", [({"nope": "greedy"}, "report.headline.nope"),
                                             ({"demo_arith": "accuracy"}, "'accuracy': not a metric name")])
def test_bad_headline_is_one_line(tmp_path: Path, headline: dict, needle: str) -> None:
    spec = {"name": "s", "out_dir": str(tmp_path / "o"), "tasks": ["demo_arith"], "base": {"model": {"preset":
            "llama2-tiny"}}, "finetune": {"max_examples": 4}, "report": {"headline": headline}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    r = run_cli("study", str(tmp_path / "s.yaml"), "--dry-run")
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_headline_study_before_its_first_evaluation_reports_the_pretraining(tmp_path: Path) -> None:
    """A running study with `report.headline` whose evaluations have not started: results.csv has no task
    columns yet. The report shows the pretraining side and says the headline has no value yet."""
    study = make_study(tmp_path)
    rows = _csv(study / "results.csv")
    keep = [c for c in rows[0] if "/" not in c and c != "finetune_runs"]
    with (study / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keep, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(dict(r, status="pending") for r in rows)
    r = run_cli("report", str(study))
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((study / "report" / "summary.json").read_text())
    assert s["n_runs"] == 4 and "val_loss" in s["columns"] and "headline" not in s["columns"]
    assert "headline = mean over addition (greedy), sst2 (acc); no completed row yet." in s["summary"][1]
    assert not (study / "report" / "fig2_headline_vs_wd.png").exists()
    assert (study / "report" / "fig5_rank_over_training.png").is_file()


def test_another_headline_goes_to_its_own_report(tmp_path: Path) -> None:
    """`plasticity report --headline TASK=METRIC,... --out DIR`: the same study under another headline (a
    post-hoc view), written beside the study's own report, which keeps its report.headline."""
    study = make_study(tmp_path)
    alt = tmp_path / "alt"
    r = run_cli("report", str(study), "--headline", "sst2=acc", "--out", str(alt))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == str(alt / "index.html") and not (study / "report").exists()
    s = json.loads((alt / "summary.json").read_text())
    want = {wd: sum(_sst2(wd, k, 0.001) for k in SEEDS) / 2 for wd in WDS}  # sst2 alone, at its best lr (1e-3)
    assert {w: d["mean"] for w, d in s["columns"]["headline"]["per_wd"].items()} == pytest.approx(
        {f"{wd:g}": v for wd, v in want.items()})
    assert "headline = mean over sst2 (acc)" in (alt / "index.html").read_text()
    for args, needle in [(["--headline", "sst2=acc"], "--headline needs --out"),
                         (["--headline", "sst2", "--out", str(alt)], "give TASK=METRIC pairs"),
                         (["--headline", "sst2=acc_template", "--out", str(alt)], "no column for task 'sst2'")]:
        bad = run_cli("report", str(study), *args)
        assert bad.returncode == 2 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_report_headline_and_the_headline_option_accept_the_same_metric_names() -> None:
    """What `plasticity report --headline` accepts a study's report.headline accepts, and the other way round."""
    from plasticity.config import from_dict
    from plasticity.errors import UserError
    from plasticity.report.cli import parse_headline
    from plasticity.study.spec import StudySpec, validate_spec

    def spec_ok(metric: str) -> bool:
        s = from_dict(StudySpec, {"name": "s", "out_dir": "/tmp/s", "tasks": ["demo_arith"],
                                  "base": {"model": {"preset": "llama2-tiny"}}, "finetune": {"max_examples": 4},
                                  "report": {"headline": {"demo_arith": metric}}})
        try:
            validate_spec(s)
            return True
        except UserError:
            return False

    def option_ok(metric: str) -> bool:
        try:
            parse_headline(f"demo_arith={metric}")
            return True
        except UserError:
            return False

    for metric in ("greedy", "pass@16", "acc", "acc_norm", "acc_template", "acc_norm_template", "heldout_loss",
                   "harmfulness_mean", "refusal_rate (pattern fallback)", "rm@16", "accuracy", "pass@", "acc_tmpl"):
        assert spec_ok(metric) == option_ok(metric), metric
    assert spec_ok("acc_template") and not spec_ok("accuracy")
