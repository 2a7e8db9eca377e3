"""Shared fixtures for the analysis tests: tiny random Llama / OLMo-2 models and a local BPE tokenizer."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Olmo2Config, Olmo2ForCausalLM, PreTrainedTokenizerFast

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=300,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=1,
    attn_implementation="eager",
)

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "stocks fell sharply on monday",
    "the team won the final match",
    "this movie was wonderful and moving",
    "a dull and tedious film",
    "scientists discover a new planet",
    "rain is expected later this week",
]


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Larger random weights and non-trivial norm gains, so every term of the checks matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:  # RMSNorm gains
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model.eval()


def make_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return _randomize(LlamaForCausalLM(LlamaConfig(**{**TINY, **overrides})), seed)


def make_olmo2(seed: int = 0, **overrides) -> Olmo2ForCausalLM:
    torch.manual_seed(seed)
    return _randomize(Olmo2ForCausalLM(Olmo2Config(**{**TINY, **overrides})), seed)


@pytest.fixture
def llama() -> LlamaForCausalLM:
    return make_llama(0)


@pytest.fixture
def olmo2() -> Olmo2ForCausalLM:
    return make_olmo2(1)


@pytest.fixture(params=["llama", "olmo2"])
def tiny_model(request) -> torch.nn.Module:
    return make_llama(0) if request.param == "llama" else make_olmo2(1)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=290,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.fixture
def llama_factory():
    """``llama_factory(seed, **config_overrides)`` -> a fresh tiny randomized Llama."""
    return make_llama


@pytest.fixture
def olmo2_factory():
    """``olmo2_factory(seed, **config_overrides)`` -> a fresh tiny randomized OLMo-2."""
    return make_olmo2
