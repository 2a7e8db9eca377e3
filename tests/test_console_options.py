"""`plasticity evaluate` and `plasticity analyze` options are generated from their config dataclasses (litgpt style,
`plasticity.console.config_command`): every field is an option with its type, default and comment; the options
that existed before keep their names; `--config FILE` sets fields that options override."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from plasticity.cli import app
from plasticity.config import AnalyzeConfig, EvaluateConfig
from plasticity.console import config_from_options, field_help, option_name
from plasticity.errors import UserError

WIDE = {"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}

# the options of each command before they were generated (documented in README.md and docs/): none may go
EXISTING = {
    "evaluate": ["--revision", "--task", "--k", "--max-questions", "--max-new-tokens", "--seed", "--batch-size",
                 "--out", "--data-root", "--data-source", "--reward-model", "--judge", "--stability",
                 "--no-stability", "--stability-tasks", "--workers"],
    "analyze": ["--revision", "--what", "--compare", "--finetuned", "--out", "--data-root", "--n-probe",
                "--probe-sets", "--gap-sequences", "--gap-data", "--rank-threshold", "--rank-layers"],
}


def _help(command: str) -> str:
    r = CliRunner().invoke(app, [command, "--help"], env=WIDE)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("command, cls", [("evaluate", EvaluateConfig), ("analyze", AnalyzeConfig)])
def test_every_field_is_an_option_with_its_help_and_default(command: str, cls: type) -> None:
    out = _help(command)
    rows = {m.group(1): line for line in out.splitlines() if (m := re.search(r"│ (--[a-z-]+)", line))}
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        name = option_name(f.name)
        assert name in rows, (command, name)
        if f.name != "data_root":  # data_root: the one --data-root option every command shares
            assert helps.get(f.name), f"{cls.__name__}.{f.name} has no comment to be its --help"
    assert "[default: 16]" in rows["--k"] if command == "evaluate" else "[default: 400]" in rows["--n-probe"]
    for name in EXISTING[command] + ["--config"]:
        assert name in out, (command, name)


def test_config_file_then_options(tmp_path: Path) -> None:
    f = tmp_path / "evaluate.yaml"
    f.write_text(yaml.safe_dump({"k": 3, "temperature": 0.5, "stability_tasks": ["demo_choice"]}))
    cfg = config_from_options(EvaluateConfig, {"k": 5, "stability_max_questions": 4}, f)
    assert (cfg.k, cfg.temperature, cfg.stability_tasks, cfg.stability_max_questions) == (5, 0.5, ["demo_choice"], 4)
    assert config_from_options(EvaluateConfig, {"stability_tasks": "a, b,"}).stability_tasks == ["a", "b"]
    assert config_from_options(EvaluateConfig, {"stability_tasks": ""}).stability_tasks is None  # optional list
    assert config_from_options(AnalyzeConfig, {"what": ""}).what == []
    assert config_from_options(AnalyzeConfig, {"rank_layers": "5,15"}).rank_layers == [5, 15]
    with pytest.raises(UserError, match="--rank-layers '5,x': expected comma-separated integers"):
        config_from_options(AnalyzeConfig, {"rank_layers": "5,x"})
    with pytest.raises(UserError, match="temperature: must be >= 0"):  # validated where it is built
        config_from_options(EvaluateConfig, {"temperature": -1.0})
    f.write_text("tempreature: 0.5\n")
    with pytest.raises(UserError, match="did you mean 'temperature'"):
        config_from_options(EvaluateConfig, {}, f)


def test_bad_values_are_one_line_errors_before_any_work(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", str(tmp_path / "missing"), "--temperature", "-1"], env=WIDE)
    assert r.exit_code == 2 and "temperature: must be >= 0" in r.output
    r = runner.invoke(app, ["analyze", str(tmp_path), "--what", "probes,ranks"], env=WIDE)
    assert r.exit_code == 2 and "unknown analysis 'ranks'" in r.output
    r = runner.invoke(app, ["evaluate", "x", "--config", str(tmp_path / "nope.yaml")], env=WIDE)
    assert r.exit_code == 2 and "nope.yaml" in r.output
