"""Memory estimate of a training run, checked before anything is allocated or written.

Estimate (bytes): weights, gradients and AdamW's two moments in fp32 (16 per parameter), plus the activations
autograd keeps for one micro-batch: per token and layer about ``10 h + 4 ffn + 2 kv`` values (norm inputs and
outputs, q/k/v, attention output, residuals, the SwiGLU gate/up/product; attention scores are not stored by
SDPA kernels), and the logits three times (logits, their fp32 log-softmax, their gradient). Activations are
4 bytes each in fp32, 2 in bf16. A run whose estimate exceeds the available memory (``MemAvailable`` or the
cgroup limit, whichever is lower; free GPU memory on a GPU) is refused with one line unless
``train.allow_large_memory: true``.

Per device under torchrun (`estimate`'s ``world`` / ``strategy``): DDP keeps the full state plus its fp32
gradient buckets (4 bytes per parameter); FSDP2 shards weights, gradients and AdamW state (16 / N bytes per
parameter) and holds the full fp32 weights and gradients of about two decoder layers at a time (the layer being
computed and the next one, prefetched). A micro-batch is the same size on every rank, so activations and logits
do not shrink with N. With activation checkpointing only each layer's input is kept (``h`` values per token and
layer) plus one layer's activations while it is recomputed. In bf16 (autocast) the activations also count the
bf16 copies of the weights autocast makes for the matmuls, which autograd keeps for the backward pass (2 bytes
per layer parameter; one layer's with checkpointing, which recomputes them), and the output projection's. With
`train.master_weights` (bf16 copies of all weights, CUDA) the copies are counted the same way; their bf16
gradients (2 bytes per parameter, freed after each micro-batch's backward) are not.
Sampling (`sampling_estimate`): the weights, the KV cache of a decode batch (keys and values of every layer for
prompt + new tokens) and that of the prefilled prompts waiting for it, and one batch of next-token logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plasticity.errors import ConfigError
from plasticity.hardware import available_memory as available_memory  # re-exported: where the estimates are checked
from plasticity.hardware import human as human
from plasticity.models import ModelShape, count_params


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
    state: int  # weights + gradients + AdamW moments (per device: sharded under FSDP2)
    activations: int  # one micro-batch, decoder layers
    logits: int  # one micro-batch, logits + log-softmax + gradient
    params: int
    tokens: int  # micro-batch tokens
    kv_cache: int = 0  # sampling: the KV cache of a decode batch and of its prefilled prompts
    devices: int = 1
    strategy: str = "none"

    @property
    def total(self) -> int:
        return self.state + self.activations + self.logits + self.kv_cache

    def parts(self) -> str:
        """The terms, for a one-line report."""
        what = "weights" if self.kv_cache else "weights, gradients and AdamW state"
        shown = [f"{what} {human(self.state)}" + (f" ({self.strategy} over {self.devices})"
                                                  if self.devices > 1 else "")]
        if self.activations:
            shown.append(f"activations {human(self.activations)}")
        if self.kv_cache:
            shown.append(f"KV cache {human(self.kv_cache)}")
        shown.append(f"logits {human(self.logits)}")
        return ", ".join(shown)


def shape_of(model_shape: ModelShape) -> Shape:
    """`Shape` of a `plasticity.models.ModelShape` (vocab resolved)."""
    s = model_shape
    return Shape(count_params(s).total, s.hidden_size, s.intermediate_size, s.num_layers, s.num_kv_heads * s.head_dim,
                 s.vocab_size)


def shape_of_hf_config(cfg: dict[str, Any]) -> Shape:
    """`Shape` of an HF ``config.json`` mapping (Llama-style field names; GPT-NeoX and Qwen use the same ones)."""
    h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    family = "olmo2" if cfg.get("model_type") == "olmo2" else "llama2"
    return shape_of(ModelShape(family, h, int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"]), heads,
                               kv_heads, int(cfg["vocab_size"]), int(cfg.get("max_position_embeddings") or 0),
                               tie_embeddings=bool(cfg.get("tie_word_embeddings"))))


def layer_params(shape: Shape) -> int:
    """Parameters of one decoder layer (attention q/o + k/v, SwiGLU gate/up/down, two norms)."""
    return 2 * shape.hidden * shape.hidden + 2 * shape.hidden * shape.kv_dim + 3 * shape.hidden * shape.ffn \
        + 2 * shape.hidden


def estimate(shape: Shape, micro_batch: int, seq_len: int, precision: str = "fp32", world: int = 1,
             strategy: str = "none", activation_checkpointing: bool = False) -> Estimate:
    """Training memory of one device: one process of `world` under `strategy` (none / ddp / fsdp)."""
    act_bytes = 2 if precision == "bf16" else 4
    tokens = micro_batch * seq_len
    per_token_layer = 10 * shape.hidden + 4 * shape.ffn + 2 * shape.kv_dim
    if activation_checkpointing:
        activations = tokens * (shape.layers * shape.hidden + per_token_layer) * act_bytes
    else:
        activations = tokens * shape.layers * per_token_layer * act_bytes
    if precision == "bf16":  # autocast's bf16 weight copies, saved for the backward pass
        activations += 2 * (layer_params(shape) * (1 if activation_checkpointing else shape.layers)
                            + shape.vocab * shape.hidden)
    state = 16 * shape.params
    if world > 1 and strategy == "fsdp":
        state = -(-state // world) + 2 * 8 * layer_params(shape)
    elif world > 1 and strategy == "ddp":
        state += 4 * shape.params
    return Estimate(state=state, activations=activations, logits=3 * 4 * tokens * shape.vocab, params=shape.params,
                    tokens=tokens, devices=world if world > 1 else 1, strategy=strategy if world > 1 else "none")


def sampling_estimate(shape: Shape, batch_size: int, prompt_tokens: int, new_tokens: int,
                      weight_bytes: int = 4) -> Estimate:
    """Memory of one device sampling `batch_size` sequences at a time (`plasticity.evaluate.sampler`): the
    weights (`weight_bytes` per parameter: 4 in fp32, 2 in bf16, `evaluate.precision`), the KV cache in the same
    dtype of a decode batch (prompt + new tokens) and of the next prefill batch's prompts (kept unpadded until
    decoded), and the float32 next-token logits."""
    kv_per_token = 2 * shape.layers * shape.kv_dim * weight_bytes
    kv = batch_size * ((prompt_tokens + new_tokens) + prompt_tokens) * kv_per_token
    return Estimate(state=weight_bytes * shape.params, activations=0, logits=4 * batch_size * shape.vocab,
                    params=shape.params, tokens=batch_size * (prompt_tokens + new_tokens), kv_cache=kv)


def check_memory(est: Estimate, device: Any, allow: bool, batch_key: str, model_keys: str,
                 log=print) -> None:
    """Refuse (ConfigError naming the dominant keys) a run whose estimate exceeds the available memory."""
    avail, source = available_memory(device)
    if est.total <= avail:
        return
    key = batch_key if est.activations + est.logits > est.state else model_keys
    per = f" per device ({est.strategy} over {est.devices} processes)" if est.devices > 1 else ""
    msg = (f"estimated training memory {human(est.total)}{per} (weights, gradients and AdamW state "
           f"{human(est.state)} for {est.params:,} parameters; activations {human(est.activations)} and logits "
           f"{human(est.logits)} for a micro-batch of {est.tokens:,} tokens) exceeds the available "
           f"{human(avail)} ({source}); lower {batch_key} or the model size ({model_keys}), or set "
           "train.allow_large_memory=true to go on")
    if allow:
        log(f"warning: {key}: {msg.split('; lower')[0]}; going on (train.allow_large_memory)")
        return
    raise ConfigError(key, msg)
