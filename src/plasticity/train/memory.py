"""Memory estimate of a training run, checked before anything is allocated or written.

Estimate (bytes): weights, gradients and AdamW's two moments in fp32 (16 per parameter), plus the activations
autograd keeps for one micro-batch: per token and layer about ``10 h + 4 ffn + 2 kv`` values (norm inputs and
outputs, q/k/v, attention output, residuals, the SwiGLU gate/up/product; attention scores are not stored by
SDPA kernels), and the logits three times (logits, their fp32 log-softmax, their gradient). Activations are
4 bytes each in fp32, 2 in bf16. A run whose estimate exceeds the available memory (``MemAvailable`` or the
cgroup limit, whichever is lower; free GPU memory on a GPU) is refused with one line unless
``train.allow_large_memory: true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..hardware import available_memory as available_memory  # re-exported: where the estimates are checked
from ..hardware import human as human
from ..models import ModelShape, count_params


@dataclass
class Shape:
    """What the estimate needs of a decoder: sizes and parameter count."""

    params: int
    hidden: int
    ffn: int
    layers: int
    kv_dim: int  # num_kv_heads x head_dim
    vocab: int


@dataclass
class Estimate:
    state: int  # weights + gradients + AdamW moments
    activations: int  # one micro-batch, decoder layers
    logits: int  # one micro-batch, logits + log-softmax + gradient
    params: int
    tokens: int  # micro-batch tokens

    @property
    def total(self) -> int:
        return self.state + self.activations + self.logits


def shape_of(model_shape: ModelShape) -> Shape:
    """`Shape` of a `plasticity.models.ModelShape` (vocab resolved)."""
    s = model_shape
    return Shape(count_params(s).total, s.hidden_size, s.intermediate_size, s.num_layers, s.num_kv_heads * s.head_dim,
                 s.vocab_size)


def shape_of_hf_config(cfg: dict[str, Any]) -> Shape:
    """`Shape` of an HF Llama / OLMo-2 ``config.json`` mapping."""
    h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    family = "olmo2" if cfg.get("model_type") == "olmo2" else "llama2"
    return shape_of(ModelShape(family, h, int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"]), heads,
                               kv_heads, int(cfg["vocab_size"]), int(cfg.get("max_position_embeddings") or 0),
                               tie_embeddings=bool(cfg.get("tie_word_embeddings"))))


def estimate(shape: Shape, micro_batch: int, seq_len: int, precision: str = "fp32") -> Estimate:
    act_bytes = 2 if precision == "bf16" else 4
    tokens = micro_batch * seq_len
    per_token_layer = 10 * shape.hidden + 4 * shape.ffn + 2 * shape.kv_dim
    return Estimate(state=16 * shape.params, activations=tokens * shape.layers * per_token_layer * act_bytes,
                    logits=3 * 4 * tokens * shape.vocab, params=shape.params, tokens=tokens)


def check_memory(est: Estimate, device: Any, allow: bool, batch_key: str, model_keys: str,
                 log=print) -> None:
    """Refuse (ConfigError naming the dominant keys) a run whose estimate exceeds the available memory."""
    avail, source = available_memory(device)
    if est.total <= avail:
        return
    key = batch_key if est.activations + est.logits > est.state else model_keys
    msg = (f"estimated training memory {human(est.total)} (weights, gradients and AdamW state "
           f"{human(est.state)} for {est.params:,} parameters; activations {human(est.activations)} and logits "
           f"{human(est.logits)} for a micro-batch of {est.tokens:,} tokens) exceeds the available "
           f"{human(avail)} ({source}); lower {batch_key} or the model size ({model_keys}), or set "
           "train.allow_large_memory=true to go on")
    if allow:
        log(f"warning: {key}: {msg.split('; lower')[0]}; going on (train.allow_large_memory)")
        return
    raise ConfigError(key, msg)
