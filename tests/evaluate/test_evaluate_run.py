"""End-to-end `run_evaluate` / `evaluate` command on a tiny random Llama saved as an HF checkpoint."""

from __future__ import annotations

import json

import pytest
import typer

from plasticity.config import EvaluateConfig
from plasticity.errors import CheckpointError, UserError
from plasticity.evaluate.evaluator import run_evaluate
from plasticity.evaluate.reward import HFRewardModel, RefusalPatternJudge
from tests.conftest import DATA_ROOT as DATA
from tests.conftest import needs_data

SAMPLE_KEYS = {"prompt_id", "sample_index", "text", "extracted", "answer_key", "correct", "reward",
               "num_tokens", "finished_by"}


def _quiet(_msg: str) -> None:
    pass


def _cot(ckpt, out, **kw):
    cfg = EvaluateConfig(k=4, max_questions=6, max_new_tokens=16, batch_size=8, **kw)
    return run_evaluate(str(ckpt), cfg, task="demo_arith", out_dir=out, log=_quiet)


def test_cot_files_metrics_and_determinism(ckpt, tmp_path):
    res = _cot(ckpt, tmp_path / "a")["demo_arith"]
    js, jl = tmp_path / "a" / "demo_arith.json", tmp_path / "a" / "demo_arith.samples.jsonl"
    assert js.is_file() and jl.is_file()
    data = json.loads(js.read_text())
    assert data == json.loads(json.dumps(res))
    assert {"task", "target", "config", "metrics", "n_questions", "samples_path", "versions"} <= set(data)
    assert data["n_questions"] == 6 and data["config"]["k"] == 4
    assert set(data["metrics"]) == {"greedy", "maj@4", "pass@4", "correct_ratio", "heldout_loss"}
    assert data["metrics"]["heldout_loss"]["value"] > 0  # nats per response token of an untrained model
    for name, m in data["metrics"].items():
        if name != "correct_ratio":
            assert m["n"] == 6
        if m["value"] is not None and name != "heldout_loss":
            assert 0.0 <= m["value"] <= 1.0 and m["ci_low"] <= m["value"] <= m["ci_high"]
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert len(lines) == 6 * (1 + 4)
    assert all(SAMPLE_KEYS <= set(x) for x in lines)
    assert sum(x["sample_index"] == -1 for x in lines) == 6
    assert all(x["reward"] is None and 1 <= x["num_tokens"] <= 16 for x in lines)
    assert {x["finished_by"] for x in lines} <= {"eos", "stop", "length"}

    _cot(ckpt, tmp_path / "a")  # same out dir, same seed
    assert js.read_bytes() == json.dumps(data, indent=2).encode() + b"\n"
    b = tmp_path / "b"
    _cot(ckpt, b)
    assert (b / "demo_arith.samples.jsonl").read_bytes() == jl.read_bytes()


def test_cot_with_reward_model(ckpt, rm_dir, tmp_path):
    rm = HFRewardModel(rm_dir)
    scores = rm.score(["Human: hi\nAssistant:"] * 2, [" The answer is 5.", " blue"])
    assert len(scores) == 2 and scores[0] != scores[1]
    res = _cot(ckpt, tmp_path, reward_model=rm)["demo_arith"]
    assert {"rm@4", "orm_score"} <= set(res["metrics"])
    assert res["metrics"]["rm@4"]["n"] == 6 and res["metrics"]["orm_score"]["value"] is not None
    lines = [json.loads(x) for x in (tmp_path / "demo_arith.samples.jsonl").read_text().splitlines()]
    assert all(isinstance(x["reward"], float) for x in lines)


@needs_data("ai2_arc")
def test_cloze(ckpt, tmp_path):
    res = run_evaluate(str(ckpt), EvaluateConfig(max_questions=10, data_root=DATA, data_source="local"),
                       task="arc_easy", out_dir=tmp_path, log=_quiet)["arc_easy"]
    assert set(res["metrics"]) == {"acc", "acc_norm", "acc_template", "acc_norm_template", "heldout_loss"}
    assert res["metrics"].pop("heldout_loss")["n"] == 10
    for m in res["metrics"].values():
        assert m["n"] == 10 and 0.0 <= m["value"] <= 1.0
    lines = [json.loads(x) for x in (tmp_path / "arc_easy.samples.jsonl").read_text().splitlines()]
    assert len(lines) == 10
    assert sum(x["correct_template"] for x in lines) / 10 == res["metrics"]["acc_template"]["value"]
    assert all(len(x["logprobs_template"]) == len(x["logprobs"]) for x in lines)


