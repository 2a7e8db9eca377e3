"""`evaluate_with_stability` (what `plasticity evaluate RUN` and a study's evaluate node run) on a real fine-tuning
run of the session's tiny pretraining run: the run's config is read once, each model is loaded once, and sharing
the loaded model changes no byte of the results."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from plasticity.config import EvaluateConfig
from tests.conftest import run_cli

CFG = EvaluateConfig(k=2, max_questions=2, max_new_tokens=8, batch_size=4, stability_tasks=["demo_choice"],
                     stability_max_questions=6, stability_sequences=4)


@pytest.fixture(scope="module")
def ft_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step fine-tuning run of a private copy of the session's tiny run (whose base cloze cache this module
    clears)."""
    import shutil

    root = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(tiny_run, root / "base", ignore=shutil.ignore_patterns("checkpoints", "upstream_cloze"))
    out = root / "ft"
    r = run_cli("finetune", f"init_from={root / 'base'}", f"out_dir={out}", "task=demo_arith", "max_examples=8",
                "cutoff_len=512", "train.micro_batch_size=4", "train.grad_accum=1", "train.max_steps=1",
                "train.threads=1")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _count_reads_and_loads(monkeypatch: pytest.MonkeyPatch) -> tuple[Counter, Counter]:
    """Counters of YAML config files read (`plasticity.config.read_yaml`, which every RunDir.config goes through)
    and of models loaded (`AutoModelForCausalLM.from_pretrained`), by resolved path."""
    import transformers

    import plasticity.config

    reads: Counter = Counter()
    loads: Counter = Counter()
    read_yaml = plasticity.config.read_yaml
    from_pretrained = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def counting_read(path, *a, **kw):
        reads[str(Path(path).resolve())] += 1
        return read_yaml(path, *a, **kw)

    def counting_load(cls, path, *a, **kw):
        loads[str(Path(path).resolve())] += 1
        return from_pretrained(cls, path, *a, **kw)

    monkeypatch.setattr(plasticity.config, "read_yaml", counting_read)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(counting_load))
    return reads, loads


def test_one_config_read_and_one_load_per_model(ft_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from plasticity.evaluate.evaluator import run_evaluate
    from plasticity.evaluate.pipeline import evaluate_with_stability
    from plasticity.evaluate.stability import upstream_stability

    # the reference: evaluation and stability each on its own (each resolves the run and loads the model itself)
    ref = tmp_path / "separate"
    run_evaluate(ft_run, CFG, out_dir=ref, log=lambda _: None)
    upstream_stability(ft_run, CFG, out_path=ref / "stability.json", log=lambda _: None)

    base = ft_run.parent / "base"
    shutil.rmtree(base / "upstream_cloze")  # the base model's cloze accuracies are computed again, not cached
    reads, loads = _count_reads_and_loads(monkeypatch)
    shared = tmp_path / "shared"
    ev = evaluate_with_stability(str(ft_run), CFG, out_dir=shared, log=lambda _: None)
    assert set(ev.results) == {"demo_arith"} and ev.stability["cloze_sets"] == ["demo_choice"]
    assert ev.stability["upstream_loss_change"] is not None  # fine-tuned from a plasticity pretraining run

    assert reads[str((ft_run / "config.yaml").resolve())] == 1  # before issue 24: 3
    assert reads[str((base / "config.yaml").resolve())] == 1  # the base run's data, for the val loss
    assert loads[str((ft_run / "final").resolve())] == 1  # before issue 24: 3 (evaluation, cloze, val loss)
    assert loads[str((base / "final").resolve())] == 1  # before issue 24: 2 (cloze, val loss)
    assert sum(loads.values()) == 2, loads

    names = sorted(p.name for p in shared.iterdir())
    assert names == sorted(p.name for p in ref.iterdir()) and "stability.json" in names
    for name in names:
        assert (shared / name).read_bytes() == (ref / name).read_bytes(), name


def test_cli_measures_stability_with_settings_from_options_and_a_config_file(ft_run: Path, tmp_path: Path) -> None:
    """Every EvaluateConfig field is an option (`--temperature`, `--stability-max-questions` are new); a --config
    file sets the others; the command line wins over the file."""
    import json

    import yaml

    settings = tmp_path / "evaluate.yaml"
    settings.write_text(yaml.safe_dump({"k": 3, "max_questions": 2, "max_new_tokens": 8, "batch_size": 4,
                                        "stability_tasks": ["demo_choice"], "stability_sequences": 4}))
    out = tmp_path / "cli"
    r = run_cli("evaluate", str(ft_run), "--config", str(settings), "--k", "2", "--temperature", "0.5",
                "--stability-max-questions", "6", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((out / "demo_arith.json").read_text())
    assert data["config"]["k"] == 2 and data["config"]["temperature"] == 0.5 and data["config"]["max_questions"] == 2
    stab = json.loads((out / "stability.json").read_text())
    assert stab["cloze_sets"] == ["demo_choice"] and stab["n_sequences"] == 4
    assert "stability (App. D" in r.stdout and "upstream val loss" in r.stdout

    bad = run_cli("evaluate", str(ft_run), "--k", "0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "k: must be >= 1" in bad.stderr and not (tmp_path / "bad").exists()


def test_precision_bf16_loads_both_models_in_bf16_and_auto_is_fp32_on_cpus(ft_run: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`precision: bf16` loads the fine-tuned model and, for stability, its base alike in bf16 (logits scored in
    fp32); every result records the precision. `auto` is fp32 on a CPU (the default evaluation is unchanged) and
    bf16 on a CUDA GPU with bf16. The bf16 numbers follow fp32's: weights and activations round to 8 significant
    bits (u = 2**-9), which moves a token's loss by a few u x |logit|; the mean validation losses agree to 2**-6."""
    import dataclasses
    import json

    import torch
    import transformers

    from plasticity.evaluate.pipeline import evaluate_with_stability
    from plasticity.hardware import resolve_eval_precision

    assert EvaluateConfig().precision == "auto" and resolve_eval_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_eval_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_eval_precision("fp32", torch.device("cuda")) == "fp32"

    dtypes: list = []
    from_pretrained = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spying_load(cls, path, *a, **kw):
        dtypes.append(kw.get("dtype"))
        return from_pretrained(cls, path, *a, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spying_load))
    runs = {}
    for precision in ("bf16", "auto"):
        out = tmp_path / precision
        ev = evaluate_with_stability(ft_run, dataclasses.replace(CFG, precision=precision), out_dir=out,
                                     log=lambda _: None)
        runs[precision] = ev.stability
        assert json.loads((out / "demo_arith.json").read_text())["config"]["precision"] == (
            "bf16" if precision == "bf16" else "fp32")
    assert dtypes == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]  # fine-tuned, base; twice
    for key in ("base_val_loss", "finetuned_val_loss"):
        a, b = runs["auto"][key], runs["bf16"][key]
        assert abs(a - b) <= 2.0**-6 * abs(a), (key, a, b)
