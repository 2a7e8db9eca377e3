"""One run-directory type (issue #14): `plasticity.checkpoints` resolves a run dir, a checkpoint dir or a Hub id the
same way for every command; the Hub is reached only through `hub_snapshot` (mocked here with PLASTICITY_HUB_MOCK)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plasticity import checkpoints as ck
from plasticity.errors import CheckpointError, UserError
from tests.conftest import run_cli

FT = ("task=demo_arith", "train.max_steps=1", "train.threads=1", "train.precision=fp32", "max_examples=8")


def _one_line_exit_2(r, needle: str) -> None:
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr


@pytest.fixture
def mock_hub(tiny_run, tmp_path, monkeypatch) -> Path:
    """A mock Hub with `org/tiny` at revision r1 only (a copy of the tiny run's final/ model)."""
    hub = tmp_path / "hub"
    shutil.copytree(tiny_run / "final", hub / "org__tiny@r1")
    monkeypatch.setenv(ck.HUB_MOCK_ENV, str(hub))
    return hub


def test_resolve_run_checkpoint_and_hub(tiny_run):
    src = ck.resolve_model_source(tiny_run)
    assert (src.kind, src.path, src.run_dir, src.revision) == ("run", str(tiny_run / "final"), tiny_run, None)
    src = ck.resolve_model_source(str(tiny_run / "final"), revision="ignored")  # local dirs have no revision
    assert (src.kind, src.path, src.run_dir, src.revision) == ("checkpoint", str(tiny_run / "final"), tiny_run, None)
    step = ck.list_checkpoints(tiny_run / "checkpoints")[0][1]
    assert ck.resolve_model_source(step).run_dir == tiny_run
    assert ck.RunDir(tiny_run).snapshot_at(0.25).path == str(tiny_run / "checkpoints" / "step_0000005")
    assert ck.RunDir(tiny_run).snapshot_at(1.0).path == str(tiny_run / "final")
    hub = ck.resolve_model_source("allenai/OLMo-2-0425-1B", "stage1-step1000")
    assert (hub.kind, hub.path, hub.revision, hub.run_dir) == ("hub", "allenai/OLMo-2-0425-1B", "stage1-step1000", None)
    assert hub.describe() == "allenai/OLMo-2-0425-1B@stage1-step1000"


def test_run_dir_knows_the_layout(tiny_run, tmp_path):
    """RunDir: files, parsed contents and the run a checkpoint belongs to, on a real pretraining run."""
    from plasticity.config import PretrainConfig

    run = ck.RunDir(tiny_run)
    assert run.is_run() and run.completed() and run.kind() == "pretrain"
    assert isinstance(run.config(PretrainConfig), PretrainConfig) and run.config()["train"]["max_steps"] >= 1
    assert run.summary()["status"] == "completed"
    assert run.final == tiny_run / "final" and run.snapshot(5) == tiny_run / "checkpoints" / "step_0000005"
    assert [s for s, _ in run.snapshots()] == [s for s, _ in ck.list_checkpoints(tiny_run / "checkpoints")]
    assert ck.RunDir.owning(run.snapshot(5)) == run and ck.RunDir.owning(run.final) == run
    assert ck.RunDir.owning(tmp_path) is None and not ck.RunDir(run.final).is_run()
    bare = ck.RunDir(tmp_path)  # (the shared run may have been analysed by another test of the session)
    assert bare.analysis("norms") is None and bare.eval("demo_arith") is None  # absent files: None
    fake = tmp_path / "ft"
    fake.mkdir()
    (fake / "config.yaml").write_text(f"init_from: {tiny_run / 'final'}\ntask: demo_arith\nout_dir: {fake}\n")
    assert ck.RunDir(fake).pretrain_run() == run  # fine-tuned from the run's final/ model
    (fake / "config.yaml").write_text(f"init_from: {tmp_path}\ntask: demo_arith\nout_dir: {fake}\n")
    assert ck.RunDir(fake).pretrain_run() is None  # not a plasticity run
    from plasticity.config import FinetuneConfig
    from plasticity.errors import CorruptFileError

    read_already = FinetuneConfig(init_from=str(tiny_run / "final"))  # the caller's config: no second read
    assert ck.RunDir(fake).pretrain_run(read_already) == run
    (fake / "summary.json").write_text('{"status": "compl')
    assert ck.RunDir(fake).summary() is None  # damaged: None, or a one-line error when strict
    with pytest.raises(CorruptFileError, match="summary.json: not valid JSON"):
        ck.RunDir(fake).summary(strict=True)
    assert ck.RunDir(tmp_path / "none").summary(strict=True) is None


def test_resolve_errors(tiny_run, tmp_path):
    cases = {"missing": tmp_path / "nope", "relative": "runs/x/y", "not_hub": "not-a-hub-id"}
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(tiny_run / "config.yaml", unfinished / "config.yaml")
    cases.update(file=tmp_path / "file", empty=tmp_path / "empty", unfinished=unfinished)
    needles = {"missing": "no such run", "relative": "no such run", "not_hub": "no such run",
               "file": "not a checkpoint directory", "empty": "neither a run", "unfinished": "no final/"}
    for name, spec in cases.items():
        with pytest.raises(CheckpointError, match=needles[name]):
            ck.resolve_model_source(spec)
    with pytest.raises(CheckpointError, match="step_0000006.*add 0.3 to train.checkpoint_fractions"):
        ck.RunDir(tiny_run).snapshot_at(0.3)


def test_architecture_and_manifest_checks(tiny_run, tmp_path):
    assert ck.check_architecture(tiny_run / "final") == "llama"
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match=r"gpt2/config.json: model type 'gpt2' is not Llama, OLMo-2, "
                                        r"Mistral, Qwen2, Qwen3 or GPT-NeoX"):
        ck.check_architecture(gpt2)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run / "final", bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(-3, 2)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CheckpointError, match="sha256"):
        ck.load_model_checked(bad)


