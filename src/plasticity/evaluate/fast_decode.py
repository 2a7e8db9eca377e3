"""A lean single-token decode step for Hugging Face Llama models with a static (preallocated) KV cache.

The sampler's decode loop calls the model once per generated token with a batch of one-token rows. Through
``LlamaForCausalLM.forward`` that step is dominated by per-call Python work (mask construction, cache classes,
output dataclasses, kwargs plumbing) and by a ``torch.cat`` per layer that regrows the KV cache; at the small
widths trained here the matmuls themselves are a fraction of it. `LlamaDecoder` runs the same modules (norms,
projections, MLP, rotary embedding) in the same order and arithmetic, writes keys/values into a buffer
allocated once for the whole generation, and attends with one SDPA call per layer. Other architectures keep
the generic Hugging Face path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def supports(model: Any) -> bool:
    """True for a plain (unwrapped) Llama causal LM with the module layout this decoder reads."""
    if type(model).__name__ != "LlamaForCausalLM" or getattr(model.config, "pretraining_tp", 1) != 1:
        return False
    body = getattr(model, "model", None)
    if body is None or not hasattr(body, "rotary_emb") or not hasattr(body, "layers"):
        return False
    attn = getattr(body.layers[0], "self_attn", None) if len(body.layers) else None
    return attn is not None and all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling"))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class LlamaDecoder:
    """Static-cache decoding from prefilled keys/values ([batch, kv_heads, width, head_dim] per layer)."""

    def __init__(self, model: Any, kv: list[tuple[torch.Tensor, torch.Tensor]], max_new: int):
        self.model, self.body = model, model.model
        b, h, width, d = kv[0][0].shape
        self.keys, self.values = [], []
        for k, v in kv:
            kb = k.new_empty((b, h, width + max_new, d))
            vb = v.new_empty((b, h, width + max_new, d))
            kb[:, :, :width] = k
            vb[:, :, :width] = v
            self.keys.append(kb)
            self.values.append(vb)
        self.length = width
        self.heads = model.config.num_attention_heads
        self.kv_heads = model.config.num_key_value_heads
        self.head_dim = d

    def select(self, idx: torch.Tensor) -> None:
        """Keep only the batch rows `idx` (finished sequences leave the batch)."""
        self.keys = [k.index_select(0, idx) for k in self.keys]
        self.values = [v.index_select(0, idx) for v in self.values]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (float32, [batch, vocab]) after feeding one token per row at `positions`; `mask` [batch,
        length + 1] marks the valid key positions, including the new token."""
        b = tokens.shape[0]
        x = self.body.embed_tokens(tokens[:, None])
        cos, sin = self.body.rotary_emb(x, positions[:, None])
        cos, sin = cos[:, None], sin[:, None]  # [b, 1, 1, head_dim]
        t = self.length
        attn_mask = mask[:, None, None, : t + 1].bool()
        gqa = self.heads != self.kv_heads
        for i, layer in enumerate(self.body.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(b, 1, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            self.keys[i][:, :, t : t + 1] = k
            self.values[i][:, :, t : t + 1] = v
            keys, values = self.keys[i][:, :, : t + 1], self.values[i][:, :, : t + 1]
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask, scale=attn.scaling,
                                               enable_gqa=gqa)  # no repeated copy of the cache per step
            x = x + attn.o_proj(o.transpose(1, 2).reshape(b, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        self.length = t + 1
        return self.model.lm_head(self.body.norm(x))[:, -1].float()
