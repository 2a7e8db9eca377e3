"""Batched autoregressive sampling with a shared-prefix KV cache for Hugging Face causal LMs.

`generate` draws k completions for each prompt without `model.generate`:

* every prompt is tokenized once and prefilled once (prompts are prefilled in left-padded batches); its
  per-layer keys/values are kept unpadded and copied into the decode batches of its k samples, so the k
  samples of a prompt share one prefill;
* decode batches hold `batch_size` sequences (the samples of a prompt are grouped); they are left padded
  with an attention mask and explicit position ids, so padding never shifts positions;
* a finished sequence (EOS, stop string, or length) is dropped from the batch and its cache rows freed;
* sample j of prompt i draws its randomness from its own `torch.Generator`, seeded from
  (cfg.seed, prompt key, j), so a sample does not depend on the batch size or on which other sequences
  share its batch (up to float rounding of the logits, which can differ with batch shape);
* logits are processed in float32 in Hugging Face order: repetition penalty, then temperature, top-k,
  top-p (the last three only when sampling). Greedy decoding (temperature 0) matches
  `model.generate(do_sample=False)` token for token. One documented difference: Hugging Face applies the
  repetition penalty to the pad tokens of a left-padded row too; here only real prompt and generated
  tokens are penalized, so a sequence never depends on how much padding its batch needed.
"""

from __future__ import annotations

import hashlib
import inspect
import weakref
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from plasticity.config import EvaluateConfig
from plasticity.errors import ConfigError

from . import fast_decode as _fast
from .shard import ONE, Shard

_FAST_DECODE = True  # the static-cache Llama decode step (fast_decode); False: always the HF forward
# Compile the fast decode step when a call runs at least this many decode steps (batches x max_new_tokens):
# on a loaded 2-core AVX2 CPU it saved ~1 ms per 16-row step and cost ~25 s to compile (BENCHMARKS.md).
_COMPILE_MIN_STEPS = 32768

