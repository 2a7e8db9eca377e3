"""Tests of the KV-cache sampler against transformers' `model.generate` and for seeding/stop behavior."""

from __future__ import annotations

import copy

import pytest
import torch

from plasticity.errors import ConfigError
from plasticity.evaluate import sampler as sampler_mod
from plasticity.evaluate.sampler import SamplingConfig, cut_at_stop, generate
from tests.conftest import DEVICES


def _greedy(**kw) -> SamplingConfig:
    base = dict(temperature=0.0, max_new_tokens=24, stop_strings=(), add_special_tokens=False, batch_size=3)
    base.update(kw)
    return SamplingConfig(**base)


def _hf_greedy(model, tokenizer, prompts, max_new_tokens, repetition_penalty=1.0) -> list[list[int]]:
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    assert tokenizer.padding_side == "left"
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            repetition_penalty=repetition_penalty,
            pad_token_id=tokenizer.pad_token_id,
        )
    rows = []
    for row in out[:, enc["input_ids"].shape[1] :].tolist():
        if tokenizer.eos_token_id in row:  # generate pads after EOS
            row = row[: row.index(tokenizer.eos_token_id) + 1]
        rows.append(row)
    return rows


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("penalty", [1.0, 1.1])
def test_greedy_matches_hf_generate(model, tokenizer, prompts, penalty, device):
    if device != "cpu":
        model = copy.deepcopy(model).to(device)  # the session fixture stays on the CPU
    ref = _hf_greedy(model, tokenizer, prompts, 24, penalty)
    out = generate(model, tokenizer, prompts, 1, _greedy(repetition_penalty=penalty))
    assert [s[0].token_ids for s in out] == ref
    for samples, ids in zip(out, ref, strict=True):
        assert samples[0].num_tokens == len(ids)
        assert samples[0].text == tokenizer.decode(ids, skip_special_tokens=True)


def test_greedy_independent_of_batch_size(llama, tokenizer, prompts):
    a = generate(llama, tokenizer, prompts, 1, _greedy(batch_size=1))
    b = generate(llama, tokenizer, prompts, 1, _greedy(batch_size=16))
    assert [s[0].token_ids for s in a] == [s[0].token_ids for s in b]


def test_greedy_k_copies(llama, tokenizer, prompts):
    out = generate(llama, tokenizer, prompts[:2], 3, _greedy())
    assert all(len(s) == 3 and len({tuple(x.token_ids) for x in s}) == 1 for s in out)


def test_length_stop(llama, tokenizer, prompts):
    out = generate(llama, tokenizer, prompts, 2, _greedy(max_new_tokens=7, eos_token_ids=()))
    assert all(s.finished_by == "length" and s.num_tokens == 7 for row in out for s in row)


def test_eos_stops(llama, tokenizer, prompts):
    base = generate(llama, tokenizer, prompts[:1], 1, _greedy(eos_token_ids=()))[0][0]
    eos = base.token_ids[5]
    cut = base.token_ids.index(eos) + 1
    s = generate(llama, tokenizer, prompts[:1], 1, _greedy(eos_token_ids=(eos,)))[0][0]
    assert s.finished_by == "eos"
    assert s.token_ids == base.token_ids[:cut]


def test_stop_strings_cut_text(llama, tokenizer, prompts):
    base = generate(llama, tokenizer, prompts, 1, _greedy(max_new_tokens=40, eos_token_ids=()))
    checked = 0
    for prompt, (ref,) in zip(prompts, base, strict=True):
        text = ref.text
        stop = next(
            (
                text[p : p + 3]
                for p in range(4, len(text) - 3)
                if text[p : p + 3].isprintable() and "\ufffd" not in text[p : p + 3]
            ),
            None,
        )
        if stop is None:
            continue
        first = text.find(stop)
        cfg = _greedy(max_new_tokens=40, eos_token_ids=(), stop_strings=("zzzzzz", stop))
        s = generate(llama, tokenizer, [prompt], 1, cfg)[0][0]
        assert s.finished_by == "stop"
        assert s.text == text[:first]
        assert s.token_ids == ref.token_ids[: s.num_tokens]
        # generation stopped at the token that completed the stop string
        assert stop in tokenizer.decode(s.token_ids)
        assert stop not in tokenizer.decode(s.token_ids[:-1])
        checked += 1
    assert checked >= 3


def test_cut_at_stop():
    assert cut_at_stop("abc Human: x Assistant: y", ("Assistant:", "Human:")) == ("abc ", True)
    assert cut_at_stop("no stop here", ("Human:",)) == ("no stop here", False)
    assert cut_at_stop("Human:", ("Human:",)) == ("", True)


def test_sampling_reproducible_across_batch_sizes(llama, tokenizer, prompts):
    cfg = dict(temperature=1.0, max_new_tokens=16, stop_strings=(), add_special_tokens=False, seed=3)
    a = generate(llama, tokenizer, prompts, 5, SamplingConfig(batch_size=2, **cfg))
    b = generate(llama, tokenizer, prompts, 5, SamplingConfig(batch_size=16, **cfg))
    ids_a = [[s.token_ids for s in row] for row in a]
    assert ids_a == [[s.token_ids for s in row] for row in b]
    # samples of a prompt differ from each other; another seed gives other samples
    assert all(len({tuple(x) for x in row}) > 1 for row in ids_a)
    c = generate(llama, tokenizer, prompts, 5, SamplingConfig(batch_size=16, **{**cfg, "seed": 4}))
    assert ids_a != [[s.token_ids for s in row] for row in c]
    # a sample depends on its prompt key, not on the other prompts in the call
    sub = generate(
        llama, tokenizer, prompts[3:1:-1], 5, SamplingConfig(batch_size=3, **cfg), prompt_keys=[3, 2]
    )
    assert [[s.token_ids for s in row] for row in sub] == [ids_a[3], ids_a[2]]


