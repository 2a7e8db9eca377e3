"""A continuous-batching decode engine: slots over a static KV cache, refilled as samples finish.

The sampler's work is (prompt, sample) pairs. The engine keeps `slots` of them decoding at once. Each slot owns
a row of a KV buffer allocated once per call ([slots, kv_heads, capacity, head_dim] per layer) and its own
position, so rows of different lengths decode side by side with no padding and no waiting for the longest row:
a finished row's slot is refilled at once with the next pair. A prompt is prefilled once (its first n-1 tokens,
through the model's own forward) and its keys/values are copied into the slots of its samples, so the k samples
share one prefill; the last prompt token goes through the first decode step of each slot, which samples the
first new token like every later one.

One decode step (`_slot_step` + `_sample`) has static shapes, so on CUDA it is captured once per attention
width (a multiple of 64 positions, the live rows' longest) as a CUDA graph and replayed: one launch per token
instead of hundreds. Sampling happens inside the step with a counter-based generator (`uniform`): sample j of a
prompt draws its t-th token from u(seed_j, t), a hash of its seed and t, by inverse CDF; so a sample does not
depend on which slot, batch or device decodes it (up to float rounding of the logits), and greedy decoding
(temperature 0) is the argmax, token for token `model.generate`'s.

Llama and OLMo-2 causal LMs are supported (`supports`); the sampler keeps Hugging Face's forward for others.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

_WIDTH_STEP = 64  # attention widths are multiples of this (one CUDA graph per width)
_REFILL_FRACTION = 8  # refill once this fraction of the slots is free (or nothing is left decoding)


def supports(model: Any) -> bool:
    """True for a plain (unwrapped) Llama or OLMo-2 causal LM with the module layout `_slot_step` reads."""
    name = type(model).__name__
    if name not in ("LlamaForCausalLM", "Olmo2ForCausalLM") or getattr(model.config, "pretraining_tp", 1) != 1:
        return False
    body = getattr(model, "model", None)
    if body is None or not hasattr(body, "rotary_emb") or not getattr(body, "layers", None):
        return False
    attn = getattr(body.layers[0], "self_attn", None)
    need = ("q_proj", "k_proj", "v_proj", "o_proj", "scaling") + (("q_norm", "k_norm") if name.startswith("Olmo2")
                                                                   else ())
    return attn is not None and all(hasattr(attn, a) for a in need)


# ------------------------------------------------------------------------------------------------ randomness

_M1, _M2 = 0x7FEB352D, 0x846CA68B  # lowbias32 (C. Wellons' hash prospector), a full-avalanche 32-bit mix


def _mul32(x: torch.Tensor, m: int) -> torch.Tensor:
    """(x * m) mod 2^32 for int64 x in [0, 2^32), in 16-bit halves so no product leaves int64's range."""
    lo, hi = x & 0xFFFF, x >> 16
    return ((((hi * m) & 0xFFFF) << 16) + lo * m) & 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, _M1)
    x = x ^ (x >> 15)
    x = _mul32(x, _M2)
    return x ^ (x >> 16)