@needs_data("safety", "eval")
def test_safety_fallback_judge(ckpt, tmp_path):
    cfg = EvaluateConfig(max_questions=5, max_new_tokens=8, data_root=DATA, data_source="local")
    res = run_evaluate(str(ckpt), cfg, task="safety", out_dir=tmp_path, log=_quiet)["safety"]
    m = res["metrics"]["refusal_rate (pattern fallback)"]
    assert m["n"] == 5 and 0.0 <= m["value"] <= 1.0
    judge = RefusalPatternJudge()
    assert judge.score(["p", "p"], ["I'm sorry, I cannot help.", "Sure, here is how."]) == [0.0, 1.0]


def test_paper_harmfulness_judge_gets_its_authors_conversation_format(rm_dir, tmp_path):
    import shutil

    judge_dir = tmp_path / "absolute-harmfulness-predictor-redteam-osst"  # the paper's judge, by name
    shutil.copytree(rm_dir, judge_dir)
    judge = HFRewardModel(judge_dir)
    assert judge._texts(["Human: q\nAssistant: "], ["a"], ["q"]) == ["\n\nHuman: q\n\nAssistant: a"]
    assert judge.max_length == 512 and judge.metric == "harmfulness_mean"
    assert HFRewardModel(rm_dir)._texts(["Human: q\nAssistant: "], ["a"], ["q"]) == ["Human: q\nAssistant: a"]


def test_bad_targets(ckpt, tmp_path):
    with pytest.raises(CheckpointError):
        run_evaluate(str(tmp_path / "nope"), task="demo_arith", out_dir=tmp_path / "o", log=_quiet)
    with pytest.raises(UserError):
        run_evaluate(str(ckpt), out_dir=tmp_path / "o", log=_quiet)
    with pytest.raises(UserError):
        run_evaluate(str(ckpt), task="demo_arith", log=_quiet)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError):
        run_evaluate(str(empty), task="demo_arith", out_dir=tmp_path / "o", log=_quiet)


def test_cli(ckpt, tmp_path):
    from typer.testing import CliRunner

    from plasticity.evaluate.cli import register

    app = typer.Typer()
    register(app)

    @app.command()
    def _other() -> None:  # a second command keeps typer in multi-command mode
        pass

    runner = CliRunner()
    ok = runner.invoke(app, ["evaluate", str(ckpt), "--task", "demo_arith", "--k", "2", "--max-questions", "2",
                             "--max-new-tokens", "8", "--out", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "maj@2" in ok.output and (tmp_path / "demo_arith.json").is_file()
    bad = runner.invoke(app, ["evaluate", str(tmp_path / "missing"), "--task", "demo_arith", "--out", str(tmp_path)])
    assert bad.exit_code == 2


def test_run_dir_defaults(ckpt, tmp_path):
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(ckpt, run / "final")
    from plasticity.checkpoints import FORMAT_VERSION, sha256_file

    files = {f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size} for f in sorted((run / "final").iterdir())}
    (run / "final" / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "files": files}))
    (run / "summary.json").write_text("{}")  # a run's final/ carries its manifest (an HF dir copied in would not)
    template = "Q: {question}\nA: {response}"
    (run / "config.yaml").write_text(yaml.safe_dump({"task": "demo_arith", "template": template}))
    res = run_evaluate(str(run), EvaluateConfig(k=2, max_questions=2, max_new_tokens=8), log=_quiet)
    assert set(res) == {"demo_arith"} and res["demo_arith"]["config"]["template"] == template
    assert (run / "eval" / "demo_arith.json").is_file() and (run / "eval" / "demo_arith.samples.jsonl").is_file()
