"""Every shipped example config loads and validates (no run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasticity.config import FinetuneConfig, PretrainConfig, load_config, read_yaml
from plasticity.study.default import DEFAULT_STUDY
from plasticity.study.plan import build_plan
from plasticity.study.spec import load_spec

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_example_config_is_valid(path):
    if "axes" in read_yaml(path) or "base" in read_yaml(path):
        assert len(build_plan(load_spec(path)).rows) >= 1
    elif "finetune" in path.name:
        assert load_config(FinetuneConfig, path).task
    else:
        assert load_config(PretrainConfig, path).model.preset


def test_study_default_file_matches_embedded_default():
    spec = load_spec(CONFIGS / "study-default.yaml")
    assert list(build_plan(spec).nodes) == list(build_plan(DEFAULT_STUDY).nodes)
