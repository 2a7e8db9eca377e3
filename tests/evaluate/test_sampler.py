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


@pytest.mark.parametrize("engine", [True, False])
def test_prefill_once_per_prompt(llama, tokenizer, prompts, monkeypatch, engine):
    """Each prompt is prefilled once for its k samples: all but its last token in the engine (whose first decode
    step feeds the last one), the whole prompt on the Hugging Face path."""
    monkeypatch.setattr(sampler_mod, "_FAST_DECODE", engine)
    seen: list[list[int]] = []
    real = sampler_mod._prefill

    def counting(model, batch, pad_id, device):
        seen.extend(batch)
        return real(model, batch, pad_id, device)

    monkeypatch.setattr(sampler_mod, "_prefill", counting)
    cfg = SamplingConfig(max_new_tokens=4, stop_strings=(), add_special_tokens=False, batch_size=3)
    out = generate(llama, tokenizer, prompts, 4, cfg)
    assert len(out) == len(prompts) and all(len(row) == 4 for row in out)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert sorted(map(tuple, seen)) == sorted(tuple(x[:-1] if engine else x) for x in ids)


def test_inverse_cdf_draw_is_categorical():
    """Draws with 4,000 seeds follow the softmax; a zero-probability token is never drawn; the same (seed,
    counter) gives the same draw in any batch, and counters move the draws."""
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    seeds = torch.tensor([sampler_mod.sample_seed(0, "q", j) for j in range(4000)])
    draws = sampler_mod._next_tokens(probs.log().expand(4000, 4), SamplingConfig(temperature=1.0), seeds, 0)
    freq = torch.bincount(draws, minlength=4).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)
    assert freq[3] == 0
    again = sampler_mod._next_tokens(probs.log().expand(7, 4), SamplingConfig(temperature=1.0), seeds[100:107], 0)
    assert again.tolist() == draws[100:107].tolist()
    later = sampler_mod._next_tokens(probs.log().expand(4000, 4), SamplingConfig(temperature=1.0), seeds, 1)
    assert (later != draws).float().mean() > 0.3


def test_uniform_is_uniform_and_pure():
    from plasticity.evaluate.engine import uniform

    seeds = torch.tensor([sampler_mod.sample_seed(1, i, 0) for i in range(20000)])
    u = uniform(seeds, torch.zeros_like(seeds))
    assert 0 <= float(u.min()) and float(u.max()) < 1
    hist = torch.histc(u.float(), bins=10, min=0, max=1) / len(u)
    assert torch.allclose(hist, torch.full((10,), 0.1), atol=0.01)
    assert uniform(seeds[5:6], torch.tensor([3])).item() == uniform(seeds, torch.full_like(seeds, 3))[5].item()
    assert len(set(uniform(seeds[:1].expand(1000), torch.arange(1000)).tolist())) == 1000


def test_config_validation():
    with pytest.raises(ConfigError):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ConfigError):
        SamplingConfig(temperature=-1.0)
    with pytest.raises(ConfigError):
        SamplingConfig(stop_strings=("",))


@pytest.mark.parametrize("arch", ["llama", "olmo2"])
def test_engine_equals_hf_forward_path(arch, tokenizer, prompts, monkeypatch, request):
    """The engine (slots, static cache, refills as rows finish) gives the same samples as the Hugging Face
    forward with a dynamic cache, in batches that shrink: sampling, top-k, repetition penalty, EOS ending rows
    at different steps, fewer slots than rows."""
    from plasticity.evaluate import engine

    model = request.getfixturevalue(arch)
    assert engine.supports(model)
    base = SamplingConfig(max_new_tokens=12, temperature=0.0, stop_strings=(), add_special_tokens=False,
                          eos_token_ids=())
    eos = generate(model, tokenizer, prompts, 1, base)[0][0].token_ids[3]  # ends some rows early, not others
    cfg = SamplingConfig(max_new_tokens=20, temperature=0.9, top_k=50, repetition_penalty=1.1, stop_strings=(),
                         add_special_tokens=False, batch_size=4, seed=3, eos_token_ids=(eos,))
    fast = generate(model, tokenizer, prompts, 3, cfg)
    monkeypatch.setattr(sampler_mod, "_FAST_DECODE", False)
    slow = generate(model, tokenizer, prompts, 3, cfg)
    assert [[s.token_ids for s in row] for row in fast] == [[s.token_ids for s in row] for row in slow]
    assert [[s.finished_by for s in row] for row in fast] == [[s.finished_by for s in row] for row in slow]
    greedy = SamplingConfig(**{**base.__dict__, "eos_token_ids": (eos,), "batch_size": 2})
    monkeypatch.setattr(sampler_mod, "_FAST_DECODE", True)
    fast_g = generate(model, tokenizer, prompts, 1, greedy)
    assert len({s[0].num_tokens for s in fast_g}) > 1  # rows did finish at different steps
    monkeypatch.setattr(sampler_mod, "_FAST_DECODE", False)
    assert [s[0].token_ids for s in fast_g] == [s[0].token_ids for s in generate(model, tokenizer, prompts, 1,
                                                                                  greedy)]


def test_engine_samples_do_not_depend_on_slots(llama, tokenizer, prompts):
    """A sample is a function of its seed and the model: 1 slot, 5 slots and all rows at once agree."""
    cfg = dict(max_new_tokens=10, temperature=1.0, stop_strings=(), add_special_tokens=False, seed=7)
    runs = [generate(llama, tokenizer, prompts, 4, SamplingConfig(batch_size=b, **cfg)) for b in (1, 5, 64)]
    tokens = [[[s.token_ids for s in row] for row in run] for run in runs]
    assert tokens[0] == tokens[1] == tokens[2]


def test_engine_stop_strings(llama, tokenizer, prompts):
    """A stop string found mid-decode ends the row (finished_by "stop", text cut before it) in the engine as on
    the Hugging Face path."""
    base = SamplingConfig(max_new_tokens=16, temperature=0.0, stop_strings=(), add_special_tokens=False,
                          eos_token_ids=())
    texts = [s[0].text for s in generate(llama, tokenizer, prompts, 1, base)]
    stop = next(t[len(t) // 2:len(t) // 2 + 2] for t in texts if len(t.strip()) > 6)
    cfg = SamplingConfig(**{**base.__dict__, "stop_strings": (stop,)})
    out = generate(llama, tokenizer, prompts, 1, cfg)
    assert any(s[0].finished_by == "stop" for s in out)
    assert all(stop not in s[0].text for s in out)


def test_sampler_prints_no_deprecation_warnings(llama, tokenizer, prompts, recwarn, monkeypatch):
    """The cache goes in through the forward's current argument name (no `past_key_values` FutureWarning)."""
    monkeypatch.setattr(sampler_mod, "_FAST_DECODE", False)  # the generic HF path passes the cache each step
    import warnings

    warnings.simplefilter("always")
    generate(llama, tokenizer, prompts[:2], 2, SamplingConfig(max_new_tokens=4, stop_strings=()))
    assert not [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))], \
        [str(w.message) for w in recwarn]
