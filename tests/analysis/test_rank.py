"""Pseudo-rank and per-head W_QK / W_VP of tiny Llama and OLMo-2 models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from plasticity.analysis.rank import (
    attention_ranks,
    head_matrices,
    kv_head,
    pseudo_rank,
    ranks_over_checkpoints,
)
from plasticity.errors import CheckpointError


def _with_singular_values(s: list[float], n: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    d = torch.zeros(n, dtype=torch.float64)
    d[: len(s)] = torch.tensor(s, dtype=torch.float64)
    return u @ torch.diag(d) @ v.T


def test_pseudo_rank_diag_ones():
    w = _with_singular_values([1, 1, 1, 1])
    assert pseudo_rank(torch.linalg.svdvals(w)) == 4
    assert pseudo_rank(torch.linalg.svdvals(w), threshold=0.5) == 2
    assert pseudo_rank(torch.linalg.svdvals(w), threshold=1.0) == 4


def test_pseudo_rank_exact_k_and_threshold():
    s = [10, 5, 3, 1, 1]  # total 20; cumulative 10, 15, 18, 19, 20
    sv = torch.linalg.svdvals(_with_singular_values(s))
    assert pseudo_rank(sv) == 4  # 19 >= 0.95 * 20 exactly
    assert pseudo_rank(sv, threshold=0.96) == 5
    assert pseudo_rank(sv, threshold=0.90) == 3
    assert pseudo_rank(sv, threshold=0.50) == 1
    assert pseudo_rank([1, 3, 5, 10, 1]) == 4  # unsorted lists / numpy work too
    assert pseudo_rank(np.array(s, dtype=float), 0.91) == 4


def test_pseudo_rank_zero_and_invalid():
    assert pseudo_rank(torch.zeros(8)) == 0
    assert pseudo_rank(torch.linalg.svdvals(torch.zeros(5, 5))) == 0
    assert pseudo_rank([]) == 0
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            pseudo_rank([1.0, 2.0], bad)


def test_kv_head_mapping():
    assert [kv_head(h, 4, 2) for h in range(4)] == [0, 0, 1, 1]
    assert [kv_head(h, 8, 8) for h in range(8)] == list(range(8))
    assert [kv_head(h, 6, 1) for h in range(6)] == [0] * 6


def _capture_layer0(model, ids):
    """Float64, RoPE off; return layer 0's attention input x, attention probs and self-attention output."""
    model.to(torch.float64)
    attn = model.model.layers[0].self_attn
    cap: dict[str, torch.Tensor] = {}

    def pre(_m, args, kwargs):
        cap["x"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def post(_m, _args, _kwargs, out):
        cap["out"] = out[0]

    def q_hook(_m, _a, out):
        cap["q"] = out

    def k_hook(_m, _a, out):
        cap["k"] = out

    hooks = [
        attn.register_forward_pre_hook(pre, with_kwargs=True),
        attn.register_forward_hook(post, with_kwargs=True),
        attn.q_proj.register_forward_hook(q_hook),
        attn.k_proj.register_forward_hook(k_hook),
    ]
    model.model.rotary_emb.inv_freq.zero_()  # cos = 1, sin = 0: RoPE is the identity
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    return {k: v[0].double() for k, v in cap.items()}, out.attentions[0][0].double()


@pytest.mark.parametrize("fold", [False, True])
def test_qk_matches_projected_dot_products(tiny_model, fold):
    """(W_Q^h x_i) . (W_K^{h'} x_j) == x_j^T W_QK^h x_i (pre-RoPE, raw projections)."""
    ids = torch.tensor([[5, 17, 99, 3, 250, 42]])
    cap, _ = _capture_layer0(tiny_model, ids)
    x, q, k = cap["x"], cap["q"], cap["k"]
    d = 16
    if fold:
        attn = tiny_model.model.layers[0].self_attn
        if hasattr(attn, "q_norm"):  # OLMo-2; for Llama folding is a no-op
            q = q * attn.q_norm.weight.double()
            k = k * attn.k_norm.weight.double()
    w_qk = head_matrices(tiny_model, 0, fold_qk_norm=fold)["qk"]
    for h in range(4):
        kv = h // 2
        dots = q[:, h * d : (h + 1) * d] @ k[:, kv * d : (kv + 1) * d].T  # [i, j]
        bil = x @ w_qk[h].T @ x.T  # [i, j] = x_j^T W x_i
        torch.testing.assert_close(bil, dots, rtol=1e-9, atol=1e-10)


def test_qk_reproduces_model_attention(tiny_model):
    """Attention probabilities of the real forward pass (eager, repeat_kv, RoPE off) from x^T W_QK x."""
    ids = torch.tensor([[5, 17, 99, 3, 250, 42, 7]])
    cap, probs = _capture_layer0(tiny_model, ids)
    attn = tiny_model.model.layers[0].self_attn
    x = cap["x"]
    olmo = hasattr(attn, "q_norm")
    w_qk = head_matrices(tiny_model, 0, fold_qk_norm=olmo)["qk"]
    t = x.shape[0]
    scale = 1.0 / np.sqrt(16)
    causal = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    if olmo:
        eps = tiny_model.config.rms_norm_eps
        rq = torch.sqrt((x @ attn.q_proj.weight.double().T).pow(2).mean(-1) + eps)
        rk = torch.sqrt((x @ attn.k_proj.weight.double().T).pow(2).mean(-1) + eps)
    for h in range(4):
        s = x @ w_qk[h].T @ x.T
        if olmo:
            s = s / rq[:, None] / rk[None, :]
        # HF eager attention takes the softmax in float32, hence the looser tolerance
        expected = torch.softmax((s * scale).masked_fill(causal, float("-inf")), dim=-1)
        torch.testing.assert_close(probs[h], expected, rtol=1e-6, atol=1e-6)


def test_vp_reproduces_attention_output(tiny_model):
    """self_attn output_i == sum_h sum_j a^h_ij W_VP^h x_j; at position 0 it is sum_h W_VP^h x_0."""
    ids = torch.tensor([[11, 200, 3, 64, 9]])
    cap, probs = _capture_layer0(tiny_model, ids)
    x, out = cap["x"], cap["out"]
    w_vp = head_matrices(tiny_model, 0)["vp"]
    expected = sum(probs[h] @ (x @ w_vp[h].T) for h in range(4))
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out[0], sum(w_vp[h] @ x[0] for h in range(4)), rtol=1e-9, atol=1e-10)


