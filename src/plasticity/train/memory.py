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
from pathlib import Path
from typing import Any

from ..errors import ConfigError
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
    """`Shape` of an HF ``config.json`` mapping (Llama-style field names; GPT-NeoX and Qwen use the same ones)."""
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


def _read_int(path: str) -> int | None:
    try:
        raw = Path(path).read_text().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


def available_memory(device: Any = "cpu") -> tuple[int, str]:
    """(bytes, where from): free GPU memory on a CUDA device; else the lower of ``MemAvailable`` and the
    cgroup's limit minus its usage."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free memory of {device}"
    best: tuple[int, str] | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                best = (int(line.split()[1]) * 1024, "MemAvailable")
    except (OSError, ValueError, IndexError):
        pass
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_f), _read_int(usage_f)
        if limit is not None and limit < 1 << 60:
            left = max(0, limit - (usage or 0))
            if best is None or left < best[0]:
                best = (left, "cgroup memory limit")
            break
    return best if best is not None else (1 << 62, "unknown")


def human(n: float) -> str:
    for unit, div in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{int(n)} B"


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
