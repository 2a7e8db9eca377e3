"""Model presets (litgpt style: one dataclass per family, shapes by name) built with Hugging Face classes.

Every model is a plain ``LlamaForCausalLM`` or ``Olmo2ForCausalLM``, so checkpoints load with
``AutoModelForCausalLM.from_pretrained``. Random init follows HF ``_init_weights``: normal(0, init_std) for
linear and embedding weights, ones for norms (the paper's Llama code, litgpt-based, and OLMo both use 0.02).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

from plasticity.config import ModelConfig
from plasticity.errors import ConfigError

Family = Literal["llama2", "olmo2"]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's weights live on (its ``device`` attribute where it has one, as HF models do)."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


@dataclass(frozen=True)
class ModelShape:
    """The numbers that define a decoder-only transformer of one family."""

    family: Family
    hidden_size: int
    intermediate_size: int  # SwiGLU hidden width (HF convention: one of the two gate/up projections)
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int | None  # None: taken from the tokenizer
    max_seq_len: int
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    paper: bool = False  # one of the paper's Table 1 shapes
    note: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


PRESETS: dict[str, ModelShape] = {
    # Paper Table 1. Llama-2 shapes from EvoLM (Qi et al. 2025): GQA with 4 query groups.
    "llama2-0.5b": ModelShape("llama2", 1536, 3216, 20, 32, 4, 32000, 2048, paper=True),
    "llama2-1b": ModelShape("llama2", 2048, 4896, 22, 32, 4, 32000, 2048, paper=True),
    "llama2-4b": ModelShape("llama2", 4096, 7792, 28, 32, 4, 32000, 2048, paper=True),
    # OLMo-2-1B: Table 1 lists intermediate 16384, which is OLMo-core's fused SwiGLU width (2 x 8192); the
    # HF Olmo2Config uses the per-projection width 8192 (that gives the 1.5B total the paper reports).
    "olmo2-1b": ModelShape(
        "olmo2", 2048, 8192, 16, 16, 16, 100278, 4096, rope_theta=500000.0, paper=True,
        note="Table 1 intermediate 16384 = fused SwiGLU width",
    ),
    # CPU presets (a few 100k to ~20M non-embedding params); vocab from the tokenizer.
    "llama2-tiny": ModelShape("llama2", 64, 176, 4, 4, 2, None, 256),
    "llama2-mini": ModelShape("llama2", 128, 344, 4, 4, 2, None, 256),
    "llama2-small": ModelShape("llama2", 256, 688, 6, 8, 2, None, 512),
    "llama2-base": ModelShape("llama2", 512, 1376, 6, 8, 2, None, 1024),
    "olmo2-tiny": ModelShape("olmo2", 64, 176, 4, 4, 4, None, 256, rope_theta=500000.0),
    "olmo2-mini": ModelShape("olmo2", 128, 344, 4, 4, 4, None, 256, rope_theta=500000.0),
    "olmo2-small": ModelShape("olmo2", 256, 688, 6, 8, 8, None, 512, rope_theta=500000.0),
}

# Default weight-decay policy per family: the paper's Llama code (litgpt) decays every parameter; OLMo-2
# (OLMo-core) excludes the embedding matrix from weight decay.
DEFAULT_WD_POLICY: dict[str, str] = {"llama2": "all", "olmo2": "no_embed"}


def get_preset(name: str) -> ModelShape:
    if name not in PRESETS:
        raise ConfigError("model.preset", f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return PRESETS[name]


def resolve_shape(cfg: ModelConfig, tokenizer_vocab: int | None) -> ModelShape:
    """Apply config overrides to the preset and fix the vocabulary size."""
    shape = get_preset(cfg.preset)
    over = {
        k: v
        for k, v in {
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads,
            "num_kv_heads": cfg.num_kv_heads,
            "max_seq_len": cfg.max_seq_len,
            "rope_theta": cfg.rope_theta,
            "vocab_size": cfg.vocab_size,
        }.items()
        if v is not None
    }
    shape = replace(shape, **over)
    if shape.hidden_size % shape.num_heads:
        raise ConfigError("model.num_heads", f"hidden_size {shape.hidden_size} is not divisible by {shape.num_heads}")
    if shape.num_heads % shape.num_kv_heads:
        raise ConfigError("model.num_kv_heads", f"num_heads {shape.num_heads} is not divisible by {shape.num_kv_heads}")
    if shape.vocab_size is None:
        if tokenizer_vocab is None:
            raise ConfigError("model.vocab_size", "preset has no vocabulary size and no tokenizer was given")
        shape = replace(shape, vocab_size=int(math.ceil(tokenizer_vocab / 64) * 64))
    elif tokenizer_vocab is not None and tokenizer_vocab > shape.vocab_size:
        raise ConfigError(
            "model.vocab_size",
            f"tokenizer has {tokenizer_vocab} tokens but the model's vocabulary is {shape.vocab_size} "
            "(vocab mismatch: use a matching tokenizer or set model.vocab_size)",
        )
    return shape


def hf_config(shape: ModelShape, init_std: float = 0.02, bos_id: int | None = None, eos_id: int | None = None,
              pad_id: int | None = None):
    """The ``transformers`` config for a shape."""
    common = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_seq_len,
        rope_theta=shape.rope_theta,
        initializer_range=init_std,
        tie_word_embeddings=shape.tie_embeddings,
        attention_bias=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    if shape.family == "llama2":
        from transformers import LlamaConfig

        return LlamaConfig(rms_norm_eps=1e-5, mlp_bias=False, **common)
    from transformers import Olmo2Config

    return Olmo2Config(rms_norm_eps=1e-6, **common)


def build_model(shape: ModelShape, init_std: float = 0.02, seed: int = 0, device: str | torch.device = "cpu",
                **token_ids: int | None) -> torch.nn.Module:
    """Randomly initialised HF model for `shape` (deterministic given `seed`)."""
    from transformers import AutoModelForCausalLM

    config = hf_config(shape, init_std, **token_ids)
    if str(device) == "meta":
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.to(device)


@dataclass
class ParamCounts:
    total: int
    embedding: int  # input embedding matrix
    lm_head: int  # output projection (0 when tied)
    non_embedding: int  # total - embedding - lm_head

    @property
    def matmul(self) -> int:
        """Parameters used in matrix multiplies per token (non-embedding + lm_head)."""
        return self.non_embedding + (self.lm_head or self.embedding)


def count_params(model: torch.nn.Module | ModelShape) -> ParamCounts:
    """Total / embedding / non-embedding parameter counts of an HF causal LM (tied weights counted once), or of a
    `ModelShape` (vocab resolved) without building it: the same numbers, from the Llama-2 / OLMo-2 layout."""
    if isinstance(model, ModelShape):
        return _shape_params(model)
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    embedding = emb.numel()
    lm_head = 0 if head is emb else head.numel()
    return ParamCounts(total=total, embedding=embedding, lm_head=lm_head, non_embedding=total - embedding - lm_head)


def _shape_params(s: ModelShape) -> ParamCounts:
    if s.vocab_size is None:
        raise ValueError("count_params of a shape needs its vocab_size")
    kv = s.num_kv_heads * s.head_dim
    attn = 2 * s.hidden_size * s.hidden_size + 2 * s.hidden_size * kv
    mlp = 3 * s.hidden_size * s.intermediate_size
    norms = 2 * s.hidden_size + (s.hidden_size + kv if s.family == "olmo2" else 0)  # OLMo-2: q/k norms too
    embedding = s.vocab_size * s.hidden_size
    lm_head = 0 if s.tie_embeddings else embedding
    non_embedding = s.num_layers * (attn + mlp + norms) + s.hidden_size  # + the final norm
    return ParamCounts(total=embedding + lm_head + non_embedding, embedding=embedding, lm_head=lm_head,
                       non_embedding=non_embedding)


def flops_per_token(counts: ParamCounts, shape: ModelShape, seq_len: int | None = None) -> float:
    """Training FLOPs per token, PaLM appendix B: 6 N + 12 L d T, with N the matmul parameters
    (non-embedding + lm_head), L layers, d hidden size, T the sequence length (attention scores and values)."""
    t = seq_len or shape.max_seq_len
    return 6.0 * counts.matmul + 12.0 * shape.num_layers * shape.hidden_size * t


def describe_presets(tokenizer_vocab: int = 4096) -> list[dict]:
    """One row per preset: shape, parameter counts (meta device, no memory) and FLOPs/token."""
    rows = []
    for name, shape in PRESETS.items():
        s = shape if shape.vocab_size else replace(shape, vocab_size=tokenizer_vocab)
        model = build_model(s, device="meta")
        c = count_params(model)
        rows.append(
            dict(
                preset=name, family=s.family, hidden=s.hidden_size, intermediate=s.intermediate_size,
                layers=s.num_layers, heads=s.num_heads, kv_heads=s.num_kv_heads, vocab=s.vocab_size,
                ctx=s.max_seq_len, total_params=c.total, non_embedding_params=c.non_embedding,
                flops_per_token=flops_per_token(c, s), paper=s.paper, vocab_from_tokenizer=shape.vocab_size is None,
            )
        )
    return rows
