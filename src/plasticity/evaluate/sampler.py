"""Batched autoregressive sampling with a shared-prefix KV cache for Hugging Face causal LMs.

`generate` draws k completions for each prompt without `model.generate`:

* every prompt is tokenized once and prefilled once (prompts are prefilled in left-padded batches); its
  per-layer keys/values are kept unpadded and copied into the decode batches of its k samples, so the k
  samples of a prompt share one prefill;
* decode batches hold `batch_size` sequences (the samples of a prompt are grouped); they are left padded
  with an attention mask and explicit position ids, so padding never shifts positions;
* a finished sequence (EOS, stop string, or length) is dropped from the batch and its cache rows freed;
* Llama and OLMo-2 models decode in the continuous-batching engine (`engine`): slots over a static KV cache,
  refilled as samples finish, one CUDA graph per step on GPUs; other models through their own forward, in
  batches of `batch_size` with finished rows dropped;
* the t-th token of sample j of prompt i is drawn by inverse CDF at u(seed, t), a counter-based uniform of the
  sample's seed (from (cfg.seed, prompt key, j)) and t (`engine.uniform`), so a sample does not depend on the
  batch size, on which other sequences share its batch, or on the decode path or device (up to float rounding
  of the logits, which can differ with batch shape);
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
from plasticity.evaluate import engine as _engine
from plasticity.evaluate.shard import ONE, Shard
from plasticity.models import model_device
from plasticity.tokenizer import padding_id

_FAST_DECODE = True  # the engine for the models it supports; False: always the Hugging Face forward

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
    batch_size: int = 16  # rows decoded at once (the engine's slots: on a GPU at least this, sized from memory)
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


def _next_tokens(logits: torch.Tensor, cfg: SamplingConfig, seeds: torch.Tensor, step: int) -> torch.Tensor:
    """Pick one token per row: argmax when greedy, else the row's draw number `step` (`engine.sample_tokens`)."""
    counters = torch.full_like(seeds, step)
    return _engine.sample_tokens(logits, 0.0 if cfg.greedy else cfg.temperature, cfg.top_k, cfg.top_p, seeds,
                                 counters)


def _to_sample(tokenizer: Any, tokens: list[int], reason: FinishReason | None, cfg: SamplingConfig) -> Sample:
    text, found = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), cfg.stop_strings)
    final = "stop" if found else reason
    assert final is not None
    return Sample(text=text, token_ids=tokens, num_tokens=len(tokens), finished_by=final)


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
) -> list[Sample]:
    """Decode one batch of (prompt index, sample index) rows from their shared prefilled prefixes through the
    model's own forward and a dynamic cache (models the engine does not support); finished rows leave."""
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
    cache = DynamicCache(ddp_cache_data=layers)
    cache_kw = _cache_kwarg(model)
    positions = lens.clone()
    logits = torch.stack([prefixes[i].logits for i, _ in rows])
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = torch.zeros(logits.shape, dtype=torch.bool, device=device)
        for r, (i, _) in enumerate(rows):
            seen[r, torch.tensor(prompt_ids[i], device=device)] = True
    seed_t = torch.tensor(seeds, dtype=torch.long, device=device)

    alive = list(range(len(rows)))  # the result row of each batch row
    tokens: list[list[int]] = [[] for _ in rows]
    reasons: list[FinishReason | None] = [None] * len(rows)
    for step in range(cfg.max_new_tokens):
        if seen is not None:
            logits = _engine.apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
        nxt = _next_tokens(logits, cfg, seed_t, step)
        if seen is not None:
            seen[torch.arange(len(alive), device=device), nxt] = True
        keep = []
        for b, (r, tok) in enumerate(zip(alive, nxt.tolist(), strict=True)):
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
        if len(keep) < len(alive):
            idx = torch.tensor(keep, device=device)
            cache.batch_select_indices(idx)
            mask, positions, nxt = mask[idx], positions[idx], nxt[idx]
            seen = seen[idx] if seen is not None else None
            seed_t = seed_t[idx]
            alive = [alive[b] for b in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions[:, None], use_cache=True,
                    **{cache_kw: cache})
        logits = out.logits[:, -1, :].float()
        positions = positions + 1

    return [_to_sample(tokenizer, tokens[r], reasons[r], cfg) for r in range(len(rows))]


RESULT_BYTES_PER_TOKEN = 48  # a generated token kept in the results: its id in a list (int object) and its text


