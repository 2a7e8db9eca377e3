"""The report as a registry (issue 24): `ReportData` read once from results.csv and the runs it names, one
registered `Figure` per plot, each drawn (or skipped with its reason) alone; which rows a figure uses when a
fine-tuning setting is swept; lower-is-better metrics where a best setting or a best weight decay is picked."""

from __future__ import annotations

import csv
import inspect
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from plasticity.report import slices
from plasticity.report.build import build_report
from plasticity.report.data import load_report_data, read_results, run_dir
from plasticity.report.figures import ORDER, REGISTRY, Canvas, Needs, figures

FakeStudy = Callable[..., Path]


def _data(study: Path, headline: dict[str, str] | None = None):
    fields, rows = read_results(study)
    return load_report_data(study, fields, rows, headline)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def test_every_registered_figure_is_shown_once_in_order() -> None:
    assert len(set(ORDER)) == len(ORDER) and set(ORDER) == set(REGISTRY)
    assert [f.name for f in figures()] == list(ORDER)
    for fig in figures():
        assert fig.rows in ("runs", "downstream", "completed"), fig.name


def test_a_registered_figure_is_drawn_by_the_report(tmp_path: Path, fake_study: FakeStudy) -> None:
    """Registering a figure is all it takes: build_report draws it (after the report's own), or skips it with
    the reason its needs give."""
    from plasticity.report.figures import figure

    def bars(canvas, data, points, item) -> None:
        fig, ax = canvas.new()
        ax[0][0].bar([p.label for p in points], [p.get("weight_norm") for p in points])
        canvas.save(fig)

    try:
        figure("weight_norm_bars", "Weight norm per run.", needs=Needs(columns=("weight_norm",)))(bars)
        figure("needs_nope_json", "Never drawn.", needs=Needs(analysis=("nope",)))(bars)
        with pytest.raises(ValueError, match="registered twice"):
            figure("weight_norm_bars", "again")(bars)
        assert [f.name for f in figures()][-2:] == ["weight_norm_bars", "needs_nope_json"]
        study = fake_study(tmp_path)
        text = build_report(study).read_text()
    finally:
        for name in ("weight_norm_bars", "needs_nope_json"):
            REGISTRY.pop(name, None)
    assert (study / "report" / "weight_norm_bars.png").is_file()
    assert "<figcaption>Weight norm per run.</figcaption>" in text
    assert "Skipped: Never drawn. (no analysis/nope.json in the run directories)" in text


def test_build_report_is_a_short_loop_over_the_registry() -> None:
    lines = inspect.getsource(build_report).splitlines()
    assert len(lines) < 80
    assert "figures()" in "\n".join(lines)


