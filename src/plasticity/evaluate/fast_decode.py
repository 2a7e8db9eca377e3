"""A lean single-token decode step for Hugging Face Llama models with a static (preallocated) KV cache.

The sampler's decode loop calls the model once per generated token with a batch of one-token rows. Through
``LlamaForCausalLM.forward`` that step is dominated by per-call Python work (mask construction, cache classes,
output dataclasses, kwargs plumbing) and by a ``torch.cat`` per layer that regrows the KV cache; at the small
widths trained here the matmuls themselves are a fraction of it. `LlamaDecoder` runs the same modules (norms,
projections, MLP, rotary embedding) in the same order and arithmetic, writes keys/values into a buffer
allocated once for the whole generation, and attends with one SDPA call per layer. Other architectures keep
the generic Hugging Face path.

Compiled step (`compiled=True`): the same step, attending over the whole fixed-capacity buffer with a key
mask, goes through ``torch.compile`` (inductor, static shapes, weight freezing: the weights are prepacked as
constants). On a 2-core AVX2 CPU the step alone was 1.2-1.7x faster at 16 rows (the matmuls, which compilation
does not speed up, dominate), but each (batch, capacity) shape costs 15-40 s of compilation, so the sampler
enables it only for large generations (`sampler._COMPILE_MIN_STEPS`).
A compiled step is cached per model and rebuilt when any parameter changed (tensor version counters).
"""

from __future__ import annotations

import types
import warnings
import weakref
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


def _step(model: Any, tokens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn_mask: torch.Tensor,
          t: torch.Tensor | int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """One token per row through the decoder. `cos`/`sin` [b, 1, 1, head_dim]; `attn_mask` [b, 1, 1, keys]
    covers `keys[i][:, :, :attn_mask.shape[-1]]`; the new key/value is written at position `t` (an int, or a
    1-element long tensor for the compiled step)."""
    body, cfg = model.model, model.config
    b = tokens.shape[0]
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    width = attn_mask.shape[-1]
    x = body.embed_tokens(tokens[:, None])
    for i, layer in enumerate(body.layers):
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(b, 1, heads, -1).transpose(1, 2)
        k = attn.k_proj(h).view(b, 1, kv_heads, -1).transpose(1, 2)
        v = attn.v_proj(h).view(b, 1, kv_heads, -1).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if isinstance(t, int):
            keys[i][:, :, t : t + 1] = k
            values[i][:, :, t : t + 1] = v
        else:
            keys[i].index_copy_(2, t, k)
            values[i].index_copy_(2, t, v)
        o = F.scaled_dot_product_attention(q, keys[i][:, :, :width], values[i][:, :, :width], attn_mask=attn_mask,
                                           scale=attn.scaling, enable_gqa=heads != kv_heads)  # no repeated cache
        x = x + attn.o_proj(o.transpose(1, 2).reshape(b, 1, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(body.norm(x))[:, -1].float()


_COMPILED: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


def _fingerprint(model: Any) -> tuple[Any, ...]:
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def compiled_step(model: Any) -> Any:
    """The compiled `_step` for `model`, rebuilt (fresh code object, so no stale frozen weights from dynamo's
    cache) whenever a parameter was replaced or modified in place since it was built."""
    fp = _fingerprint(model)
    hit = _COMPILED.get(model)
    if hit is not None and hit[0] == fp:
        return hit[1]
    fresh = types.FunctionType(_step.__code__.replace(), _step.__globals__, "_step_compiled")
    fn = torch.compile(fresh, dynamic=False, fullgraph=True, options={"freezing": True})
    _COMPILED[model] = (fp, fn)
    return fn


class LlamaDecoder:
    """Static-cache decoding from prefilled keys/values ([batch, kv_heads, width, head_dim] per layer) whose
    valid positions `prefix_mask` ([batch, width], nonzero = real token) marks.

    `capacity` (default width + max_new) is the buffer length; `compiled` runs every step through the
    compiled step until `select` shrinks the batch (then the eager step, which needs no recompilation)."""

    def __init__(self, model: Any, kv: list[tuple[torch.Tensor, torch.Tensor]], prefix_mask: torch.Tensor,
                 max_new: int, capacity: int | None = None, compiled: bool = False):
        self.model, self.body = model, model.model
        b, h, width, d = kv[0][0].shape
        capacity = max(capacity or 0, width + max_new)
        self.keys, self.values = [], []
        for k, v in kv:
            kb = k.new_zeros((b, h, capacity, d))  # zeros: masked slots must hold finite values
            vb = v.new_zeros((b, h, capacity, d))
            kb[:, :, :width] = k
            vb[:, :, :width] = v
            self.keys.append(kb)
            self.values.append(vb)
        self.length = width
        self.mask = torch.zeros((b, capacity), dtype=torch.bool, device=prefix_mask.device)
        self.mask[:, :width] = prefix_mask.bool()
        self.compiled = compiled_step(model) if compiled else None
        self._t = torch.zeros(1, dtype=torch.long, device=prefix_mask.device)

    def select(self, idx: torch.Tensor) -> None:
        """Keep only the batch rows `idx` (finished sequences leave the batch; the compiled step stops)."""
        self.keys = [k.index_select(0, idx) for k in self.keys]
        self.values = [v.index_select(0, idx) for v in self.values]
        self.mask = self.mask.index_select(0, idx)
        self.compiled = None

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (float32, [batch, vocab]) after feeding one token per row at `positions` (rotary positions;
        the cache slot is the step count, shared by all rows)."""
        t = self.length
        self.mask[:, t] = True
        x = self.body.embed_tokens.weight[:1, None]  # dtype/device carrier for the rotary embedding
        cos, sin = self.body.rotary_emb(x, positions[:, None])
        cos, sin = cos[:, None], sin[:, None]  # [b, 1, 1, head_dim]
        if self.compiled is not None:
            self._t.fill_(t)
            try:
                logits = self.compiled(self.model, tokens, cos, sin, self.mask[:, None, None], self._t,
                                       self.keys, self.values)
            except Exception as exc:  # noqa: BLE001 - a compiler failure must not fail the evaluation
                warnings.warn(f"compiled decode step failed, decoding eagerly: {type(exc).__name__}: {exc}",
                              stacklevel=2)
                _COMPILED.pop(self.model, None)
                self.compiled = None
        if self.compiled is None:
            logits = _step(self.model, tokens, cos, sin, self.mask[:, None, None, : t + 1], t, self.keys,
                           self.values)
        self.length = t + 1
        return logits
