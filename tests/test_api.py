"""The Python API (issue 29): ``import plasticity`` stays light and offers the documented entry points; the
scripts in examples/ run end to end at tiny scale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import plasticity
from tests.conftest import REPO, tiny_overrides

EXAMPLES = REPO / "examples"
HEAVY = ("torch", "transformers", "pandas", "numpy", "yaml", "tensorboard", "wandb", "typer", "rich")


def _python(code: str, cwd: Path = REPO) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          check=True).stdout.strip()


def test_import_is_light_and_names_resolve():
    out = _python(f"import sys, plasticity; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    assert out == "[]"
    for name in plasticity.__all__:
        assert getattr(plasticity, name) is not None, name
    assert set(plasticity.__all__) >= {"Study", "load_results", "pretrain", "finetune", "evaluate", "analyze"}


def test_evaluate_stays_callable_after_its_subpackage_is_imported():
    out = _python("import plasticity.evaluate.evaluator, plasticity; f = plasticity.evaluate; "
                  "print(callable(f), f.__name__, hasattr(f, 'evaluator'))")
    assert out == "True plasticity.evaluate True"


def test_pretrain_returns_its_summary_and_bad_configs_raise(tmp_path):
    over = dict(o.split("=", 1) for o in tiny_overrides(tmp_path / "run", **{"train.max_steps": 6}))
    over = {k: json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v for k, v in over.items()}
    summary = plasticity.pretrain(None, over)
    assert summary == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 6
    with pytest.raises(plasticity.ConfigError, match="optim.lr: must be > 0"):
        plasticity.pretrain({"optim": {"lr": -1.0}})
    with pytest.raises(plasticity.ConfigError, match="optim.lrr: unknown key"):
        plasticity.finetune({"init_from": str(tmp_path / "run")}, ["optim.lrr=1"])
    with pytest.raises(TypeError, match="a YAML path, a mapping or a PretrainConfig"):
        plasticity.pretrain(42)  # type: ignore[arg-type]
    with pytest.raises(plasticity.UserError, match="no results.csv"):
        plasticity.load_results(tmp_path)


def run_example(name: str, *args: str, cwd: Path) -> str:
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, cwd=cwd,
                       timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return r.stdout


def test_example_custom_study_and_typed_results(tmp_path, monkeypatch):
    out = run_example("custom_study.py", "--out", "studies", "--weight-decays", "0", "1.0", "--tokens", "2560",
                      "--seq-len", "32", "--documents", "150", "--n-train", "8", "--questions", "2",
                      "--workers", "1", cwd=tmp_path)
    assert "wd-from-python:" in out and "qk_rank_frac" in out
    df = plasticity.load_results(tmp_path / "studies" / "wd-from-python")
    assert len(df) == 2 and list(df["status"]) == ["completed", "completed"]
    assert str(df["status"].dtype) == "category" and str(df["run"].dtype) == "string"
    for col in ("optim.weight_decay", "val_loss", "weight_norm", "qk_rank_frac", "demo_arith/demo_arith/pass@2"):
        assert str(df[col].dtype) == "float64", col
    assert str(df["tokens"].dtype) == "Int64" and (df["tokens"] > 0).all()
    assert df.attrs["axes"] == ["optim.weight_decay"] and df.attrs["study"] == "wd-from-python"
    # the study again from Python (its out_dir is relative to where it ran): every node is cached
    monkeypatch.chdir(tmp_path)
    study = plasticity.Study.from_dict(json.loads((tmp_path / "studies" / "wd-from-python" / "study.json")
                                                  .read_text())["spec"])
    assert all(n["state"] == "done" for n in study.plan())


def test_example_released_checkpoint_on_a_tiny_local_model(tmp_path):
    from tests.analysis.test_families import tiny
    from tests.evaluate.conftest import make_tokenizer

    tok = make_tokenizer()
    model = tmp_path / "tiny-neox"
    tiny("gpt_neox", vocab_size=len(tok)).save_pretrained(model)
    tok.save_pretrained(model)
    out = run_example("released_checkpoint.py", "--model", str(model), "--task", "demo_arith", "--out", "rel",
                      "--n-train", "16", "--questions", "2", "--epochs", "1", "--lr", "1e-3", "--cutoff", "256",
                      cwd=tmp_path)
    assert "QK pseudo-rank" in out and "fine-tuned on demo_arith" in out and "demo_arith greedy" in out
    assert (tmp_path / "rel" / "finetune" / "final" / "manifest.json").is_file()


def test_example_compare_runs(wd_runs, tmp_path):
    a, b = tmp_path / "wd0", tmp_path / "wd3"
    shutil.copytree(wd_runs[0.0], a, symlinks=True)
    shutil.copytree(wd_runs[3.0], b, symlinks=True)
    out = run_example("compare_runs.py", str(a), str(b), "--out", "cmp", cwd=tmp_path)
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["weight_decay"][:2] == ["0", "3"]
    assert float(lines["weight_norm"][1]) < float(lines["weight_norm"][0])  # weight decay shrinks the weights
    assert (tmp_path / "cmp" / "wd0" / "rank.json").is_file()