FinishReason = Literal["eos", "stop", "length"]


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings.

    `temperature` 0 means greedy (top_p/top_k ignored); `top_k` 0 and `top_p` 1 switch those filters
    off. `repetition_penalty` follows Hugging Face: the logit of every token already present (prompt or
    generated) is divided by the penalty if positive and multiplied by it if negative. Generation of a
    sample stops at an EOS token (`eos_token_ids`; default: the model's generation-config EOS ids plus
    the tokenizer's), when a stop string appears in the decoded completion, or after `max_new_tokens`.
    `add_special_tokens` is passed to the tokenizer when encoding prompts (e.g. a Llama BOS token).
    """

    max_new_tokens: int = EvaluateConfig.max_new_tokens
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop_strings: tuple[str, ...] = ("Human:", "Assistant:")
    batch_size: int = 16
    seed: int = 0
    add_special_tokens: bool = True
    eos_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
            ("temperature", self.temperature >= 0.0, "must be >= 0 (0 means greedy)"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("top_k", self.top_k >= 0, "must be >= 0 (0 means off)"),
            ("repetition_penalty", self.repetition_penalty > 0.0, "must be > 0"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("stop_strings", all(isinstance(s, str) and s for s in self.stop_strings), "must be non-empty"),
        ]
        for key, ok, problem in checks:
            if not ok:
                raise ConfigError(f"sampling.{key}", f"{problem}, got {getattr(self, key)!r}")

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic argmax (temperature 0)."""
        return self.temperature == 0.0


@dataclass(frozen=True)
class Sample:
    """One completion.

    `text` is the decoded completion (special tokens skipped) cut before the first stop string.
    `token_ids` are all generated tokens: it ends with the EOS token when `finished_by == "eos"` and with
    the token that completed the stop string when `finished_by == "stop"`. `num_tokens == len(token_ids)`.
    """

    text: str
    token_ids: list[int]
    num_tokens: int
    finished_by: FinishReason


@dataclass
class _Prefix:
    """A prefilled prompt: unpadded per-layer keys/values ([1, heads, length, head_dim]) and next logits."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    logits: torch.Tensor
    length: int


def sample_seed(seed: int, prompt_key: Hashable, sample_index: int) -> int:
    """The generator seed of sample `sample_index` of the prompt identified by `prompt_key`."""
    digest = hashlib.blake2b(f"{seed}|{prompt_key!r}|{sample_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` before the earliest occurrence of any stop string; return (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


_TRIGGER_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], list[bool]]] = (
    weakref.WeakKeyDictionary()
)


def _trigger_table(tokenizer: Any, stop_strings: tuple[str, ...]) -> list[bool] | None:
    """Per token id: could appending this token complete a stop string? None means "always check".

    A stop string that newly appears must end inside the new token's text, so the token's text contains the
    stop string's last character. Tokens decoding to partial UTF-8 (U+FFFD) are always checked. Disabled
    when a stop string ends in whitespace, which single-token decoding may strip.
    """
    last_chars = {s[-1] for s in stop_strings}
    if any(c.isspace() for c in last_chars):
        return None
    try:
        per_tok = _TRIGGER_CACHE.setdefault(tokenizer, {})
    except TypeError:
        per_tok = {}
    if stop_strings not in per_tok:
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
        per_tok[stop_strings] = [("\ufffd" in p) or any(c in p for c in last_chars) for p in pieces]
    return per_tok[stop_strings]


class _StopChecker:
    """Detects stop strings in a growing completion, decoding only a short tail on most steps."""

    def __init__(self, tokenizer: Any, stop_strings: tuple[str, ...]):
        self.tokenizer = tokenizer
        self.stop_strings = stop_strings
        self.window = max(len(s.encode("utf-8")) for s in stop_strings) + 8
        self.trigger = _trigger_table(tokenizer, stop_strings)

    def hit(self, ids: list[int]) -> bool:
        last = ids[-1]
        if self.trigger is not None and last < len(self.trigger) and not self.trigger[last]:
            return False
        tail = self.tokenizer.decode(ids[-self.window :], skip_special_tokens=True)
        if not any(s in tail for s in self.stop_strings):
            return False
        full = self.tokenizer.decode(ids, skip_special_tokens=True)
        return any(s in full for s in self.stop_strings)


def _eos_ids(model: Any, tokenizer: Any, cfg: SamplingConfig) -> set[int]:
    if cfg.eos_token_ids is not None:
        return set(cfg.eos_token_ids)
    ids: set[int] = set()
    gen_cfg = getattr(model, "generation_config", None)
    gen_eos = getattr(gen_cfg, "eos_token_id", None)
    if gen_eos is not None:
        ids.update([gen_eos] if isinstance(gen_eos, int) else list(gen_eos))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def _accepts_logits_to_keep(model: Any) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _cache_kwarg(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` (transformers >= 5.2x, where
    ``past_key_values`` is deprecated with a FutureWarning) or ``past_key_values`` (older versions)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _prefill(model: Any, prompts: list[list[int]], pad_id: int, device: torch.device) -> list[_Prefix]:
    """Run one left-padded forward over `prompts` and split the cache into unpadded per-prompt pieces."""
    lengths = [len(p) for p in prompts]
    width = max(lengths)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for b, ids in enumerate(prompts):
        input_ids[b, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
    lens = torch.tensor(lengths)
    mask = (torch.arange(width)[None, :] >= (width - lens)[:, None]).long()
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs: dict[str, Any] = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    cache = DynamicCache()  # filled in place by the forward
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=position_ids.to(device),
        use_cache=True,
        **{_cache_kwarg(model): cache},
        **kwargs,
    )
    logits = out.logits[:, -1, :].float()
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    for layer in cache.layers:
        if layer.keys.shape[-2] != width:
            raise NotImplementedError("sliding-window / non-standard KV caches are not supported")
    return [
        _Prefix(
            kv=[(k[b : b + 1, :, width - n :], v[b : b + 1, :, width - n :]) for k, v in layers],
            logits=logits[b],
            length=n,
        )
        for b, n in enumerate(lengths)
    ]


def _apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def _next_tokens(
    logits: torch.Tensor, cfg: SamplingConfig, generators: list[torch.Generator]
) -> torch.Tensor:
    """Pick one token per row: argmax when greedy, else a per-row-seeded categorical draw."""
    if cfg.greedy:
        return logits.argmax(dim=-1)
    logits = logits / cfg.temperature
    vocab = logits.shape[-1]
    if 0 < cfg.top_k < vocab:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1.0 - cfg.top_p)
        remove[:, -1:] = False
        logits = logits.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
    probs = logits.softmax(dim=-1)
    # Exponential race: argmax_i p_i / E_i with E_i ~ Exp(1) iid is a draw from Categorical(p); each row
    # consumes exactly `vocab` draws of its own generator per step.
    noise = torch.stack(
        [torch.empty(vocab, device=logits.device).exponential_(generator=g) for g in generators]
    ).clamp_(min=torch.finfo(torch.float32).tiny)  # a 0 draw would make 0/0 = NaN win the argmax
    return (probs / noise).argmax(dim=-1)


def _decode_chunk(
    model: Any,
    tokenizer: Any,
    rows: list[tuple[int, int]],
    prefixes: dict[int, _Prefix],
    prompt_ids: list[list[int]],
    seeds: list[int],
    cfg: SamplingConfig,
    eos: set[int],
    stopper: _StopChecker | None,
    device: torch.device,
    capacity: int | None = None,
    compiled: bool = False,
) -> list[Sample]:
    """Decode one batch of (prompt index, sample index) rows from their shared prefilled prefixes.

    `compiled` (fast Llama path only) runs the compiled decode step over a KV buffer of `capacity` positions;
    finished rows then stay in the batch (static shapes) until half of it has finished."""
    uniq = list(dict.fromkeys(i for i, _ in rows))
    width = max(prefixes[i].length for i in uniq)
    row_to_uniq = torch.tensor([uniq.index(i) for i, _ in rows], device=device)
    layers = []
    for layer in range(len(prefixes[uniq[0]].kv)):
        padded = []
        for kv_index in (0, 1):
            parts = [
                F.pad(prefixes[i].kv[layer][kv_index], (0, 0, width - prefixes[i].length, 0)) for i in uniq
            ]
            padded.append(torch.cat(parts).index_select(0, row_to_uniq))
        layers.append((padded[0], padded[1]))
    lens = torch.tensor([prefixes[i].length for i, _ in rows], device=device)
    mask = (torch.arange(width, device=device)[None, :] >= (width - lens)[:, None]).long()
    fast = None
    if _FAST_DECODE and _fast.supports(model):
        fast = _fast.LlamaDecoder(model, layers, mask, cfg.max_new_tokens, capacity, compiled)
    cache = DynamicCache(ddp_cache_data=layers) if fast is None else None
    cache_kw = _cache_kwarg(model)
    positions = lens.clone()
    logits = torch.stack([prefixes[i].logits for i, _ in rows])
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = torch.zeros(logits.shape, dtype=torch.bool, device=device)
        for r, (i, _) in enumerate(rows):
            seen[r, torch.tensor(prompt_ids[i], device=device)] = True
    generators = []
    if not cfg.greedy:
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    alive = list(range(len(rows)))  # the result row of each batch row
    done = [False] * len(rows)  # batch rows that finished but stay in a static (compiled) batch
    tokens: list[list[int]] = [[] for _ in rows]
    reasons: list[FinishReason | None] = [None] * len(rows)
    for _ in range(cfg.max_new_tokens):
        if seen is not None:
            logits = _apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
        nxt = _next_tokens(logits, cfg, generators)
        if seen is not None:
            seen[torch.arange(len(alive), device=device), nxt] = True
        keep = []
        for b, (r, tok) in enumerate(zip(alive, nxt.tolist(), strict=True)):
            if done[b]:
                continue
            tokens[r].append(tok)
            if tok in eos:
                reasons[r] = "eos"
            elif stopper is not None and stopper.hit(tokens[r]):
                reasons[r] = "stop"
            elif len(tokens[r]) >= cfg.max_new_tokens:
                reasons[r] = "length"
            else:
                keep.append(b)
        if not keep:
            break
        static = fast is not None and fast.compiled is not None
        if static and 2 * len(keep) > len(alive):
            kept = set(keep)
            done = [b not in kept for b in range(len(alive))]  # keep computing them; results are dropped
        elif len(keep) < len(alive):
            done = [False] * len(keep)
            idx = torch.tensor(keep, device=device)
            if fast is not None:
                fast.select(idx)
            else:
                cache.batch_select_indices(idx)
            mask, positions, nxt = mask[idx], positions[idx], nxt[idx]
            seen = seen[idx] if seen is not None else None
            generators = [generators[b] for b in keep] if generators else generators
            alive = [alive[b] for b in keep]
        if fast is not None:
            logits = fast.step(nxt, positions)
        else:
            mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
            out = model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=positions[:, None],
                use_cache=True,
                **{cache_kw: cache},
            )
            logits = out.logits[:, -1, :].float()
        positions = positions + 1

    samples = []
    for r in range(len(rows)):
        text, found = cut_at_stop(tokenizer.decode(tokens[r], skip_special_tokens=True), cfg.stop_strings)
        reason = "stop" if found else reasons[r]
        assert reason is not None
        samples.append(Sample(text=text, token_ids=tokens[r], num_tokens=len(tokens[r]), finished_by=reason))
    return samples


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    k: int,
    cfg: SamplingConfig | None = None,
    prompt_keys: Sequence[Hashable] | None = None,
    shard: Shard = ONE,
) -> list[list[Sample]]:
    """Draw `k` completions for each prompt; returns `out[i][j]` = sample j of prompt i.

    `prompt_keys` (default: the prompt's index) identifies a prompt for seeding, so sample j of a prompt
    can be reproduced when the prompt list is sharded or reordered. With greedy decoding all k samples
    of a prompt are identical and are decoded once. The model is put in eval mode for the call.
    `shard` (several processes, `plasticity.evaluate.shard`): this process decodes only its share of the
    prefill batches (with their decode batches, formed as in one process) and every process gets all samples.
    """
    cfg = cfg or SamplingConfig()
    if k < 1:
        raise ConfigError("k", f"must be >= 1, got {k}")
    keys = list(range(len(prompts))) if prompt_keys is None else list(prompt_keys)
    if len(keys) != len(prompts):
        raise ValueError(f"{len(prompt_keys or [])} prompt_keys for {len(prompts)} prompts")
    if not prompts:
        return []
    device = _model_device(model)
    ids = [list(tokenizer(p, add_special_tokens=cfg.add_special_tokens)["input_ids"]) for p in prompts]
    if any(len(x) == 0 for x in ids):
        raise ValueError(
            "a prompt encodes to zero tokens; pass add_special_tokens=True or a non-empty prompt"
        )
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    eos = _eos_ids(model, tokenizer, cfg)
    stopper = _StopChecker(tokenizer, tuple(cfg.stop_strings)) if cfg.stop_strings else None

    k_run = 1 if cfg.greedy else k
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))  # longest first, stable
    work = [(i, j) for i in order for j in range(k_run)]
    steps = -(-len(work) // cfg.batch_size) * cfg.max_new_tokens
    compiled = _FAST_DECODE and steps >= _COMPILE_MIN_STEPS and _fast.supports(model)
    capacity = -(-(max(map(len, ids)) + cfg.max_new_tokens) // 64) * 64  # one compiled shape per call
    last_use = {i: pos for pos, (i, _) in enumerate(work)}
    results: list[list[Sample | None]] = [[None] * k_run for _ in prompts]
    prefixes: dict[int, _Prefix] = {}
    next_prefill = 0

    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(work), cfg.batch_size):
            chunk = start // (cfg.batch_size * k_run)  # the prefill batch whose prompts these rows continue
            if not shard.owns(chunk):
                continue
            next_prefill = max(next_prefill, chunk * cfg.batch_size)
            rows = work[start : start + cfg.batch_size]
            while any(i not in prefixes for i, _ in rows):
                batch = order[next_prefill : next_prefill + cfg.batch_size]
                next_prefill += len(batch)
                prefixes.update(
                    zip(batch, _prefill(model, [ids[i] for i in batch], pad_id, device), strict=True)
                )
            seeds = [sample_seed(cfg.seed, keys[i], j) for i, j in rows]
            samples = _decode_chunk(model, tokenizer, rows, prefixes, ids, seeds, cfg, eos, stopper, device,
                                    capacity, compiled and len(rows) == cfg.batch_size)
            for (i, j), sample in zip(rows, samples, strict=True):
                results[i][j] = sample
            end = start + len(rows)
            for i in {i for i, _ in rows if last_use[i] < end}:
                del prefixes[i]
    finally:
        model.train(was_training)
    if shard.world > 1:
        mine = [r if all(s is not None for s in r) else None for r in results]
        results = [r if r is not None else [None] * k_run for r in shard.merge(mine)]

    out: list[list[Sample]] = []
    for per_prompt in results:
        done = [s for s in per_prompt if s is not None]
        if cfg.greedy and done:
            done = [
                Sample(done[0].text, list(done[0].token_ids), done[0].num_tokens, done[0].finished_by)
                for _ in range(k)
            ]
        out.append(done)
    return out
