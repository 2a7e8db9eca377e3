"""Tests of lm-eval-style cloze scoring: batching vs a brute-force loop, tokenization rules, acc/acc_norm."""

from __future__ import annotations

import pytest
import torch

from plasticity.evaluate import loglikelihood as cloze_mod
from plasticity.evaluate.loglikelihood import choose, cloze_accuracy, encode_request, score_requests
from plasticity.tasks.base import ClozeItem
from plasticity.tasks.cloze import winogrande_partial as winogrande_item

REQUESTS = [
    ("The quick brown fox", " jumps over the lazy dog."),
    ("The quick brown fox ", "jumps"),  # trailing space moves onto the continuation
    ("", "A cat sat on the mat."),  # empty context -> BOS
    ("Paris is the capital of", " France"),
    ("Paris is the capital of", " Italy; Rome is the capital of France."),
    ("She put the book in the bag because the bag", " was big enough."),
    ("He", " could"),
]


def _enc(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _brute_force(model, tokenizer, context, continuation) -> float:
    ctx, cont = encode_request(tokenizer, context, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(float(logprobs[len(ctx) - 1 + t, tok]) for t, tok in enumerate(cont))


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_scores_match_brute_force(model, tokenizer, batch_size):
    got = score_requests(model, tokenizer, REQUESTS, batch_size=batch_size)
    want = [_brute_force(model, tokenizer, c, x) for c, x in REQUESTS]
    assert got == pytest.approx(want, abs=1e-4)


def test_encode_request_rules(tokenizer):
    ctx, cont = encode_request(tokenizer, "The quick brown fox ", "jumps")
    assert ctx == _enc(tokenizer, "The quick brown fox")
    assert ctx + cont == _enc(tokenizer, "The quick brown fox jumps")
    assert tokenizer.decode(cont) == " jumps"
    ctx, cont = encode_request(tokenizer, "", "A cat")
    assert ctx == [tokenizer.bos_token_id] and cont == _enc(tokenizer, "A cat")
    # whole-string encoding split at the context length (merges across the boundary are kept whole)
    ctx, cont = encode_request(tokenizer, "Paris is the capital of", " France")
    assert ctx + cont == _enc(tokenizer, "Paris is the capital of France")


def test_choose_acc_vs_acc_norm():
    # choice 0 has the higher total log-likelihood, choice 1 the higher per-character one
    assert choose([-10.0, -12.0], [2, 20]) == (0, 1)
    assert choose([-3.0, -3.0, -9.0], [3, 3, 3]) == (0, 0)  # ties -> lowest index
    assert choose([-5.0, -4.0], [10, 2]) == (1, 0)


def test_cloze_accuracy_with_fixed_logprobs(monkeypatch):
    table = {
        ("Q1", " short"): -4.0,
        ("Q1", " a much longer answer"): -6.0,
        ("Q2", " yes"): -1.0,
        ("Q2", " no"): -2.0,
    }
    monkeypatch.setattr(cloze_mod, "score_requests", lambda m, t, reqs, **kw: [table[r] for r in reqs])
    items = [
        ClozeItem(contexts=["Q1"], continuations=[" short", " a much longer answer"], gold=1),
        ClozeItem(contexts=["Q2"], continuations=[" yes", " no"], gold=0),
    ]
    out = cloze_accuracy(None, None, items)
    assert out["n"] == 2
    assert out["acc"] == 0.5  # Q1: -4 > -6 picks "short" (wrong); Q2 right
    assert out["acc_norm"] == 1.0  # Q1: -4/6 < -6/20 picks the long answer
    assert out["per_item"][0]["logprobs"] == [-4.0, -6.0]
    assert out["per_item"][0]["pred"] == 0 and out["per_item"][0]["pred_norm"] == 1
    # lm-eval normalizes by len(choice) without the " " delimiter when choice texts are given
    item = ClozeItem(contexts=["Q2"], continuations=[" yes", " no"], gold=1, choice_texts=["yes", "no"])
    assert item.norm_lengths() == [3, 2]
    assert cloze_accuracy(None, None, []) == {"acc": None, "acc_norm": None, "n": 0, "per_item": []}


def test_cloze_accuracy_matches_scores(llama, tokenizer):
    items = [
        ClozeItem(
            contexts=["Paris is the capital of"], continuations=[" France", " Italy", " the dog"], gold=0
        ),
        winogrande_item("She put the book in the bag because _ was big enough.", "the book", "the bag", "2"),
    ]
    out = cloze_accuracy(llama, tokenizer, items, batch_size=2)
    for item, res in zip(items, out["per_item"], strict=True):
        lls = score_requests(llama, tokenizer, item.requests(), batch_size=1)
        assert res["logprobs"] == pytest.approx(lls, abs=1e-4)
        assert (res["pred"], res["pred_norm"]) == choose(lls, item.norm_lengths())
    assert out["acc"] == pytest.approx(sum(r["correct"] for r in out["per_item"]) / 2)


def test_winogrande_partial_scoring():
    item = winogrande_item(
        "The trophy did not fit in the case because _ was too big.", "the trophy", "the case", 1
    )
    assert item.requests() == [
        ("The trophy did not fit in the case because the trophy", " was too big."),
        ("The trophy did not fit in the case because the case", " was too big."),
    ]
    assert item.gold == 0 and item.n_choices == 2


def test_item_validation():
    """One ClozeItem for tasks and scoring (issue #14): a malformed item is refused when built."""
    with pytest.raises(ValueError, match="one shared or one per choice"):
        ClozeItem(contexts=["a", "b"], continuations=["x", "y", "z"], gold=0)
    with pytest.raises(ValueError, match="out of range"):
        ClozeItem(contexts=["a"], continuations=["x", "y"], gold=2)
    with pytest.raises(ValueError, match=">= 2 choices"):
        ClozeItem(contexts=["a"], continuations=["x"], gold=0)
    item = ClozeItem(contexts=["q"], continuations=[" x", " yy"], gold=1)
    assert item.requests() == [("q", " x"), ("q", " yy")] and item.norm_lengths() == [2, 3]
    with pytest.raises(ValueError, match="choice_texts"):
        ClozeItem(contexts=["q"], continuations=[" x", " y"], gold=0, choice_texts=["x"]).norm_lengths()


def test_continuation_longer_than_the_window_is_scored_in_overlapping_pieces(model, tokenizer):
    """lm-eval refuses a continuation longer than the window; here it is scored in pieces of half a window, each
    token given the window of tokens before its piece's end (a brute-force loop over unpadded windows agrees),
    and with a window that holds everything the pieces add up to the one-forward score (chain rule)."""
    ctx, cont = encode_request(tokenizer, "The quick brown fox", " jumps over the lazy dog, and the dog sleeps on.")
    window, stride = 8, 4
    assert len(cont) > window
    got = cloze_mod.score_token_requests(model, [(ctx, cont)], max_length=window)[0]
    want = 0.0
    for start in range(0, len(cont), stride):
        end = min(start + stride, len(cont))
        ids = (ctx + cont[:end])[-(window + 1) :][:-1]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
        for k in range(start, end):  # cont[k] is predicted at the position of the token just before it
            want += float(logprobs[len(ids) - (end - k), cont[k]])
    assert got == pytest.approx(want, abs=1e-4)
    whole = cloze_mod.score_token_requests(model, [(ctx, cont)], max_length=len(ctx + cont))[0]
    pieces = cloze_mod.score_token_requests(
        model, [(ctx + cont[:i], cont[i : i + stride]) for i in range(0, len(cont), stride)], max_length=None
    )
    assert sum(pieces) == pytest.approx(whole, abs=1e-4)


def test_template_scoring_is_the_fine_tuning_loss_of_each_choice(model, tokenizer):
    """With the fine-tuning template each choice is scored as the response fine-tuning would train on: its
    log-likelihood equals minus the held-out SFT loss of (context, choice) times its response tokens (an
    independent, right-padded path), and the prediction is the choice with the highest one."""
    from plasticity.data.sft import encode_example
    from plasticity.evaluate.heldout import example_losses

    template = "Human: {question}\nAssistant: {response}"
    items = [ClozeItem(["Paris is the capital of"], [" France", " Italy", " the moon"], 0),
             ClozeItem(["The cat", "The dogs"], [" sleeps."], 1)]
    res = cloze_accuracy(model, tokenizer, items, batch_size=2, template=template)
    for item, per in zip(items, res["per_item"], strict=True):
        pairs = [(c, x.lstrip(" ")) for c, x in item.requests()]
        n_resp = [sum(label != -100 for label in encode_example(tokenizer, template, q, r).labels) for q, r in pairs]
        want = [-loss * n for loss, n in zip(example_losses(model, tokenizer, template, pairs), n_resp, strict=True)]
        assert per["logprobs"] == pytest.approx(want, abs=1e-4)
        assert per["pred"] == int(torch.tensor(want).argmax())
    raw = cloze_accuracy(model, tokenizer, items, batch_size=2)
    assert [p["logprobs"] for p in raw["per_item"]] != [p["logprobs"] for p in res["per_item"]]


def test_one_padding_id_for_cloze_probes_sampler_and_heldout():
    """`tokenizer.padding_id`: pad, else EOS (the HF convention), else UNK, else 0; padded positions are masked
    or after the last real token, so the choice never changes a score (the cloze tests above pin the scores)."""
    from types import SimpleNamespace as T

    from plasticity.tokenizer import padding_id

    assert padding_id(T(pad_token_id=5, eos_token_id=2, unk_token_id=1)) == 5
    assert padding_id(T(pad_token_id=None, eos_token_id=2, unk_token_id=1)) == 2
    assert padding_id(T(pad_token_id=None, eos_token_id=None, unk_token_id=1)) == 1
    assert padding_id(T(pad_token_id=None, eos_token_id=None, unk_token_id=None)) == 0
