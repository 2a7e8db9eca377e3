"""End-to-end ``plasticity analyze`` on two tiny pretraining runs (weight decay 0 and 3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import plasticity
from plasticity.analysis.analyzer import compare_runs, run_analyze
from plasticity.analysis.cli import register
from plasticity.config import AnalyzeConfig
from plasticity.errors import CheckpointError, UserError
from tests.conftest import WDS, needs_data


@pytest.fixture(scope="module")
def analysed(wd_runs, tmp_path_factory) -> dict[float, tuple[Path, dict]]:
    """The session's wd 0 / wd 3 runs (tests/conftest.py: 30 steps, lr 0.01, packaged BBC text), analysed."""
    out = {}
    for wd in WDS:
        run = wd_runs[wd]
        res = run_analyze(run, AnalyzeConfig(n_probe=100, gap_sequences=16, probe_sets=["bbc_topic"]),
                          log=lambda m: None)
        out[wd] = (run, res)
    return out


def test_files_and_fields(analysed):
    for run, res in analysed.values():
        a = run / "analysis"
        for name in ("probes", "rank", "gap", "norms"):
            assert (a / f"{name}.json").is_file()
            assert json.loads((a / f"{name}.json").read_text()) == json.loads(json.dumps(res[name]))
        probes = res["probes"]["sets"]["bbc_topic"]
        assert probes["n_examples"] == 100
        assert len(probes["layers"]) == 5  # embeddings + 4 layers
        assert 0.0 <= probes["best_test_accuracy"] <= 1.0
        assert res["norms"]["total_norm"] > 0


def test_rank_over_checkpoints(analysed):
    for run, res in analysed.values():
        rank = res["rank"]
        assert rank["threshold"] == 0.95
        steps = [c["step"] for c in rank["checkpoints"]]
        assert len(steps) == 4 and steps == sorted(steps) and steps[-1] == 30
        assert rank["checkpoints"][-1]["path"] == str(run / "final")
        for c in rank["checkpoints"]:
            assert set(c["mean"]) == {"qk", "vp"} and len(c["layers"]) == 4
            assert 1 <= c["mean"]["qk"]["rank"] <= c["max_rank"]


def test_gap_finite_with_unseen(analysed):
    for _, res in analysed.values():
        gap = res["gap"]
        assert gap["n_sequences"] == 16 and gap["seq_len"] == 32
        assert gap["n_seen"] == 30 * 4 and gap["n_unseen"] > 0
        tv, us = gap["train_val"], gap["unseen_seen"]
        assert us is not None
        for v in (tv["train_loss"], tv["val_loss"], tv["gap"], us["seen_loss"], us["unseen_loss"], us["gap"]):
            assert math.isfinite(v)


def test_weight_decay_shrinks_norm(analysed):
    assert analysed[3.0][1]["norms"]["total_norm"] < analysed[0.0][1]["norms"]["total_norm"]


def test_compare_runs(analysed, tmp_path):
    dest = tmp_path / "cmp.json"
    res = compare_runs([analysed[3.0][0], analysed[0.0][0]], dest)
    assert [r["weight_decay"] for r in res["rows"]] == [0.0, 3.0]
    assert res["correlations_with_val_loss"] == {}
    row = res["rows"][0]
    for k in ("final_val_loss", "weight_norm", "qk_rank", "vp_rank", "qk_rank_frac", "qk_rank_frac_layers",
              "probe_bbc_topic", "probe_mean_best", "train_val_gap", "unseen_seen_gap"):
        assert row[k] is not None
    # the same analysis value has the same name as in a study's results.csv (plasticity.analysis.columns)
    from plasticity.analysis.columns import analysis_columns

    cols = analysis_columns(analysed[0.0][0] / "analysis")
    assert {k: row[k] for k in cols} == cols
    assert json.loads(dest.read_text())["n_runs"] == 2


