from __future__ import annotations

import dataclasses
import math
import re
import typing

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


def _leaves(obj, path: str = ""):
    """(dotted key, value) of every scalar in a config dataclass (list items as key[i])."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def assert_valid(cfg: PretrainConfig) -> None:
    """What an accepted config must be, stated independently of config.validate: finite and in range."""
    for key, v in _leaves(cfg):
        assert not isinstance(v, float) or math.isfinite(v), f"{key}={v!r} accepted"
    o, s, t, d, m = cfg.optim, cfg.schedule, cfg.train, cfg.data, cfg.model
    assert o.lr > 0 and 0 <= o.min_lr <= o.lr and o.eps > 0 and o.weight_decay >= 0 and o.grad_clip >= 0
    assert len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas)
    assert 0 <= s.warmup_fraction <= 1 and 0 <= s.decay_fraction <= 1
    assert t.micro_batch_size >= 1 and t.grad_accum >= 1 and t.log_every >= 1 and t.seed >= 0
    assert all(v is None or v > 0 for v in (t.tpp, t.max_tokens, t.max_steps, t.epochs))
    assert t.tpp is not None or t.max_tokens is not None or t.max_steps is not None
    assert all(0 < f <= 1 for f in t.checkpoint_fractions)
    assert d.seq_len >= 8 and 0 < d.val_fraction < 0.5 and cfg.tokenizer.vocab_size >= 260
    assert m.init_std > 0 and all(v is None or v >= 1 for v in (m.vocab_size, m.hidden_size, m.num_layers))


def _is_config_key(key: str) -> bool:
    cls: object = PretrainConfig
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return False
        cls = typing.get_type_hints(cls)[part]
    return True


def _in_doc(key: str, doc) -> bool:
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        if not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True


def check_outcome(doc) -> None:
    """Accepted: valid (assert_valid). Refused: a ConfigError naming its key (one the document or the config
    has, or <root>), in its one-line message. Anything else (a traceback) fails the test."""
    from plasticity.config import from_dict, validate

    try:
        cfg = from_dict(PretrainConfig, doc)
        validate(cfg)
    except ConfigError as e:
        assert e.key == "<root>" or _in_doc(e.key, doc) or _is_config_key(e.key), (e.key, doc)
        assert f": {e.key}: " in f": {e}" and "\n" not in str(e)
        return
    assert_valid(cfg)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
                        ["model", "optim", "train", "lr", "tpp", "preset", "x", "seq_len", "data"]), c, max_size=3),
                    max_leaves=8))
def test_fuzz_config_never_tracebacks(doc):
    check_outcome(doc)


def _sections(values: st.SearchStrategy) -> st.SearchStrategy:
    """Documents made of the config's real sections and keys, each with a fuzzed value."""
    sections = {f.name: typing.get_type_hints(PretrainConfig)[f.name] for f in dataclasses.fields(PretrainConfig)}
    per = {name: st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(tp)]), values, max_size=4)
           for name, tp in sections.items() if dataclasses.is_dataclass(tp)}
    return st.fixed_dictionaries({}, optional=per)


SCALARS = st.none() | st.booleans() | st.integers(-3, 10**6) | st.text(max_size=6)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_sections(SCALARS | st.floats(allow_nan=True, allow_infinity=False) | st.lists(st.floats(-2, 2), max_size=3)))
def test_fuzz_real_keys_accepted_configs_are_valid(doc):
    check_outcome(doc)


def _float_keys(cls=PretrainConfig, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        tp, key = typing.get_type_hints(cls)[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += _float_keys(tp, f"{key}.")
        elif float in typing.get_args(tp) or tp is float:
            out.append(key)
    return out


def test_every_float_key_refuses_infinity():
    """`.inf`, `-.inf` and `1e400` (a float overflow) in any float key: refused naming the key, or valid."""
    accepted = []
    for key in _float_keys():
        for raw in (".inf", "-.inf", "1e400"):
            try:
                cfg = load_config(PretrainConfig, None, [f"{key}={raw}"])
            except ConfigError as e:
                assert e.key == key, (key, raw, str(e))
                continue
            accepted.append(f"{key}={raw}")
            with pytest.raises(AssertionError):
                assert_valid(cfg)
    assert len(_float_keys()) >= 10 and not accepted, accepted


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
