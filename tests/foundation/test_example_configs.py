"""Every shipped example config loads and validates (no run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasticity.config import FinetuneConfig, PretrainConfig, from_dict, load_config, read_yaml
from plasticity.study.sweep import DEFAULT_SWEEP, SweepSpec, expand

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_example_config_is_valid(path):
    if path.name.startswith("study"):
        spec = from_dict(SweepSpec, read_yaml(path))
        assert len(expand(spec)) >= 1
    elif "finetune" in path.name:
        assert load_config(FinetuneConfig, path).task
    else:
        assert load_config(PretrainConfig, path).model.preset


def test_study_default_file_matches_embedded_default():
    spec = from_dict(SweepSpec, read_yaml(CONFIGS / "study-default.yaml"))
    assert [c.out_dir for _, c in expand(spec)] == [c.out_dir for _, c in expand(DEFAULT_SWEEP)]
