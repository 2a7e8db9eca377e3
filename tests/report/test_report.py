"""plasticity report: build an HTML report from a hand-written fake study directory."""

from __future__ import annotations

import csv
import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.axes
import pytest

from plasticity.errors import UserError
from plasticity.report.build import build_report

FakeStudy = Callable[..., Path]


def _summary(text: str) -> str:
    m = re.search(r'<p id="summary">(.*?)</p>', text, re.S)
    assert m is not None
    return html.unescape(m.group(1))


def test_build_report(tmp_path: Path, fake_study: FakeStudy) -> None:
    study = fake_study(tmp_path)
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
    summary = _summary(text)
    assert "Lowest val loss at wd = 0.1 (5.3100" in summary
    assert "Highest demo_arith/pass@4 at wd = 0.1" in summary
    assert "single seed: no CI" in summary
    assert "Pearson r(val loss, demo_arith/pass@4)" in summary and "leave-one-out range" in summary
    assert "Weight norm falls monotonically from 40 to 34" in summary
    assert "Skipped" not in text
    assert "http" not in text
    # one inline script (the load check read by plasticity.report.browser), nothing loaded from elsewhere
    assert text.count("<script") == 1 and "<script src" not in text


def test_build_report_missing_analysis_skips_with_note(tmp_path: Path, fake_study: FakeStudy) -> None:
    study = fake_study(tmp_path)
    for run in (study.parent / "runs").glob("pretrain-*"):
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