def test_external_checkpoint_and_cli(analysed, tmp_path):
    run = analysed[0.0][0]
    res = run_analyze(run / "final", AnalyzeConfig(what=["rank", "gap"]), out_dir=tmp_path / "ext", log=lambda m: None)
    assert [c["step"] for c in res["rank"]["checkpoints"]] == [-1]
    assert res["gap"]["train_val"] is None and "gap-data" in res["gap"]["reason"]
    txt = tmp_path / "held.txt"
    txt.write_text("The economy grew faster than expected in the last quarter. " * 60)
    res = run_analyze(run / "final", AnalyzeConfig(what=["gap"], gap_data=str(txt), gap_sequences=4),
                      out_dir=tmp_path / "ext2", log=lambda m: None)
    assert math.isfinite(res["gap"]["data_loss"]["loss"])

    app = typer.Typer()
    register(app)

    @app.command()
    def _other() -> None:  # a second command so typer keeps "analyze" as a subcommand
        pass

    runner = CliRunner()
    r = runner.invoke(app, ["analyze", str(run), "--what", "norms", "--out", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cli" / "norms.json").is_file()
    r = runner.invoke(app, ["analyze", str(tmp_path / "missing")])
    assert r.exit_code == 2
    r = runner.invoke(app, ["analyze", str(run), "--what", "bogus"])
    assert r.exit_code == 2 and "unknown analysis 'bogus'" in r.output
    r = runner.invoke(app, ["analyze", str(run), "--what", ""])
    assert r.exit_code == 2 and "nothing to analyse" in r.output
    r = runner.invoke(app, ["analyze", str(run), "--rank-layers", "5,x"])
    assert r.exit_code == 2 and "--rank-layers '5,x'" in r.output
    r = runner.invoke(app, ["analyze", "--compare", str(analysed[0.0][0]), str(analysed[3.0][0]),
                            "--out", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c.json").read_text())["n_runs"] == 2


def test_user_errors(tmp_path):
    with pytest.raises(CheckpointError):
        run_analyze(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError):
        run_analyze(tmp_path / "empty")
    with pytest.raises(UserError, match="unknown analysis 'ranks'"):
        plasticity.analyze(tmp_path, what="ranks")


def test_compare_three_runs_correlates(analysed, tmp_path):
    import shutil

    runs = []
    for i, (wd, loss) in enumerate([(0.0, 3.0), (1.0, 3.5), (3.0, 4.2)]):
        src = analysed[0.0 if i == 0 else 3.0][0]
        dst = tmp_path / f"r{i}"
        dst.mkdir()
        shutil.copytree(src / "analysis", dst / "analysis")
        (dst / "config.yaml").write_text((src / "config.yaml").read_text().replace(
            f"weight_decay: {0.0 if i == 0 else 3.0}", f"weight_decay: {wd}"))
        summary = json.loads((src / "summary.json").read_text())
        (dst / "summary.json").write_text(json.dumps({**summary, "final_val_loss": loss}))
        runs.append(dst)
    res = compare_runs(runs)
    assert [r["weight_decay"] for r in res["rows"]] == [0.0, 1.0, 3.0]
    c = res["correlations_with_val_loss"]
    assert c["weight_decay"]["n"] == 3 and c["weight_decay"]["pearson_r"] > 0.9
    assert "weight_norm" in c and "rank_layers" not in c  # numbers only


@needs_data("sst2", "train.jsonl")
def test_local_probe_sets(analysed, tmp_path):
    run = analysed[0.0][0]
    res = run_analyze(run, AnalyzeConfig(what=["probes"], n_probe=40, probe_sets=["sst2", "ag_news"]),
                      out_dir=tmp_path, log=lambda m: None)
    assert set(res["probes"]["sets"]) == {"sst2", "ag_news"}
    assert res["probes"]["sets"]["ag_news"]["n_examples"] == 40


def test_compare_with_finetuned_runs_keys_columns_by_task_and_eval_set(analysed, tmp_path):
    """`analyze --compare --finetuned`: two tasks fine-tuned from one run, both evaluated on demo_arith, keep
    separate `{task}/{eval_set}/{metric}` columns (and the averaged headline), never one overwriting the other."""
    from tests.conftest import run_cli

    pre = analysed[0.0][0]
    fts = []
    for task in ("demo_arith", "demo_arith_short"):
        ft = tmp_path / task
        args = [f"init_from={pre}", f"out_dir={ft}", f"task={task}", "max_examples=8", "cutoff_len=256",
                "train.micro_batch_size=8", "train.epochs=1", "train.precision=fp32"]
        assert run_cli("finetune", *args).returncode == 0
        r = run_cli("evaluate", str(ft), "--k", "2", "--max-questions", "3", "--max-new-tokens", "6",
                    "--stability-tasks", "demo_choice")
        assert r.returncode == 0, r.stderr[-2000:]
        fts += ["--finetuned", str(ft)]
    dest = tmp_path / "c.json"
    r = run_cli("analyze", "--compare", str(pre), *fts, "--out", str(dest))
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(dest.read_text())["rows"][0]
    for task, sets in (("demo_arith", ["demo_arith"]), ("demo_arith_short", ["demo_arith", "demo_choice"])):
        for s in sets:
            want = json.loads((tmp_path / task / "eval" / f"{s}.json").read_text())["metrics"]["pass@2"]["value"]
            assert row[f"{task}/{s}/pass@2"] == want
        st = json.loads((tmp_path / task / "eval" / "stability.json").read_text())
        assert row[f"{task}/stability"] == st["stability"] and st["cloze_sets"] == ["demo_choice"]
    pooled = row["demo_arith_short/demo_arith+demo_choice/pass@2"]
    assert row["avg_cot/pass@2"] == pytest.approx((row["demo_arith/demo_arith/pass@2"] + pooled) / 2)
    r = run_cli("analyze", "--compare", str(analysed[3.0][0]), *fts[:2], "--out", str(dest))
    assert r.returncode == 2 and "not fine-tuned from one of the compared" in r.stderr


def test_pinned_paper_probe_sets_refuse_in_one_line_when_not_loadable(tmp_path, monkeypatch):
    import importlib.util

    from plasticity.analysis.analyzer import check_probe_sets
    from plasticity.errors import DataError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    with pytest.raises(DataError, match=r"probe sets sst2, ag_news: no local copy .* no 'datasets' package") as e:
        check_probe_sets(["sst2", "ag_news"], tmp_path)
    assert "\n" not in str(e.value)
    check_probe_sets(["bbc_topic"], tmp_path)  # packaged: always loadable
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.jsonl").write_text('{"sentence": "good", "label": 1}\n')
    with pytest.raises(DataError, match="probe sets ag_news:"):
        check_probe_sets(["sst2", "ag_news"], tmp_path)


def test_rank_at_configured_layers(analysed, tmp_path):
    """The paper-style pseudo-rank (Figs 5, 26) over configured layers; layers the model lacks are dropped and said."""
    run = analysed[0.0][0]
    res = run_analyze(run, AnalyzeConfig(what=["rank"], rank_layers=[0, 9]), out_dir=tmp_path, log=lambda m: None)
    sel = res["rank"]["selected_layers"]
    assert sel["layers"] == [0] and sel["requested"] == [0, 9] and "9" in sel["note"]
    last = res["rank"]["checkpoints"][-1]
    assert last["selected_mean"]["qk"] == pytest.approx(last["layers"][0]["mean"]["qk"]["fraction"])
    default = run_analyze(run, AnalyzeConfig(what=["rank"]), out_dir=tmp_path / "d",
                          log=lambda m: None)["rank"]["selected_layers"]
    assert default["layers"] == [1, 3] and default["requested"] == [5, 15]  # 4 layers: the paper's relative depths
    with pytest.raises(UserError, match="rank_layers"):  # validated where the config is built
        plasticity.analyze(run, what="rank", out_dir=tmp_path / "e", rank_layers=[])
