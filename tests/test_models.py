from __future__ import annotations

import pytest

from plasticity.config import ModelConfig
from plasticity.errors import ConfigError
from plasticity.models import PRESETS, build_model, count_params, describe_presets, resolve_shape

# Paper Table 1 names and Table 2 token budgets (20 TPP).
PAPER = {"llama2-0.5b": (0.5e9, 10e9), "llama2-1b": (1e9, 20e9), "llama2-4b": (4e9, 80e9), "olmo2-1b": (1.5e9, 30e9)}


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_presets_match_names_and_budgets(name):
    shape = PRESETS[name]
    model = build_model(shape, device="meta")
    c = count_params(model)
    nominal, tokens = PAPER[name]
    assert abs(c.total - nominal) / nominal < 0.03, (name, c.total)
    assert abs(20 * c.total - tokens) / tokens < 0.03  # tpp counts total parameters (Table 2)
    assert c.non_embedding < c.total
    cfg = model.config
    assert cfg.num_hidden_layers == shape.num_layers and cfg.vocab_size == shape.vocab_size
    if shape.family == "llama2":
        assert cfg.num_key_value_heads == 4 and cfg.max_position_embeddings == 2048
    else:
        assert cfg.max_position_embeddings == 4096 and cfg.vocab_size == 100278


def test_cpu_presets_sizes():
    rows = {r["preset"]: r for r in describe_presets(4096)}
    for name, r in rows.items():
        if not r["paper"]:
            assert 1e5 <= r["non_embedding_params"] <= 2.5e7, name
            assert r["flops_per_token"] > 6 * r["non_embedding_params"]


def test_vocab_mismatch_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        resolve_shape(ModelConfig(preset="llama2-0.5b"), tokenizer_vocab=50000)
    assert e.value.key == "model.vocab_size"
    shape = resolve_shape(ModelConfig(preset="llama2-tiny"), tokenizer_vocab=1000)
    assert shape.vocab_size == 1024


def test_models_command_lists_presets():
    from tests.conftest import run_cli

    r = run_cli("models", timeout=120)
    assert r.returncode == 0, r.stderr
    for name in PAPER:
        assert name in r.stdout