def test_one_figure_draws_alone_from_report_data(tmp_path: Path, fake_study: FakeStudy) -> None:
    data = _data(fake_study(tmp_path))
    out = tmp_path / "figs"
    out.mkdir()
    canvas = Canvas(out, data)
    REGISTRY["fig1_val_loss_vs_wd"].render(canvas, data)
    assert [e["name"] for e in canvas.entries] == ["fig1_val_loss_vs_wd"]
    assert canvas.entries[0]["caption"].startswith("Final validation loss vs pretraining weight decay")
    assert (out / "fig1_val_loss_vs_wd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "fig1_val_loss_vs_wd.svg").is_file()
    assert {p.name for p in out.iterdir()} == {"fig1_val_loss_vs_wd.png", "fig1_val_loss_vs_wd.svg"}

    REGISTRY["fig4_probe_{item}"].render(canvas, data)  # one figure per probe set, from each run's probes.json
    assert [e["name"] for e in canvas.entries[1:]] == ["fig4_probe_sst2", "fig4_probe_ag_news"]
    assert canvas.entries[1]["caption"].endswith("probe set sst2.")
    assert (out / "fig4_probe_ag_news.png").is_file() and (out / "fig4_probe_ag_news.svg").is_file()


def test_a_figure_whose_needs_are_missing_is_skipped_with_the_reason(tmp_path: Path, fake_study: FakeStudy) -> None:
    study = fake_study(tmp_path)
    for run in (study.parent / "runs").glob("pretrain-*"):
        (run / "analysis" / "rank.json").unlink()
    data = _data(study)
    canvas = Canvas(tmp_path, data)
    REGISTRY["fig5_rank_over_training"].render(canvas, data)
    REGISTRY["fig5_rank_layers_over_training"].render(canvas, data)
    assert [(e["name"], e["note"]) for e in canvas.entries] == [
        (None, "no analysis/rank.json in the run directories"), (None, "no analysis/rank.json with per-layer ranks")]
    assert canvas.entries[0]["caption"].startswith("Mean QK and VP pseudo-rank fraction")
    assert not list(tmp_path.glob("fig5_*"))
    # the stated reasons a Needs gives by itself
    assert Needs(columns=("a", "b")).missing(data, data.points) == "no a / b values in results.csv"
    assert Needs(columns=("val_loss", "nope"), together=True, min_points=2).missing(data, data.points) == \
        "fewer than 2 runs with val_loss / nope"
    assert Needs(columns=("val_loss",), analysis=("probes",), metrics=True).missing(data, data.points) is None
    assert Needs(analysis=("rank",)).missing(data, data.points) == "no analysis/rank.json in the run directories"


def test_run_paths_are_the_ones_results_csv_records(tmp_path: Path, fake_study: FakeStudy) -> None:
    """`run` and `finetune_runs` are relative to the study directory (or absolute): no guessing elsewhere."""
    study = fake_study(tmp_path)
    assert run_dir(study, "../runs/pretrain-0000").path == study / "../runs/pretrain-0000"
    assert run_dir(study, str((study.parent / "runs" / "pretrain-0000").resolve())) is not None
    assert run_dir(study, "runs/demo/pretrain-0000") is None  # relative to something else: not found
    assert run_dir(study, "") is None
    data = _data(study)
    assert all(p.run is not None and p.analysis("probes") for p in data.points)
    ft = study.parent / "runs" / "finetune-0"
    ft.mkdir()
    p = data.points[0]
    p.row["finetune_runs"] = "../runs/finetune-0;../runs/finetune-gone"
    assert [r.path for r in p.finetune_runs] == [study / "../runs/finetune-0"]


# ----------------------------------------------------------------------------------------------- lower is better


def _harm_study(root: Path) -> Path:
    """2 wds x 2 seeds x 2 fine-tuning lrs, a harmfulness metric (lower is better) and a greedy one: lr 0.001
    is the less harmful setting, wd 1.0 the less harmful weight decay."""
    study = root / "out" / "harm"
    study.mkdir(parents=True)
    rows = []
    for i, (wd, seed) in enumerate((w, s) for w in (0.0, 1.0) for s in (0, 1)):
        for lr in (0.001, 0.003):
            harm = 0.5 - 0.3 * wd + 0.01 * seed + (0.2 if lr == 0.003 else 0.0)
            rows.append({"optim.weight_decay": wd, "train.seed": seed, "finetune.optim.lr": lr,
                         "run": f"../runs/pretrain-{i}", "status": "completed", "val_loss": 3.0 + 0.1 * wd,
                         "safe/safe/harmfulness_mean": harm, "other/other/greedy": 0.3 + 0.1 * wd,
                         "avg_safety/harmfulness_mean": harm, "avg_safety/tasks": "safe"})
    _write_csv(study / "results.csv", rows)
    return study


def test_best_setting_of_a_lower_is_better_metric_is_its_lowest() -> None:
    fields = ["optim.weight_decay", "finetune.optim.lr", "run", "t/t/harmfulness_mean", "t/t/greedy"]
    rows = [{"optim.weight_decay": "0", "finetune.optim.lr": lr, "run": "a", "t/t/harmfulness_mean": h,
             "t/t/greedy": g} for lr, h, g in (("1e-3", "0.2", "0.1"), ("3e-3", "0.6", "0.4"))]
    best, note = slices.downstream(rows, fields, "t/t/harmfulness_mean")
    assert [r["finetune.optim.lr"] for r in best] == ["1e-3"] and "by t/t/harmfulness_mean" in note
    best, _ = slices.downstream(rows, fields, "t/t/greedy")
    assert [r["finetune.optim.lr"] for r in best] == ["3e-3"]
    best, _ = slices.downstream(rows, fields, None, {"t": "harmfulness_mean"})  # report.headline: each task
    assert best[0]["t/chosen"] == "finetune.optim.lr=1e-3" and best[0]["headline"] == pytest.approx(0.2)


def test_summary_of_a_lower_is_better_headline_names_the_least_harmful(tmp_path: Path) -> None:
    study = _harm_study(tmp_path)
    data = _data(study)
    assert data.main_metric == "avg_safety/harmfulness_mean" and data.lower_is_better is True
    assert [p.row["finetune.optim.lr"] for p in data.ds] == ["0.001"] * 4  # the less harmful lr of each run
    build_report(study)
    s = json.loads((study / "report" / "summary.json").read_text())
    assert any(t.startswith("Lowest avg_safety/harmfulness_mean at wd = 1 (0.2050;") for t in s["summary"])
    opt = s["columns"]["avg_safety/harmfulness_mean"]["optimum"]
    assert opt["best"] == 1.0 and opt["lower_is_better"] is True
    # wd 0 has the lowest val loss, wd 1 the least harmful models: the best-headline wd is the larger one in
    # every resample (harmfulness maximized like a score would make the most harmful wd 0 win: "equal")
    assert s["optimum_order"]["greater"] == 1.0


def test_report_headline_of_lower_is_better_metrics_picks_the_lowest(tmp_path: Path) -> None:
    study = _harm_study(tmp_path)
    out = tmp_path / "alt"
    build_report(study, out, headline={"safe": "harmfulness_mean"})
    s = json.loads((out / "summary.json").read_text())
    assert any(t.startswith("Lowest headline at wd = 1 ") for t in s["summary"])
    assert s["columns"]["headline"]["optimum"]["best"] == 1.0
    with (out / "downstream.csv").open() as f:
        assert {r["safe/chosen"] for r in csv.DictReader(f)} == {"finetune.optim.lr=0.001"}
    # a headline mixing directions has no best weight decay (no optimum, no sentence naming one)
    build_report(study, tmp_path / "mixed", headline={"safe": "harmfulness_mean", "other": "greedy"})
    s = json.loads((tmp_path / "mixed" / "summary.json").read_text())
    assert "optimum" not in s["columns"]["headline"] and "optimum_order" not in s
    assert not any(t.startswith(("Lowest headline", "Highest headline")) for t in s["summary"])


# ----------------------------------------------------------------------------------------------- swept settings


def test_plasticity_over_pretraining_takes_the_best_setting_from_each_point(tmp_path: Path) -> None:
    """App. E.1 lr sweep x finetune_from: from each fraction of pretraining the best lr per run, never the two
    lrs pooled as if they were seeds."""
    study = tmp_path / "out" / "sweep"
    study.mkdir(parents=True)
    rows = []
    for i, wd in enumerate((0.0, 1.0)):
        for frac in (0.5, 1.0):
            for lr, bonus in ((0.001, 0.0), (0.003, 0.4)):
                rows.append({"optim.weight_decay": wd, "finetune_from": frac, "finetune.optim.lr": lr,
                             "run": f"../runs/pretrain-{i}", "status": "completed", "val_loss": 3.0,
                             "t/t/pass@4": 0.1 * frac + 0.1 * wd + bonus})
    _write_csv(study / "results.csv", rows)
    data = _data(study)
    assert data.fracs == [0.5, 1.0]
    half = data.at_fraction(0.5)
    assert [(p.wd, p.row["finetune.optim.lr"]) for p in half] == [(0.0, "0.003"), (1.0, "0.003")]
    canvas = Canvas(tmp_path, data)
    REGISTRY["fig9_plasticity_over_pretraining"].render(canvas, data)
    assert canvas.entries[0]["name"] == "fig9_plasticity_over_pretraining"
    build_report(study)
    s = json.loads((study / "report" / "summary.json").read_text())
    assert "t/t/pass@4 fine-tuned from 0.5 vs 1 of pretraining: wd 0: 0.45 -> 0.5, wd 1: 0.55 -> 0.6." in s["summary"]
