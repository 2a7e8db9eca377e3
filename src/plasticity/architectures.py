"""The Hugging Face model families plasticity evaluates, fine-tunes and analyses, and where each keeps its parts.

Llama and OLMo-2 are also pretrained here (`plasticity.models`); Mistral, Qwen2, Qwen3 and GPT-NeoX (the
Pythia suite) are read as published. Everything but the attention weights is reached through HF's own
accessors (``base_model``, ``get_input_embeddings``, ``get_output_embeddings``), so the only per-family code
is one small adapter that returns a layer's per-head ``W_Q``, ``W_K``, ``W_V``, ``W_O`` (the attention
pseudo-rank, `plasticity.analysis.rank`):

* separate projections (``self_attn.{q,k,v,o}_proj``: Llama, OLMo-2, Mistral, Qwen2, Qwen3): rows
  ``h*d:(h+1)*d`` of q/k/v are head ``h``; OLMo-2's full-width and Qwen3's per-head ``q_norm``/``k_norm`` are
  returned for optional folding;
* fused QKV (GPT-NeoX ``attention.query_key_value``): HF views its output as ``[heads, 3 * head_dim]`` and
  chunks the last axis into q, k, v, so head ``h``'s rows are ``h*3d : h*3d+d`` (q), ``+d..+2d`` (k),
  ``+2d..+3d`` (v); ``attention.dense`` is W_O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# model_type -> the name users know it by
FAMILIES: dict[str, str] = {"llama": "Llama", "olmo2": "OLMo-2", "mistral": "Mistral", "qwen2": "Qwen2",
                            "qwen3": "Qwen3", "gpt_neox": "GPT-NeoX"}


def family_names() -> str:
    """``Llama, OLMo-2, Mistral, Qwen2, Qwen3 or GPT-NeoX`` (for error messages)."""
    names = list(FAMILIES.values())
    return ", ".join(names[:-1]) + " or " + names[-1]


@dataclass
class Geometry:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int


@dataclass
class HeadWeights:
    """One layer's attention weights per head, float64 on CPU: `wq` ``[heads, d, hidden]``, `wk` / `wv`
    ``[kv_heads, d, hidden]``, `wo` ``[heads, hidden, d]`` (columns of the output projection that read head
    ``h``); `q_norm` / `k_norm`: the q/k RMSNorm modules if the family has them."""

    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    q_norm: nn.Module | None = None
    k_norm: nn.Module | None = None


def model_type(model: nn.Module) -> str:
    return str(getattr(model.config, "model_type", ""))


def body(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (``model.model``, ``model.gpt_neox``)."""
    return model.base_model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return body(model).layers


def final_norm(model: nn.Module) -> nn.Module | None:
    b = body(model)
    return getattr(b, "norm", None) or getattr(b, "final_layer_norm", None)


def geometry(model: nn.Module) -> Geometry:
    """Layers, query heads, K/V heads, head width and hidden size from the model's config."""
    cfg = model.config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    if n_heads % n_kv:
        raise ValueError(f"num_attention_heads={n_heads} is not a multiple of num_key_value_heads={n_kv}")
    return Geometry(len(decoder_layers(model)), n_heads, n_kv, int(head_dim), int(cfg.hidden_size))


def _w(lin: nn.Linear) -> torch.Tensor:
    return lin.weight.detach().to("cpu", torch.float64)


def separate_projections(model: nn.Module, layer: int) -> HeadWeights:
    """Llama / OLMo-2 / Mistral / Qwen2 / Qwen3: ``self_attn.q_proj``, ``k_proj``, ``v_proj``, ``o_proj``."""
    g = geometry(model)
    attn = decoder_layers(model)[layer].self_attn
    return HeadWeights(wq=_w(attn.q_proj).view(g.num_heads, g.head_dim, g.hidden_size),
                       wk=_w(attn.k_proj).view(g.num_kv_heads, g.head_dim, g.hidden_size),
                       wv=_w(attn.v_proj).view(g.num_kv_heads, g.head_dim, g.hidden_size),
                       wo=_w(attn.o_proj).view(g.hidden_size, g.num_heads, g.head_dim).permute(1, 0, 2),
                       q_norm=getattr(attn, "q_norm", None), k_norm=getattr(attn, "k_norm", None))


def fused_qkv(model: nn.Module, layer: int) -> HeadWeights:
    """GPT-NeoX: ``attention.query_key_value`` (``[heads x (q|k|v) x d, hidden]``) and ``attention.dense``."""
    g = geometry(model)
    attn = decoder_layers(model)[layer].attention
    qkv = _w(attn.query_key_value).view(g.num_heads, 3, g.head_dim, g.hidden_size)
    return HeadWeights(wq=qkv[:, 0], wk=qkv[:, 1], wv=qkv[:, 2],
                       wo=_w(attn.dense).view(g.hidden_size, g.num_heads, g.head_dim).permute(1, 0, 2))


ADAPTERS: dict[str, Callable[[nn.Module, int], HeadWeights]] = {
    "llama": separate_projections, "olmo2": separate_projections, "mistral": separate_projections,
    "qwen2": separate_projections, "qwen3": separate_projections, "gpt_neox": fused_qkv,
}


def head_weights(model: nn.Module, layer: int) -> HeadWeights:
    """Layer `layer`'s per-head attention weights, by the model's family adapter."""
    mt = model_type(model)
    if mt not in ADAPTERS:
        raise ValueError(f"model type '{mt}' has no attention adapter (supported: {family_names()})")
    return ADAPTERS[mt](model, layer)


def tiny_config(family: str, vocab_size: int = 128, **over: Any):
    """A ~30k-parameter HF config of `family` (a model_type) for tests and examples: 2 layers, hidden 32, 4 query
    heads (2 K/V heads where the family has grouped-query attention), token ids pad 0, bos 1, eos 2."""
    from transformers import AutoConfig

    base: dict[str, Any] = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=256, tie_word_embeddings=False,
                                pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family != "gpt_neox":
        base["num_key_value_heads"] = 2
    if family == "qwen3":
        base["head_dim"] = 16  # Qwen3 sets head_dim apart from hidden / heads
    return AutoConfig.for_model(family, **dict(base, **over))