def test_rank_analysis_checks_the_manifest(tiny_run, tmp_path):
    """Every step checkpoint the rank analysis loads is verified against its manifest first."""
    from plasticity.analysis.rank import ranks_over_checkpoints

    step = tmp_path / "step"
    shutil.copytree(ck.list_checkpoints(tiny_run / "checkpoints")[0][1], step)
    with open(step / "model.safetensors", "r+b") as f:
        f.seek(-3, 2)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CheckpointError, match="sha256"):
        ranks_over_checkpoints([(5, step)])


def test_hub_mock(mock_hub, monkeypatch):
    assert ck.hub_snapshot("org/tiny", "r1") == str(mock_hub / "org__tiny@r1")
    with pytest.raises(CheckpointError, match="org/tiny@r2: not in the mock Hub"):
        ck.hub_snapshot("org/tiny", "r2")
    model = ck.load_model_checked("org/tiny", revision="r1")
    assert model.config.model_type == "llama"
    monkeypatch.setenv(ck.HUB_MOCK_ENV, str(mock_hub / "org__tiny@r1"))  # the directory itself stands in
    assert ck.hub_snapshot("any/model") == str(mock_hub / "org__tiny@r1")


def test_hub_download_failure_is_one_line(monkeypatch):
    import huggingface_hub

    def offline(repo_id, **kw):
        raise OSError(f"cannot reach the Hub for {repo_id}\nsecond line")

    monkeypatch.delenv(ck.HUB_MOCK_ENV, raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match=r"^org/x@v1: cannot download from the Hub: cannot reach") as e:
        ck.hub_snapshot("org/x", "v1")
    assert "\n" not in str(e.value)


def test_finetune_evaluate_analyze_a_hub_model(mock_hub, tmp_path):
    """The commands take a Hub id + revision and fetch it through hub_snapshot (the mock): no other Hub call."""
    env = {ck.HUB_MOCK_ENV: str(mock_hub)}
    ft = tmp_path / "ft"
    r = run_cli("finetune", "init_from=org/tiny", "revision=r1", f"out_dir={ft}", *FT, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((ft / "summary.json").read_text())["model_dir"] == "org/tiny"
    r = run_cli("finetune", "init_from=org/tiny", "revision=r2", f"out_dir={tmp_path / 'ft2'}", *FT, timeout=300,
                env=env)
    _one_line_exit_2(r, "org/tiny@r2")
    r = run_cli("evaluate", "org/tiny", "--revision", "r1", "--task", "demo_arith", "--out", str(tmp_path / "ev"),
                "--k", "1", "--max-questions", "2", "--max-new-tokens", "4", timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "ev" / "demo_arith.json").read_text())["config"]["model_dir"] == "org/tiny"
    r = run_cli("analyze", "org/tiny", "--revision", "r1", "--what", "norms", timeout=300, env=env)
    _one_line_exit_2(r, "--out is required")
    r = run_cli("analyze", "org/tiny", "--revision", "r1", "--what", "norms", "--out", str(tmp_path / "an"),
                timeout=300, env=env)
    assert r.returncode == 0 and (tmp_path / "an" / "norms.json").is_file(), r.stderr[-3000:]


def test_analyze_a_hub_model(mock_hub, tmp_path):
    from plasticity.analysis.analyzer import run_analyze
    from plasticity.config import AnalyzeConfig

    res = run_analyze("org/tiny", AnalyzeConfig(what=["norms"]), out_dir=tmp_path / "an", revision="r1",
                      log=lambda _: None)
    assert res["target"] == "org/tiny@r1" and res["kind"] == "checkpoint"
    assert (tmp_path / "an" / "norms.json").is_file()
    with pytest.raises(UserError, match="--out is required"):
        run_analyze("org/tiny", AnalyzeConfig(what=["norms"]), revision="r1")
