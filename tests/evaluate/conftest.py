"""Shared fixtures for the evaluate tests: a tiny offline BPE tokenizer and tiny random causal LMs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

CORPUS = [
    "Human: What is two plus three?",
    "Assistant: Two plus three is five. The answer is 5.",
    "Human: Name a colour of the sky.",
    "Assistant: The sky is blue on a clear day.",
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat and looked at the bird in the tree.",
    "Weight decay shrinks the weights a little at every optimizer step.",
    "She put the book in the bag because the bag was big enough.",
    "He could not lift the box because it was too heavy for him.",
    "Paris is the capital of France; Rome is the capital of Italy.",
]

SPECIALS = ["<pad>", "<s>", "</s>"]


def make_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """Train a tiny byte-level BPE tokenizer offline and wrap it for transformers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _common(tokenizer: PreTrainedTokenizerFast) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # A larger init than the default 0.02 gives peaked logits, so greedy argmax has no near-ties
        # that float noise between two equivalent computations could flip.
        initializer_range=0.2,
        tie_word_embeddings=False,
    )


def make_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**_common(tokenizer))).eval()


def make_olmo2(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    return Olmo2ForCausalLM(Olmo2Config(**_common(tokenizer))).eval()


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture(scope="session")
def llama(tokenizer) -> PreTrainedModel:
    return make_llama(tokenizer)


@pytest.fixture(scope="session")
def olmo2(tokenizer) -> PreTrainedModel:
    return make_olmo2(tokenizer)


@pytest.fixture(scope="session", params=["llama", "olmo2"])
def model(request) -> PreTrainedModel:
    """Each tiny architecture in turn (Llama, OLMo-2)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    """Prompts of different token lengths, so batches need left padding."""
    return [
        "Human: What is two plus three?\nAssistant:",
        "The cat",
        "Human: Name a colour of the sky and say why it has that colour.\nAssistant: The",
        "Paris is",
        "He could not lift the box",
    ]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tokenizer, llama) -> Path:
    """The tiny Llama and its tokenizer saved as a checkpoint directory."""
    d = tmp_path_factory.mktemp("tiny_llama")
    llama.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def rm_dir(ckpt, tmp_path_factory, tokenizer) -> Path:
    """A real HF sequence-classification reward model: the tiny Llama body plus a seeded random score head."""
    d = tmp_path_factory.mktemp("tiny_rm")
    torch.manual_seed(1)
    from transformers import LlamaForSequenceClassification

    rm = LlamaForSequenceClassification.from_pretrained(ckpt, num_labels=1)
    rm.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d
