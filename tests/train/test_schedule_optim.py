from __future__ import annotations

import math

import pytest
import torch

from plasticity.config import OptimizerConfig, ScheduleConfig
from plasticity.models import PRESETS, build_model
from plasticity.train.optim import build_optimizer, param_groups
from plasticity.train.schedule import lr_at


def test_cosine_known_values():
    s = ScheduleConfig(kind="cosine", warmup_fraction=0.1)
    total, lr, mn = 100, 1.0, 0.1
    assert lr_at(0, total, lr, mn, s) == pytest.approx(0.1)  # warmup 10 steps: (0+1)/10
    assert lr_at(9, total, lr, mn, s) == pytest.approx(1.0)
    assert lr_at(10, total, lr, mn, s) == pytest.approx(1.0)  # cosine starts at the peak
    mid = 10 + 45  # p = 0.5
    assert lr_at(mid, total, lr, mn, s) == pytest.approx(mn + (lr - mn) * 0.5)
    assert lr_at(100, total, lr, mn, s) == pytest.approx(mn)
    vals = [lr_at(i, total, lr, mn, s) for i in range(10, 100)]
    assert all(a >= b for a, b in zip(vals[:-1], vals[1:], strict=True))


def test_wsd_known_values():
    s = ScheduleConfig(kind="wsd", warmup_fraction=0.1, decay_fraction=0.2)
    total, lr, mn = 100, 1.0, 0.0
    assert lr_at(50, total, lr, mn, s) == 1.0
    assert lr_at(79, total, lr, mn, s) == 1.0
    assert lr_at(80, total, lr, mn, s) == pytest.approx(1 - 1 / 20)
    assert lr_at(89, total, lr, mn, s) == pytest.approx(0.5)
    assert lr_at(99, total, lr, mn, s) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def tiny():
    return {f: build_model(PRESETS[f"{f}-tiny"].__class__(**{**PRESETS[f"{f}-tiny"].__dict__, "vocab_size": 256}))
            for f in ("llama2", "olmo2")}


@pytest.mark.parametrize("family", ["llama2", "olmo2"])
@pytest.mark.parametrize("policy", ["all", "no_norm_bias", "no_embed", "no_norm_bias_embed"])
def test_param_groups_cover_every_parameter_once(tiny, family, policy):
    model = tiny[family]
    groups = param_groups(model, 0.5, policy)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    names = {g["name"]: set(g["param_names"]) for g in groups}
    decayed = names.get("decay", set())
    assert ("model.embed_tokens.weight" in decayed) == (policy in ("all", "no_norm_bias"))
    norm_names = {n for n, p in model.named_parameters() if p.ndim == 1}
    assert norm_names
    assert (norm_names <= decayed) == (policy in ("all", "no_embed"))
    assert "model.layers.0.self_attn.q_proj.weight" in decayed
    for g in groups:
        assert g["weight_decay"] == (0.5 if g["name"] == "decay" else 0.0)


def test_adamw_decoupled_decay_shrinks_weights(tiny):
    """With zero gradient AdamW applies theta <- theta - lr * wd * theta (paper eq. 2) to decayed params."""
    model = tiny["llama2"]
    opt = build_optimizer(model, OptimizerConfig(lr=0.1, weight_decay=1.0), "no_embed")
    w = model.model.layers[0].self_attn.q_proj.weight
    e = model.model.embed_tokens.weight
    w0, e0 = w.detach().clone(), e.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(w, w0 * (1 - 0.1 * 1.0))
    assert torch.equal(e, e0)
    assert math.isclose(opt.param_groups[0]["weight_decay"], 1.0)