def test_planted_singular_values_and_kv_mapping(llama_factory):
    """Plant spectra in head 1 (kv head 0) and head 2 (kv head 1); a wrong K/V-head map would miss them."""
    model = llama_factory(3)
    attn = model.model.layers[1].self_attn
    d, hid = 16, 64
    g = torch.Generator().manual_seed(7)
    orth = torch.linalg.qr(torch.randn(hid, hid, generator=g))[0]
    s_qk = torch.tensor([1.0, 1, 1, 1] + [0.0] * 12)
    s_vp = torch.tensor([10.0, 5, 3, 1, 1] + [0.0] * 11)
    with torch.no_grad():
        attn.k_proj.weight[0:d] = orth[:d]  # kv head 0: orthonormal rows
        attn.q_proj.weight[d : 2 * d] = torch.diag(s_qk) @ orth[d : 2 * d]  # query head 1
        attn.v_proj.weight[d : 2 * d] = orth[2 * d : 3 * d]  # kv head 1: orthonormal rows
        attn.o_proj.weight[:, 2 * d : 3 * d] = orth[:, 3 * d : 4 * d] @ torch.diag(s_vp)  # query head 2
    for method in ("factored", "full"):
        res = attention_ranks(model, method=method, layers=[1])
        heads = res["layers"][0]["heads"]
        assert heads[1]["kv_head"] == 0 and heads[2]["kv_head"] == 1
        assert heads[1]["qk"] == {"rank": 4, "fraction": 4 / 16, "fraction_of_hidden": 4 / 64}
        assert heads[2]["vp"]["rank"] == 4
        assert (
            attention_ranks(model, 0.96, method=method, layers=[1])["layers"][0]["heads"][2]["vp"]["rank"]
            == 5
        )


def test_attention_ranks_structure_and_methods_agree(tiny_model):
    fac = attention_ranks(tiny_model)
    full = attention_ranks(tiny_model, method="full")
    assert fac["num_layers"] == 2 and fac["num_heads"] == 4 and fac["num_kv_heads"] == 2
    assert fac["head_dim"] == 16 and fac["max_rank"] == 16 and fac["hidden_size"] == 64
    assert len(fac["layers"]) == 2 and all(len(lay["heads"]) == 4 for lay in fac["layers"])
    for lf, lu in zip(fac["layers"], full["layers"], strict=True):
        for hf, hu in zip(lf["heads"], lu["heads"], strict=True):
            assert hf["qk"] == hu["qk"] and hf["vp"] == hu["vp"]
            assert 1 <= hf["qk"]["rank"] <= 16
        assert lf["mean"]["qk"]["rank"] == pytest.approx(np.mean([h["qk"]["rank"] for h in lf["heads"]]))
    all_vp = [h["vp"]["fraction"] for lay in fac["layers"] for h in lay["heads"]]
    assert fac["mean"]["vp"]["fraction"] == pytest.approx(np.mean(all_vp))
    json.dumps(fac, allow_nan=False)
    with pytest.raises(ValueError):
        attention_ranks(tiny_model, method="nope")


def test_ranks_over_checkpoints(tmp_path, llama, llama_factory):
    other = llama_factory(5)
    llama.save_pretrained(tmp_path / "s10")
    other.save_pretrained(tmp_path / "s20")
    res = ranks_over_checkpoints([(10, tmp_path / "s10"), (20, str(tmp_path / "s20"))], threshold=0.9)
    assert [r["step"] for r in res] == [10, 20]
    assert res[0]["layers"] == attention_ranks(llama, 0.9)["layers"]
    assert res[1]["layers"] == attention_ranks(other, 0.9)["layers"]
    assert res[1]["path"] == str(tmp_path / "s20")
    with pytest.raises(CheckpointError):
        ranks_over_checkpoints([(0, tmp_path / "missing")])