def test_build_report_two_seeds_error_bars_and_ci(
    tmp_path: Path, fake_study: FakeStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With >= 2 seeds per weight decay the figures get bootstrap-CI error bars and the summary states the CIs."""
    calls: list[dict[str, Any]] = []
    errorbar = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, *args, **kw):
        calls.append({"x": list(x), "yerr": kw.get("yerr")})
        return errorbar(self, x, y, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    study = fake_study(tmp_path, seeds=[0, 1])
    text = build_report(study).read_text()
    # val loss (fig1), 2 demo_arith metrics (fig2), 2 gaps and Eq. 3's 2 losses (fig6), pretrained and fine-tuned
    # upstream accuracy (fig8), input / intermediate / output norms (fig7); seed-invariant columns: zero-width bars
    assert len(calls) == 12 and all(c["x"] == [0.0, 0.1, 1.0] for c in calls)
    lo, hi = calls[0]["yerr"]
    assert [round(v, 6) for v in lo] == [0.02] * 3 and [round(v, 6) for v in hi] == [0.02] * 3  # CI = [s0, s1]
    summary = _summary(text)
    assert "single seed" not in summary and "no CI" not in summary
    # 2 seeds: the interval is their range (a bootstrap over 2 values gives no more), and says so
    assert "Lowest val loss at wd = 0.1 (5.3300; the best value's seed range does not overlap the others')" in summary
    assert "Highest demo_arith/pass@4 at wd = 0.1 (0.6250; differences are within noise (seed ranges overlap " \
           "with wd = 1))" in summary
    assert "n = 6 pretraining runs (6 completed rows), 3 weight decays, 2 seed(s)." in summary
    assert "Pearson r(val loss, demo_arith/pass@4)" in summary and "(n = 6;" in summary
    assert "Skipped" not in text


def test_build_report_ignores_rows_not_completed(tmp_path: Path, fake_study: FakeStudy) -> None:
    study = fake_study(tmp_path)
    lines = (study / "results.csv").read_text().splitlines()
    assert lines[3].startswith("1.0,") and ",completed," in lines[3]
    lines[3] = lines[3].replace(",completed,", ",skipped,")
    (study / "results.csv").write_text("\n".join(lines) + "\n")
    summary = _summary(build_report(study).read_text())
    assert "Weight norm falls monotonically from 40 to 37 as wd rises from 0 to 0.1" in summary
    assert "n = 2 pretraining runs (2 completed rows), 2 weight decays, 1 seed(s); 1 rows not completed" in summary


def test_probe_vs_downstream_averages_probe_sets_per_layer_then_takes_the_best_layer() -> None:
    from plasticity.analysis.columns import probe_mean_best

    probes = {"sets": {"sst2": {"layers": [{"layer": 0, "test_accuracy": 0.5}, {"layer": 1, "test_accuracy": 0.9},
                                           {"layer": 2, "test_accuracy": 0.6}], "best_test_accuracy": 0.9},
                       "ag_news": {"layers": [{"layer": 0, "test_accuracy": 0.9}, {"layer": 1, "test_accuracy": 0.5},
                                              {"layer": 2, "test_accuracy": 0.6}], "best_test_accuracy": 0.9}}}
    assert probe_mean_best(probes) == pytest.approx(0.7)  # not 0.9, each set's own best layer (paper Fig. 25)
    assert probe_mean_best(None) is None


def test_averaged_headline_is_the_reports_metric(tmp_path: Path, fake_study: FakeStudy) -> None:
    study = fake_study(tmp_path)
    with (study / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:  # the study layout since issue 12: {task}/{eval_set}/{metric} plus the averaged headline
        r["demo_arith/demo_arith/pass@4"] = r.pop("demo_arith/pass@4")
        r["demo_arith/demo_arith/greedy"] = r.pop("demo_arith/greedy")
        r["avg_cot/pass@4"] = 1 - float(r["demo_arith/demo_arith/pass@4"])  # a different number: visibly chosen
        r["avg_cot/tasks"] = "demo_arith;other"
        r["stability"] = r.pop("forgetting")
    with (study / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = build_report(study).read_text()
    summary = _summary(text)
    assert "Headline downstream metric: avg_cot/pass@4: mean of pass@4 over the CoT fine-tuning tasks " \
           "(demo_arith, other)" in summary
    assert "Highest avg_cot/pass@4 at wd = 0 " in summary and "Pearson r(val loss, avg_cot/pass@4)" in summary
    assert "Pearson r(best-layer probe accuracy averaged over the probe sets, avg_cot/pass@4)" in summary
    assert "Stability (App. D" in summary
    assert (study / "report" / "fig2_avg_cot_metrics_vs_wd.png").is_file()
    assert (study / "report" / "fig2_demo_arith_metrics_vs_wd.png").is_file()
    assert "stability = mean cloze accuracy of the fine-tuned minus the pretrained model" in text


def test_scores_and_losses_get_their_own_panels_and_degenerate_axes_are_widened() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plasticity.report.data import Point
    from plasticity.report.figures import Canvas
    from plasticity.report.figures.plot import metrics_vs_wd, widen_degenerate

    figs = Canvas(Path("."))
    ds = [Point({"t/t/greedy": str(0.2 + wd), "t/t/heldout_loss": str(6 - wd)}, wd) for wd in (0.0, 1.0)]
    fig = metrics_vs_wd(figs, ds, [0.0, 1.0], ["t/t/greedy", "t/t/heldout_loss"], "score", "t")
    (scores, losses) = fig.axes
    assert [t.get_text() for t in scores.get_legend().get_texts()] == ["t/greedy"]
    assert [t.get_text() for t in losses.get_legend().get_texts()] == ["t/heldout_loss (ours)"]  # not the paper's
    assert losses.get_ylabel() == "loss (lower is better)" and scores.get_ylim()[1] < 2  # not squashed by the loss
    plt.close(fig)
    only = metrics_vs_wd(figs, ds, [0.0, 1.0], ["t/t/greedy"], "score", "t")
    assert len(only.axes) == 1
    plt.close(only)

    fig, ax = plt.subplots()
    ax.scatter([0.025, 0.025 + 3e-15], [0.25, 0.25])  # equal up to rounding (two summation orders)
    widen_degenerate(ax)
    lo, hi = ax.get_xlim()
    assert lo == pytest.approx(0.025 - 0.00125) and hi == pytest.approx(0.025 + 0.00125)
    ax.set_ylim(1.0, 3.0)
    widen_degenerate(ax)
    assert ax.get_ylim() == (1.0, 3.0)  # a real span is left alone
    plt.close(fig)


def test_a_running_study_reports_its_finished_pretraining_before_any_downstream_row(
    tmp_path: Path, fake_study: FakeStudy
) -> None:
    """results.csv of a study still running: no row completed yet, every pretraining (and analysis) done. The
    pretraining figures and numbers are built from those runs; the downstream ones wait for completed rows."""
    study = fake_study(tmp_path)
    with (study / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    for r, status in zip(rows, ("pending", "running", "pending"), strict=True):
        r.update({"status": status, "demo_arith/greedy": "", "demo_arith/pass@4": "", "forgetting": ""})
    rows.append(dict(rows[0], **{"optim.weight_decay": "3.0", "run": "../runs/pretrain-x", "status": "pending",
                                 "val_loss": "", "weight_norm": ""}))  # still pretraining: in no figure
    with (study / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = build_report(study).read_text()
    figs = {p.stem for p in (study / "report").glob("*.png")}
    assert {"fig1_val_loss_vs_wd", "fig5_rank_over_training", "fig6_gaps_vs_wd", "fig7_norm_fraction"} <= figs
    assert not any(f.startswith(("fig2", "fig3", "fig8")) for f in figs)
    summary = _summary(text)
    assert "Lowest val loss at wd = 0.1" in summary and "Weight norm falls monotonically from 40 to 34" in summary
    assert "n = 3 pretraining runs (0 completed rows)" in summary
    assert "3 rows are still pending on fine-tuning or evaluation" in summary
    s = json.loads((study / "report" / "summary.json").read_text())
    assert s["weight_decays"] == [0.0, 0.1, 1.0] and "val_loss" in s["columns"] and "optimum_order" not in s

    for r in rows[:3]:  # every row but the one still pretraining completes: downstream figures appear
        r.update({"status": "completed", "demo_arith/greedy": "0.1", "demo_arith/pass@4": "0.3"})
    with (study / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    build_report(study)
    assert (study / "report" / "fig2_demo_arith_metrics_vs_wd.png").is_file()


def test_a_study_without_a_finished_pretraining_run_is_refused(tmp_path: Path, fake_study: FakeStudy) -> None:
    study = fake_study(tmp_path)
    with (study / "results.csv").open() as f:
        rows = [dict(r, status="running", val_loss="") for r in csv.DictReader(f)]
    with (study / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(UserError, match="no rows with a weight decay whose pretraining finished"):
        build_report(study)
