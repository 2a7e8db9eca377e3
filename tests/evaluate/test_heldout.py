"""Held-out fine-tuning loss equals the loss Hugging Face computes for the same SFT example, one at a time."""

from __future__ import annotations

import math

import pytest
import torch

from plasticity.data.sft import encode_example
from plasticity.evaluate.heldout import example_losses
from plasticity.tasks.base import DEFAULT_TEMPLATE

PAIRS = [
    ("What is two plus three?", "Two plus three is five. The answer is 5."),
    ("Name a colour of the sky.", "Blue."),
    ("Paris is the capital of which country?", "France, the country whose capital is Paris."),
]


def _hf_loss(model, tok, question: str, response: str) -> float:
    ex = encode_example(tok, DEFAULT_TEMPLATE, question, response)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels]))
    return float(out.loss)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_matches_hf_loss_per_example_whatever_the_batching(model, tokenizer, batch_size):
    got = example_losses(model, tokenizer, DEFAULT_TEMPLATE, PAIRS, batch_size=batch_size)
    want = [_hf_loss(model, tokenizer, q, r) for q, r in PAIRS]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert all(math.isfinite(v) and v > 0 for v in got)


def test_prompt_tokens_are_not_scored(llama, tokenizer):
    """Changing only the question changes the loss through conditioning, never by scoring prompt tokens:
    an empty response scores just the closing EOS."""
    a = example_losses(llama, tokenizer, DEFAULT_TEMPLATE, [("short", "")], 1)[0]
    b = example_losses(llama, tokenizer, DEFAULT_TEMPLATE, [("a much longer question " * 5, "")], 1)[0]
    ex = encode_example(tokenizer, DEFAULT_TEMPLATE, "short", "")
    assert sum(t != -100 for t in ex.labels) == 1  # only EOS
    assert math.isfinite(a) and math.isfinite(b)
    assert a == pytest.approx(_hf_loss(llama, tokenizer, "short", ""), rel=1e-5)


def test_cutoff_truncates_like_finetuning(llama, tokenizer):
    q, r = PAIRS[2]
    ex = encode_example(tokenizer, DEFAULT_TEMPLATE, q, r)
    cut = len(ex.input_ids) - 3
    got = example_losses(llama, tokenizer, DEFAULT_TEMPLATE, [(q, r)], 1, cutoff_len=cut)[0]
    with torch.no_grad():
        want = llama(input_ids=torch.tensor([ex.input_ids[:cut]]), labels=torch.tensor([ex.labels[:cut]])).loss
    assert got == pytest.approx(float(want), rel=1e-5)
