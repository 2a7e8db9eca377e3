"""The command line behaves as researchers' other tools do (issue 29): --version, -h, choices shown in --help,
one --data-root option, one analyze output option, study YAML or directory for status/report, `study` first,
developer tools apart, shell completion."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import plasticity
from plasticity.cli import app
from tests.conftest import REPO, run_cli

WIDE = {"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}  # no help row wraps (evaluate has long options)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=WIDE)


def test_version_and_short_help() -> None:
    for flag in ("--version", "-V"):
        r = _invoke(flag)
        assert r.exit_code == 0 and r.output == f"plasticity {plasticity.__version__}\n"
    root = _invoke("-h")
    assert root.exit_code == 0 and "Usage:" in root.output and "--version" in root.output
    sub = _invoke("study", "-h")
    assert sub.exit_code == 0 and "--dry-run" in sub.output


def test_study_is_listed_first_and_bench_is_a_developer_tool() -> None:
    out = _invoke("--help").output
    commands = re.findall(r"^│ (\w+) ", out, re.M)
    assert commands[0] == "study", commands
    assert {"study", "status", "report", "pretrain", "finetune", "evaluate", "analyze", "tasks", "models",
            "bench"} <= set(commands)
    panel = out[out.index("Developer tools"):]
    assert "bench" in panel and "study" not in panel


def test_shell_completion_is_on() -> None:
    out = _invoke("--help").output
    assert "--install-completion" in out and "--show-completion" in out
    # what the installed bash completion asks: the commands that complete "plasticity st" (no shell detection,
    # which depends on the parent process)
    env = {"_PLASTICITY_COMPLETE": "complete_bash", "COMP_WORDS": "plasticity st", "COMP_CWORD": "1"}
    r = CliRunner().invoke(app, [], prog_name="plasticity", env=env)
    assert r.exit_code == 0 and r.output.split() == ["study", "status"], r.output


def _help_row(command: str, option: str) -> str:
    """The `option` row of `plasticity COMMAND --help`, whitespace collapsed."""
    row = next(line for line in _invoke(command, "--help").output.splitlines() if f" {option} " in line)
    return " ".join(row.strip("│ ").split())


@pytest.mark.parametrize("command, option, values", [
    ("study", "--executor", ("local", "ray")),
    ("bench", "--clock", ("wall", "cpu")),
    ("evaluate", "--data-source", ("local", "hub", "auto")),
])
def test_fixed_value_options_are_choices_shown_in_help(command: str, option: str, values: tuple[str, ...]) -> None:
    assert "|".join(values) in _help_row(command, option)
    bad = _invoke(command, *(["x"] if command == "evaluate" else []), option, "nope")
    assert bad.exit_code == 2 and "nope" in bad.output and all(repr(v) in bad.output for v in values), bad.output


def test_data_root_is_one_option_everywhere(tmp_path: Path) -> None:
    names = [n for n in typer.main.get_command(app).commands if "--data-root" in _invoke(n, "--help").output]
    assert set(names) == {"tasks", "evaluate", "analyze"}, names
    rows = {_help_row(n, "--data-root") for n in names}
    assert len(rows) == 1 and "PLASTICITY_DATA_ROOT" in rows.pop()
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    for n in names:  # the same type everywhere: a folder
        r = _invoke(n, *(["x"] if n in ("evaluate", "analyze") else []), "--data-root", str(a_file))
        assert r.exit_code == 2 and "is a file" in r.output, (n, r.output)


def test_analyze_has_one_output_option() -> None:
    out = _invoke("analyze", "--help").output
    assert " --out " in out and not re.search(r"--out-dir|--output|\s-o\s", out)


def _reproduction_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the committed reproduction export and a study YAML whose out_dir is that copy."""
    root = tmp_path / "reproduction"
    shutil.copytree(REPO / "docs" / "reproduction", root, ignore=shutil.ignore_patterns("report*"))
    spec = yaml.safe_load((REPO / "configs" / "reproduction" / "wd-sweep-20tpp.yaml").read_text())
    spec["out_dir"] = str(root)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root / spec["name"], tmp_path / "study.yaml"


def test_status_and_report_take_a_study_yaml_or_its_directory(tmp_path: Path) -> None:
    from plasticity.study.plan import build_plan
    from plasticity.study.state import load_study, node_states, write_marker

    study_dir, study_yaml = _reproduction_copy(tmp_path)
    plan = build_plan(load_study(study_dir))
    assert plan.root == study_dir.parent.resolve()
    from_yaml = build_plan(load_study(study_yaml))
    assert list(plan.nodes) == list(from_yaml.nodes)
    pre = next(n for n in plan.nodes.values() if n.kind == "pretrain")
    write_marker(plan.root, pre, "failed", reason="test")  # its analyses, fine-tunes and evaluations: skipped
    r = run_cli("status", str(study_dir), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    states = {row["node"]: row["state"] for row in json.loads(r.stdout)}
    assert states == node_states(from_yaml) and states[pre.id] == "failed" and "skipped" in states.values()
    r = run_cli("report", str(study_yaml))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("index.html") and (study_dir / "report" / "index.html").is_file()


def test_status_of_a_directory_that_is_not_a_study_is_one_line(tmp_path: Path) -> None:
    r = run_cli("status", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a study directory" in r.stderr