def generation_memory(config: Any, n_prompts: int, prompt_len: int, k: int, cfg: SamplingConfig) -> dict[str, int]:
    """Upper bound (bytes) of what one `generate` call holds: the KV cache of a batch at full length (fp32), two
    logits rows per sequence, and the k completions of every prompt at `max_new_tokens` each."""
    layers = int(getattr(config, "num_hidden_layers", 1) or 1)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    head_dim = int(getattr(config, "head_dim", None) or int(config.hidden_size) // heads)
    kv_dim = int(getattr(config, "num_key_value_heads", None) or heads) * head_dim
    batch, length = min(cfg.batch_size, n_prompts * k), prompt_len + cfg.max_new_tokens
    return {"kv_cache": batch * length * layers * 2 * kv_dim * 4,
            "logits": batch * int(config.vocab_size) * 4 * 2,
            "results": n_prompts * k * (cfg.max_new_tokens * RESULT_BYTES_PER_TOKEN + 200)}


def check_generation_memory(model: Any, n_prompts: int, prompt_len: int, k: int, cfg: SamplingConfig,
                            device: Any) -> None:
    """Refuse (one line naming k / max_new_tokens / batch_size) a generation that cannot fit, before anything of
    it is allocated: the guard training has, for sampling."""
    from plasticity.hardware import available_memory, human

    parts = generation_memory(model.config, n_prompts, prompt_len, k, cfg)
    total = sum(parts.values())
    avail, source = available_memory(device)
    if total > avail:
        what = ", ".join(f"{k_} {human(v)}" for k_, v in parts.items())
        raise ConfigError("k / max_new_tokens / batch_size", f"generating {k:,} samples of up to "
                          f"{cfg.max_new_tokens:,} tokens for {n_prompts:,} prompts needs about {human(total)} "
                          f"({what}), more than the available {human(avail)} ({source}); lower them")


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
    prefill batches (with their decode batches, formed as in one process; in the engine, the samples of its
    prompts) and every process gets all samples.
    """
    cfg = cfg or SamplingConfig()
    if k < 1:
        raise ConfigError("k", f"must be >= 1, got {k}")
    keys = list(range(len(prompts))) if prompt_keys is None else list(prompt_keys)
    if len(keys) != len(prompts):
        raise ValueError(f"{len(prompt_keys or [])} prompt_keys for {len(prompts)} prompts")
    if not prompts:
        return []
    device = model_device(model)
    ids = [list(tokenizer(p, add_special_tokens=cfg.add_special_tokens)["input_ids"]) for p in prompts]
    if any(len(x) == 0 for x in ids):
        raise ValueError(
            "a prompt encodes to zero tokens; pass add_special_tokens=True or a non-empty prompt"
        )
    pad_id = padding_id(tokenizer)
    eos = _eos_ids(model, tokenizer, cfg)
    stopper = _StopChecker(tokenizer, tuple(cfg.stop_strings)) if cfg.stop_strings else None

    check_generation_memory(model, len(prompts), max(map(len, ids)), k, cfg, device)
    k_run = 1 if cfg.greedy else k
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))  # longest first, stable
    work = [(i, j) for i in order for j in range(k_run)]
    last_use = {i: pos for pos, (i, _) in enumerate(work)}
    results: list[list[Sample | None]] = [[None] * k_run for _ in prompts]
    prefixes: dict[int, _Prefix] = {}
    next_prefill = 0

    was_training = model.training
    model.eval()
    try:
        if _FAST_DECODE and _engine.supports(model):
            rank_of = {i: p // cfg.batch_size for p, i in enumerate(order)}  # the prefill batch of each prompt
            mine = [(i, j) for i, j in work if shard.owns(rank_of[i])]
            if mine:
                _run_engine(model, tokenizer, ids, keys, mine, cfg, eos, stopper, pad_id, device, results)
            work = []  # done
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
            samples = _decode_chunk(model, tokenizer, rows, prefixes, ids, seeds, cfg, eos, stopper, device)
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


def engine_slots(model: Any, cfg: SamplingConfig, capacity: int, work: int, device: torch.device) -> int:
    """Rows the engine decodes at once: `cfg.batch_size` on CPUs; on a GPU as many as half its free memory
    holds (KV cache and per-row logits work), at least `cfg.batch_size`, at most 1,024 (past a few hundred rows
    a small model's step is compute-bound), never more than the work."""
    slots = cfg.batch_size
    if device.type == "cuda":
        conf = model.config
        head_dim = getattr(conf, "head_dim", None) or conf.hidden_size // conf.num_attention_heads
        elem = model.model.embed_tokens.weight.element_size()
        kv = 2 * conf.num_hidden_layers * conf.num_key_value_heads * head_dim * capacity * elem
        per_row = kv + 32 * conf.vocab_size + 8 * cfg.max_new_tokens  # logits, softmax/cumsum/sort, seen, out
        free = torch.cuda.mem_get_info(device)[0]
        slots = max(cfg.batch_size, min(1024, int(0.5 * free) // per_row))
    return max(1, min(slots, work))


def _run_engine(model: Any, tokenizer: Any, ids: list[list[int]], keys: list[Hashable],
                work: list[tuple[int, int]], cfg: SamplingConfig, eos: set[int], stopper: _StopChecker | None,
                pad_id: int, device: torch.device, results: list[list[Sample | None]]) -> None:
    """Decode `work` in the continuous-batching engine; fill `results[i][j]`."""
    seeds = [sample_seed(cfg.seed, keys[i], j) for i, j in work]
    dec = _engine.Decoding(cfg.max_new_tokens, 0.0 if cfg.greedy else cfg.temperature, cfg.top_k, cfg.top_p,
                           cfg.repetition_penalty)
    capacity = max(len(ids[i]) for i, _ in work) + cfg.max_new_tokens
    slots = engine_slots(model, cfg, capacity, len(work), device)
    budget = 32768 if device.type == "cuda" else 4096  # prompt tokens per prefill forward

    def prefill(prompts: list[list[int]]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        kv, chunk, size = [], [], 0
        for p in prompts + [None]:  # type: ignore[list-item]
            if p is None or (chunk and (size + len(p) > budget or len(chunk) >= cfg.batch_size * 8)):
                kv += [x.kv for x in _prefill(model, chunk, pad_id, device)] if chunk else []
                chunk, size = [], 0
            if p is not None:
                chunk.append(p)
                size += len(p)
        return kv

    done = _engine.decode(model, ids, work, seeds, dec, eos, stopper.trigger if stopper else None,
                       stopper.hit if stopper else None, prefill, slots)
    for f in done:
        i, j = f.work
        results[i][j] = _to_sample(tokenizer, f.tokens, f.reason, cfg)  # type: ignore[arg-type]