def uniform(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """A uniform number in [0, 1) per row (float64) from (63-bit seed, counter): the same integers give the
    same number on every device and in every batch."""
    lo, hi = seeds & 0xFFFFFFFF, (seeds >> 32) & 0x7FFFFFFF
    c = counters & 0xFFFFFFFF
    a = _hash32(lo ^ _hash32(hi ^ _hash32(c ^ 0x9E3779B9)))
    b = _hash32(a ^ 0x85EBCA6B)
    return ((a << 21) + (b >> 11)).double() / float(1 << 53)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Hugging Face's repetition penalty: the logit of every `seen` token divided by `penalty` if positive,
    multiplied by it if negative."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def sample_tokens(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, seeds: torch.Tensor,
                  counters: torch.Tensor) -> torch.Tensor:
    """One token per row of float32 `logits`: argmax when `temperature` is 0, else a draw from the softmax at
    `temperature` after top-k / top-p filtering (Hugging Face's order), by inverse CDF at
    `uniform(seeds, counters)`."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1.0 - top_p)
        remove[:, -1:] = False
        logits = logits.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    u = (uniform(seeds, counters).to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)  # < the total: an index < vocab
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=vocab - 1)


# ------------------------------------------------------------------------------------------------ the step


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _slot_step(model: Any, olmo2: bool, tokens: torch.Tensor, pos: torch.Tensor, keys: list[torch.Tensor],
               values: list[torch.Tensor], width: int) -> torch.Tensor:
    """Feed `tokens[r]` at position `pos[r]` of every slot r (its key/value written there) and return the next
    logits (float32, [slots, vocab]); attention covers positions 0..pos[r] within the first `width`."""
    body, cfg = model.model, model.config
    b = tokens.shape[0]
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    rows = torch.arange(b, device=tokens.device)
    x = body.embed_tokens(tokens[:, None])
    cos, sin = body.rotary_emb(x, pos[:, None])
    cos, sin = cos[:, None], sin[:, None]  # [b, 1, 1, head_dim]
    mask = (torch.arange(width, device=tokens.device)[None, :] <= pos[:, None])[:, None, None]
    for i, layer in enumerate(body.layers):
        attn = layer.self_attn
        h = x if olmo2 else layer.input_layernorm(x)
        q, k = attn.q_proj(h), attn.k_proj(h)
        if olmo2:
            q, k = attn.q_norm(q), attn.k_norm(k)
        # grouped-query attention without repeating the cache: the heads/kv_heads query heads that share a
        # key/value head (Hugging Face's repeat_kv order) stand in the query-length dimension of their group
        q = q.view(b, kv_heads, heads // kv_heads, -1)
        k = k.view(b, kv_heads, 1, -1)
        v = attn.v_proj(h).view(b, kv_heads, 1, -1)
        q, k = _rotate(q, cos, sin).to(v.dtype), _rotate(k, cos, sin).to(v.dtype)
        keys[i][rows, :, pos] = k[:, :, 0]
        values[i][rows, :, pos] = v[:, :, 0]
        o = F.scaled_dot_product_attention(q, keys[i][:, :, :width], values[i][:, :, :width], attn_mask=mask,
                                           scale=attn.scaling)
        o = attn.o_proj(o.reshape(b, 1, -1))
        if olmo2:
            x = x + layer.post_attention_layernorm(o)
            x = x + layer.post_feedforward_layernorm(layer.mlp(x))
        else:
            x = x + o
            x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(body.norm(x))[:, -1].float()


@dataclass(frozen=True)
class Decoding:
    """What one engine call decodes with (from the sampler's SamplingConfig)."""

    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float


class _State:
    """The device tensors one decode step reads and updates in place (static addresses: graph-capturable)."""

    def __init__(self, model: Any, slots: int, capacity: int, max_new: int, vocab: int, device: torch.device,
                 penalty: bool, eos: torch.Tensor, trigger: torch.Tensor):
        cfg = model.config
        kv_heads = cfg.num_key_value_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        dtype = model.model.embed_tokens.weight.dtype
        shape = (slots, kv_heads, capacity, head_dim)
        n_layers = len(model.model.layers)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        z = {"dtype": torch.long, "device": device}
        self.tokens, self.pos, self.ntok = (torch.zeros(slots, **z) for _ in range(3))
        self.seeds = torch.zeros(slots, **z)
        self.active = torch.zeros(slots, dtype=torch.bool, device=device)
        self.out = torch.zeros((slots, max_new), **z)
        self.seen = torch.zeros((slots, vocab), dtype=torch.bool, device=device) if penalty else None
        self.eos, self.trigger = eos, trigger
        self.flags = torch.zeros(slots, dtype=torch.uint8, device=device)  # 1: finished, 2: check a stop string


def _decode_step(model: Any, olmo2: bool, st: _State, dec: Decoding, width: int) -> None:
    """One token for every slot, sampled and recorded on the device; `st.flags` says which rows need the host."""
    logits = _slot_step(model, olmo2, st.tokens, st.pos, st.keys, st.values, width)
    if st.seen is not None:
        logits = apply_repetition_penalty(logits, st.seen, dec.repetition_penalty)
    nxt = sample_tokens(logits, dec.temperature, dec.top_k, dec.top_p, st.seeds, st.ntok)
    rows = torch.arange(nxt.shape[0], device=nxt.device)
    st.out[rows, st.ntok.clamp(max=dec.max_new_tokens - 1)] = nxt
    if st.seen is not None:
        st.seen[rows, nxt] = True
    st.ntok.add_(1)
    st.pos.add_(1).clamp_(max=st.keys[0].shape[2] - 1)  # an idle slot's position stays inside its row
    st.tokens.copy_(nxt)
    done = st.active & (st.eos[nxt] | (st.ntok >= dec.max_new_tokens))
    check = st.active & st.trigger[nxt] & ~done
    st.flags.copy_(done.to(torch.uint8) + 2 * check.to(torch.uint8))


class _Runner:
    """Runs `_decode_step` eagerly, or on CUDA as one captured graph per attention width."""

    def __init__(self, model: Any, st: _State, dec: Decoding, use_graphs: bool):
        self.model, self.st, self.dec = model, st, dec
        self.olmo2 = type(model).__name__.startswith("Olmo2")
        self.graphs: dict[int, torch.cuda.CUDAGraph] | None = {} if use_graphs else None
        self.pool = torch.cuda.graph_pool_handle() if use_graphs else None

    def capture_all(self, widths: list[int]) -> None:
        """Capture every width's graph before any slot holds work (capturing runs the step, which writes); if
        capturing fails, warn once and decode eagerly."""
        if self.graphs is None:
            return
        try:
            self._capture(widths)
        except Exception as exc:  # noqa: BLE001 - a capture failure must not fail the evaluation
            warnings.warn(f"CUDA graph capture failed, decoding eagerly: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]}", stacklevel=3)
            self.graphs = None
            torch.cuda.synchronize()

    def _capture(self, widths: list[int]) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up (lazy kernel and workspace initialisation) outside the capture
                _decode_step(self.model, self.olmo2, self.st, self.dec, widths[0])
        torch.cuda.current_stream().wait_stream(side)
        for w in widths:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self.pool):
                _decode_step(self.model, self.olmo2, self.st, self.dec, w)
            self.graphs[w] = g

    def step(self, width: int) -> None:
        if self.graphs is not None:
            self.graphs[width].replay()
        else:
            _decode_step(self.model, self.olmo2, self.st, self.dec, width)