def test_top_k_1_and_tiny_top_p_equal_greedy(llama, tokenizer, prompts):
    greedy = generate(llama, tokenizer, prompts, 1, _greedy(repetition_penalty=1.1))
    for kw in ({"top_k": 1}, {"top_p": 1e-6}):
        cfg = _greedy(temperature=0.7, repetition_penalty=1.1, **kw)
        sampled = generate(llama, tokenizer, prompts, 3, cfg)
        assert all(s.token_ids == g[0].token_ids for g, row in zip(greedy, sampled, strict=True) for s in row)


def test_prefill_once_per_prompt(llama, tokenizer, prompts, monkeypatch):
    seen: list[list[int]] = []
    real = sampler_mod._prefill

    def counting(model, batch, pad_id, device):
        seen.extend(batch)
        return real(model, batch, pad_id, device)

    monkeypatch.setattr(sampler_mod, "_prefill", counting)
    cfg = SamplingConfig(max_new_tokens=4, stop_strings=(), add_special_tokens=False, batch_size=3)
    out = generate(llama, tokenizer, prompts, 4, cfg)
    assert len(out) == len(prompts) and all(len(row) == 4 for row in out)
    assert sorted(map(tuple, seen)) == sorted(
        tuple(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts
    )


def test_exponential_race_is_categorical():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    cfg = SamplingConfig(temperature=1.0)
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    draws = sampler_mod._next_tokens(probs.log().expand(4000, 4), cfg, gens)
    freq = torch.bincount(draws, minlength=4).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)
    assert freq[3] == 0


def test_config_validation():
    with pytest.raises(ConfigError):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ConfigError):
        SamplingConfig(temperature=-1.0)
    with pytest.raises(ConfigError):
        SamplingConfig(stop_strings=("",))


def test_fast_llama_decode_equals_hf_forward(llama, tokenizer, prompts, monkeypatch):
    """The static-cache Llama decode step gives the same samples as the Hugging Face forward with a dynamic
    cache (sampling, repetition penalty, rows leaving the batch at different steps)."""
    from plasticity.evaluate import fast_decode

    assert fast_decode.supports(llama)
    cfg = SamplingConfig(max_new_tokens=20, temperature=0.9, top_k=50, repetition_penalty=1.1, stop_strings=(),
                         add_special_tokens=False, batch_size=4, seed=3)
    fast = generate(llama, tokenizer, prompts, 3, cfg)
    monkeypatch.setattr(sampler_mod, "_FAST_DECODE", False)
    slow = generate(llama, tokenizer, prompts, 3, cfg)
    assert [[s.token_ids for s in row] for row in fast] == [[s.token_ids for s in row] for row in slow]


def test_sampler_prints_no_deprecation_warnings(llama, tokenizer, prompts, recwarn, monkeypatch):
    """The cache goes in through the forward's current argument name (no `past_key_values` FutureWarning)."""
    monkeypatch.setattr(sampler_mod, "_FAST_DECODE", False)  # the generic HF path passes the cache each step
    import warnings

    warnings.simplefilter("always")
    generate(llama, tokenizer, prompts[:2], 2, SamplingConfig(max_new_tokens=4, stop_strings=()))
    assert not [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))], \
        [str(w.message) for w in recwarn]


@pytest.mark.slow
def test_compiled_decode_equals_eager(llama, tokenizer, prompts, monkeypatch):
    """The compiled static-shape decode step (large generations) gives the eager step's samples, with rows
    finishing at different steps (EOS) while the batch stays static, and rebuilds after a weight change."""
    from plasticity.evaluate import fast_decode

    cfg = SamplingConfig(max_new_tokens=12, temperature=0.0, stop_strings=(), add_special_tokens=False,
                         batch_size=4, eos_token_ids=())
    base = generate(llama, tokenizer, prompts, 1, cfg)
    eos = base[0][0].token_ids[4]  # an EOS that ends some rows early and not others
    cfg = SamplingConfig(**{**cfg.__dict__, "eos_token_ids": (eos,)})
    eager = generate(llama, tokenizer, prompts, 1, cfg)
    monkeypatch.setattr(sampler_mod, "_COMPILE_MIN_STEPS", 0)
    built = []
    real = fast_decode.compiled_step
    monkeypatch.setattr(fast_decode, "compiled_step", lambda m: built.append(m) or real(m))
    compiled = generate(llama, tokenizer, prompts, 1, cfg)
    assert built, "the compiled step was not used"
    assert [s[0].token_ids for s in compiled] == [s[0].token_ids for s in eager]
    assert len({s[0].finished_by for s in eager}) > 1 or len({s[0].num_tokens for s in eager}) > 1
    first = fast_decode._COMPILED[llama][1]
    with torch.no_grad():
        llama.lm_head.weight.mul_(1.0)  # an in-place update: a frozen compiled step must not be reused
    fast_decode.compiled_step(llama)
    assert fast_decode._COMPILED[llama][1] is not first
