"""Parameter norms per layer group."""

from __future__ import annotations

import json
import math

import pytest
import torch

from plasticity.analysis.norms import parameter_norms


def _names(res):
    return [g["name"] for g in res["groups"]]


def test_groups_total_and_fractions(tiny_model):
    res = parameter_norms(tiny_model)
    assert _names(res) == ["embedding", "layers.0", "layers.1", "final_norm", "lm_head"]
    flat = torch.cat([p.detach().double().flatten() for p in tiny_model.parameters()])
    assert res["total_norm"] == pytest.approx(float(flat.norm()), rel=1e-12)
    assert res["num_params"] == flat.numel()
    assert math.fsum(g["fraction"] for g in res["groups"]) == pytest.approx(1.0, abs=1e-12)
    assert math.fsum(g["fraction_sq"] for g in res["groups"]) == pytest.approx(1.0, abs=1e-12)
    assert math.sqrt(math.fsum(g["norm"] ** 2 for g in res["groups"])) == pytest.approx(res["total_norm"])
    assert not res["tied_lm_head"] and all(g["counted"] and not g["tied"] for g in res["groups"])
    layer0 = [p for n, p in tiny_model.named_parameters() if n.startswith("model.layers.0.")]
    g0 = res["groups"][1]
    assert g0["num_tensors"] == len(layer0)
    assert g0["sum_of_tensor_norms"] == pytest.approx(sum(float(p.detach().double().norm()) for p in layer0))
    assert g0["fraction"] == pytest.approx(g0["sum_of_tensor_norms"] / res["total_sum_of_tensor_norms"])
    head = res["groups"][-1]
    assert head["norm"] == pytest.approx(float(tiny_model.lm_head.weight.detach().double().norm()))
    assert res["parameters"]["lm_head.weight"]["group"] == "lm_head"
    assert res["parameters"]["model.norm.weight"]["group"] == "final_norm"
    json.dumps(res, allow_nan=False)


def test_known_values(llama_factory):
    model = llama_factory(0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight.fill_(3.0)  # 300 x 64
        model.lm_head.weight.fill_(4.0)  # 300 x 64
    res = parameter_norms(model, per_parameter=False)
    n = 300 * 64
    assert res["total_norm"] == pytest.approx(5.0 * math.sqrt(n))
    by = {g["name"]: g for g in res["groups"]}
    assert by["embedding"]["fraction_sq"] == pytest.approx(9 / 25)
    assert by["lm_head"]["fraction_sq"] == pytest.approx(16 / 25)
    assert by["embedding"]["fraction"] == pytest.approx(3 / 7)
    assert by["layers.0"]["norm"] == 0.0 and by["layers.0"]["fraction"] == 0.0
    assert "parameters" not in res


def test_tied_embeddings_counted_once(llama_factory):
    model = llama_factory(2, tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    res = parameter_norms(model)
    by = {g["name"]: g for g in res["groups"]}
    assert res["tied_lm_head"]
    assert by["embedding"]["tied"] and by["lm_head"]["tied"]
    assert by["embedding"]["counted"] and not by["lm_head"]["counted"]
    assert by["lm_head"]["fraction"] == 0.0 and by["lm_head"]["fraction_sq"] == 0.0
    assert by["lm_head"]["num_params"] == 0
    assert by["lm_head"]["norm"] == pytest.approx(by["embedding"]["norm"])
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])  # de-duplicated
    assert res["total_norm"] == pytest.approx(float(flat.norm()), rel=1e-12)
    assert res["num_params"] == flat.numel()
    assert sum(g["fraction"] for g in res["groups"]) == pytest.approx(1.0, abs=1e-12)
    assert sum(g["fraction_sq"] for g in res["groups"]) == pytest.approx(1.0, abs=1e-12)
    assert "lm_head.weight" not in res["parameters"]