@dataclass
class Finished:
    """A finished (prompt, sample) pair: its generated tokens and why it stopped ("eos" / "stop" / "length")."""

    work: tuple[int, int]
    tokens: list[int]
    reason: str


def decode(model: Any, prompts: list[list[int]], work: list[tuple[int, int]], seeds: list[int], dec: Decoding,
        eos: set[int], trigger: list[bool] | None, stop_hit: Any, prefill: Any, slots: int) -> list[Finished]:
    """Decode every (prompt index, sample index) pair of `work` (sample seeds `seeds`, same order) and return
    them as they finish. `prefill(list of token lists)` returns each one's unpadded per-layer keys/values;
    `stop_hit(tokens)` says whether a stop string appeared; `trigger[id]` whether a token can complete one
    (None: any can)."""
    device = model.model.embed_tokens.weight.device
    vocab = model.lm_head.out_features
    longest = max(len(prompts[i]) for i, _ in work)
    capacity = -(-(longest - 1 + dec.max_new_tokens) // _WIDTH_STEP) * _WIDTH_STEP
    slots = max(1, min(slots, len(work)))
    eos_t = torch.zeros(vocab, dtype=torch.bool, device=device)
    eos_t[[e for e in eos if 0 <= e < vocab]] = True
    trig_t = torch.ones(vocab, dtype=torch.bool, device=device)
    if trigger is not None:
        n = min(vocab, len(trigger))
        trig_t[:n] = torch.tensor(trigger[:n], dtype=torch.bool)
    if stop_hit is None:
        trig_t.zero_()
    st = _State(model, slots, capacity, dec.max_new_tokens, vocab, device, dec.repetition_penalty != 1.0, eos_t,
                trig_t)
    runner = _Runner(model, st, dec, use_graphs=device.type == "cuda")
    runner.capture_all(list(range(_WIDTH_STEP, capacity + 1, _WIDTH_STEP)))
    st.pos.zero_(), st.ntok.zero_(), st.active.zero_()

    pending = deque(range(len(work)))  # indexes into work
    remaining = {}  # prompt index -> samples not yet placed (its prefix is kept until then)
    for i, _ in work:
        remaining[i] = remaining.get(i, 0) + 1
    prefixes: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    slot_work: list[int | None] = [None] * slots
    pos_host = [0] * slots
    free = list(range(slots))
    out: list[Finished] = []

    def refill() -> None:
        take = [pending.popleft() for _ in range(min(len(free), len(pending)))]
        need = list(dict.fromkeys(work[w][0] for w in take if work[w][0] not in prefixes))
        need_tokens = [prompts[i][:-1] for i in need]
        if any(need_tokens):
            with_prefix = [i for i, t in zip(need, need_tokens, strict=True) if t]
            for i, kv in zip(with_prefix, prefill([prompts[i][:-1] for i in with_prefix]), strict=True):
                prefixes[i] = kv
        for i in need:
            prefixes.setdefault(i, [])
        placed = [(free.pop(), w) for w in take]
        by_width: dict[int, list[tuple[int, int]]] = {}
        for slot, w in placed:
            by_width.setdefault(len(prompts[work[w][0]]) - 1, []).append((slot, w))
        for n, group in by_width.items():  # one copy per layer for every slot whose prefix has n positions
            idx = torch.tensor([s for s, _ in group], device=device)
            if n > 0:
                for layer in range(len(st.keys)):
                    st.keys[layer][idx, :, :n] = torch.cat([prefixes[work[w][0]][layer][0] for _, w in group])
                    st.values[layer][idx, :, :n] = torch.cat([prefixes[work[w][0]][layer][1] for _, w in group])
            st.pos[idx] = n
            st.tokens[idx] = torch.tensor([prompts[work[w][0]][-1] for _, w in group], device=device)
        idx = torch.tensor([s for s, _ in placed], device=device)
        st.ntok[idx] = 0
        st.seeds[idx] = torch.tensor([seeds[w] for _, w in placed], device=device)
        st.active[idx] = True
        if st.seen is not None:
            st.seen[idx] = False
            for slot, w in placed:
                st.seen[slot, torch.tensor(prompts[work[w][0]], device=device)] = True
        for slot, w in placed:
            slot_work[slot] = w
            pos_host[slot] = len(prompts[work[w][0]]) - 1
            i = work[w][0]
            remaining[i] -= 1
            if remaining[i] == 0:
                del prefixes[i]

    def finish(slot: int, reason: str) -> None:
        w = slot_work[slot]
        assert w is not None
        n = int(st.ntok[slot])
        out.append(Finished(work[w], st.out[slot, :n].tolist(), reason))
        slot_work[slot] = None
        st.active[slot] = False
        free.append(slot)

    while pending or len(free) < slots:
        if pending and (len(free) == slots or len(free) * _REFILL_FRACTION >= slots):
            refill()
        live = [pos_host[s] for s in range(slots) if slot_work[s] is not None]
        width = -(-(max(live) + 1) // _WIDTH_STEP) * _WIDTH_STEP
        runner.step(min(width, capacity))
        for s in range(slots):
            if slot_work[s] is not None:
                pos_host[s] += 1
        flagged = torch.nonzero(st.flags).squeeze(1).tolist()
        if not flagged:
            continue
        flags = st.flags[flagged].tolist()
        for slot, flag in zip(flagged, flags, strict=True):
            if slot_work[slot] is None:
                continue
            if flag & 1:
                last = int(st.tokens[slot])
                finish(slot, "eos" if last in eos else "length")
            elif stop_hit(st.out[slot, : int(st.ntok[slot])].tolist()):
                finish(slot, "stop")
    return out
