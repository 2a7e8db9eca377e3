from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasticity.config import PretrainConfig, load_config, parse_overrides
from plasticity.errors import ConfigError
from tests.conftest import run_cli


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 1e-3\n  weight_decay: 0.5\ntrain:\n  tpp: 10\n")
    cfg = load_config(PretrainConfig, p, ["optim.weight_decay=1.0", "model.preset=olmo2-tiny"])
    assert cfg.optim.lr == 1e-3  # PyYAML reads 1e-3 as a string; we accept it as a number
    assert cfg.optim.weight_decay == 1.0
    assert cfg.train.tpp == 10.0
    assert cfg.model.preset == "olmo2-tiny"


@pytest.mark.parametrize(
    "override, key, problem",
    [
        ("optim.lr=-1", "optim.lr", "must be > 0"),
        ("optim.lrr=0.1", "optim.lrr", "unknown key"),
        ("schedule.warmup_fraction=1.5", "schedule.warmup_fraction", "must be in [0, 1]"),
        ("train.tpp=abc", "train.tpp", "expected"),
        ("train.precision=fp16", "train.precision", "must be one of"),
        ("train.micro_batch_size=0", "train.micro_batch_size", "must be >= 1"),
        ("optim.betas=[0.9]", "optim.betas", "two numbers"),
        ("model=3", "model", "expected a mapping"),
    ],
)
def test_config_errors_name_the_key(override, key, problem):
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, None, [override])
    assert e.value.key == key
    assert problem in str(e.value)


def test_bad_override_syntax():
    with pytest.raises(ConfigError):
        parse_overrides(["no_equals_sign"])


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
                        ["model", "optim", "train", "lr", "tpp", "preset", "x", "seq_len", "data"]), c, max_size=3),
                    max_leaves=8))
def test_fuzz_config_never_tracebacks(tmp_path_factory, doc):
    import yaml

    from plasticity.config import from_dict, validate

    try:
        cfg = from_dict(PretrainConfig, doc)
        validate(cfg)
    except ConfigError:
        pass
    del yaml


@pytest.mark.parametrize(
    "args, needle",
    [
        (["pretrain", "optim.lr=-0.1"], "optim.lr"),
        (["pretrain", "bogus.key=1"], "bogus"),
        (["pretrain", "/nonexistent/config.yaml"], "config file not found"),
    ],
)
def test_cli_config_error_one_line_exit_2(args, needle):
    r = run_cli(*args, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim: [unclosed\n  lr: 1\n")
    r = run_cli("pretrain", str(p), timeout=120)
    assert r.returncode == 2
    assert "malformed YAML" in r.stderr and "Traceback" not in r.stderr
