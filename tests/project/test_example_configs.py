"""Every shipped example config loads and validates (no run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasticity.config import FinetuneConfig, PretrainConfig, load_config, read_yaml
from plasticity.study.default import DEFAULT_STUDY_FILE
from plasticity.study.plan import build_plan
from plasticity.study.spec import load_spec
from tests.conftest import run_cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_example_config_is_valid(path):
    if {"axes", "base", "checkpoints"} & set(read_yaml(path)):
        assert len(build_plan(load_spec(path)).rows) >= 1
    elif "finetune" in path.name:
        assert load_config(FinetuneConfig, path).task
    else:
        assert load_config(PretrainConfig, path).model.preset


def test_default_study_exists_once_as_the_package_file():
    """`plasticity study` without arguments loads the package file; no copy of it is shipped under configs/."""
    assert list(build_plan(load_spec(None)).nodes) == list(build_plan(load_spec(DEFAULT_STUDY_FILE)).nodes)
    assert not any(read_yaml(p).get("name") == "default" for p in CONFIGS.rglob("*.yaml"))
    r = run_cli("study", "--print-default")
    assert r.returncode == 0 and r.stdout == DEFAULT_STUDY_FILE.read_text()
