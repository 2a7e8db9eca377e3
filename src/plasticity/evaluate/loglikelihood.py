"""Cloze-style multiple-choice accuracy by log-likelihood, following lm-evaluation-harness semantics.

A request (context, continuation) is scored by the sum of the log-probabilities of the continuation tokens
given the context. Tokenization follows lm-eval's HF model: trailing whitespace of the context is moved to
the front of the continuation, context + continuation is encoded as a whole and split at the length of the
encoded context; an empty context becomes the BOS token (EOS if the tokenizer has no BOS). Inputs longer
than the model's window are truncated on the left, as lm-eval does. A continuation longer than the window
(lm-eval raises) is scored in pieces of half a window, each given the window's preceding tokens.

`acc` picks the choice with the highest log-likelihood; `acc_norm` divides each log-likelihood by the
character length of the choice string, as lm-eval does (`len(choice)` of `doc_to_choice`, i.e. without the
" " target delimiter that lm-eval prepends to the continuation; pass `choice_texts` to use exactly those
strings, otherwise the continuation strings are used). Ties go to the lowest index (`np.argmax`).

Winogrande uses lm-eval's partial scoring: the *context* varies (the sentence up to the blank with each
option filled in) and the shared continuation after the blank is scored; see `tasks.cloze.winogrande_partial`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from plasticity.evaluate.shard import ONE, Shard
from plasticity.models import model_device
from plasticity.tasks.base import (
    ClozeItem as ClozeItem,  # the one cloze item type: tasks build items, this module scores
)
from plasticity.tokenizer import padding_id


def _encode(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def encode_request(
    tokenizer: Any, context: str, continuation: str, add_special_tokens: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids (context, continuation) of one request, as lm-eval's HF model builds them."""
    if context == "":
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise ValueError("empty context needs a BOS or EOS token")
        cont = _encode(tokenizer, continuation, add_special_tokens)
        if cont and cont[0] == prefix:  # the tokenizer already added it
            return cont[:1], cont[1:]
        return [prefix], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation, add_special_tokens)
    ctx = _encode(tokenizer, context, add_special_tokens)
    if not ctx:  # an all-whitespace context: nothing left to condition on, use the empty-context rule
        return encode_request(tokenizer, "", continuation, add_special_tokens)
    return ctx, whole[len(ctx) :]


def _max_length(model: Any) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


@torch.inference_mode()
def score_token_requests(
    model: Any,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int = 16,
    max_length: int | None = None,
    pad_id: int = 0,
    shard: Shard = ONE,
) -> list[float]:
    """Sum of continuation-token log-probs for each (context ids, continuation ids) pair.

    Requests are sorted by length, left padded (explicit position ids) and scored `batch_size` at a time
    with one forward each; only the logits of the last `max continuation length` positions are computed.
    `shard` (several processes): this process scores its share of the batches; every process gets all scores.
    """
    max_length = max_length or _max_length(model)
    device = model_device(model)
    # (request index, (context, continuation)): one piece per request unless its continuation outgrows the window
    pieces = [(r, piece) for r, (ctx, cont) in enumerate(requests) for piece in _window_pieces(ctx, cont, max_length)]
    inputs: list[list[int]] = []
    cont_lens: list[int] = []
    targets: list[list[int]] = []
    for _, (ctx, cont) in pieces:
        full = list(ctx) + list(cont)
        if max_length is not None:
            full = full[-(max_length + 1) :]
        if len(full) - 1 < len(cont):
            raise ValueError("a request needs at least one context token")
        inputs.append(full[:-1])
        cont_lens.append(len(cont))
        targets.append(list(cont))
    piece_scores: list[float | None] = [0.0] * len(pieces)
    todo = sorted((i for i in range(len(pieces)) if cont_lens[i] > 0), key=lambda i: -len(inputs[i]))
    try:
        keep_kw = "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        keep_kw = False
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            if not shard.owns(start // batch_size):
                for i in batch:
                    piece_scores[i] = None  # another rank's
                continue
            width = max(len(inputs[i]) for i in batch)
            keep = max(cont_lens[i] for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            tgt = torch.zeros((len(batch), keep), dtype=torch.long)
            tgt_mask = torch.zeros((len(batch), keep), dtype=torch.bool)
            lens = torch.tensor([len(inputs[i]) for i in batch])
            for b, i in enumerate(batch):
                input_ids[b, width - len(inputs[i]) :] = torch.tensor(inputs[i], dtype=torch.long)
                tgt[b, keep - cont_lens[i] :] = torch.tensor(targets[i], dtype=torch.long)
                tgt_mask[b, keep - cont_lens[i] :] = True
            mask = (torch.arange(width)[None, :] >= (width - lens)[:, None]).long()
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs: dict[str, Any] = {"logits_to_keep": keep} if keep_kw else {}
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=position_ids.to(device),
                use_cache=False,
                **kwargs,
            ).logits[:, -keep:, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            picked = logprobs.gather(-1, tgt.to(device)[..., None]).squeeze(-1)
            sums = (picked * tgt_mask.to(device)).sum(dim=-1).tolist()
            for i, s in zip(batch, sums, strict=True):
                piece_scores[i] = float(s)
    finally:
        model.train(was_training)
    piece_scores = shard.merge(piece_scores)
    scores = [0.0] * len(requests)
    for (r, _), s in zip(pieces, piece_scores, strict=True):
        scores[r] += s
    return scores


def _window_pieces(
    ctx: Sequence[int], cont: Sequence[int], max_length: int | None
) -> list[tuple[list[int], list[int]]]:
    """A request whose continuation fits the window, unchanged; a longer one (lm-eval refuses it) as pieces of
    half a window, each conditioned on everything before it, so that every continuation token is scored given at
    least half a window of preceding tokens (a rolling window with overlap). The pieces' log-probs add up."""
    ctx, cont = list(ctx), list(cont)
    if max_length is None or len(cont) <= max_length:
        return [(ctx, cont)]
    stride = max(1, max_length // 2)
    return [(ctx + cont[:i], cont[i : i + stride]) for i in range(0, len(cont), stride)]


def score_requests(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    batch_size: int = 16,
    add_special_tokens: bool = False,
    shard: Shard = ONE,
) -> list[float]:
    """Sum of continuation log-probs for each (context, continuation) string pair (lm-eval tokenization)."""
    encoded = [encode_request(tokenizer, c, x, add_special_tokens) for c, x in requests]
    return score_token_requests(model, encoded, batch_size=batch_size, pad_id=padding_id(tokenizer), shard=shard)


def choose(logprobs: Sequence[float], norm_lengths: Sequence[int]) -> tuple[int, int]:
    """(acc prediction, acc_norm prediction): argmax of log-likelihood and of log-likelihood per character
    (a zero length counts as 1); ties go to the lowest index."""
    lls = np.asarray(logprobs, dtype=float)
    lengths = np.maximum(np.asarray(norm_lengths, dtype=float), 1.0)
    return int(np.argmax(lls)), int(np.argmax(lls / lengths))


def template_request(tokenizer: Any, template: str, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids (prompt, response) of one choice exactly as fine-tuning encodes an example of a cloze task
    (`data.sft.encode_example`): question = the choice's context, response = its continuation without the
    leading space, followed by EOS."""
    from plasticity.data.sft import encode_example

    ex = encode_example(tokenizer, template, context, continuation.lstrip(" "))
    n_prompt = sum(1 for label in ex.labels if label == -100)
    return ex.input_ids[:n_prompt], ex.input_ids[n_prompt:]


def cloze_accuracy(
    model: Any,
    tokenizer: Any,
    items: Sequence[ClozeItem],
    batch_size: int = 16,
    add_special_tokens: bool = False,
    template: str | None = None,
    shard: Shard = ONE,
) -> dict[str, Any]:
    """acc / acc_norm over `items`, scoring all their requests in shared batches.

    Without `template`, each choice is scored as lm-evaluation-harness scores it (the raw prompt). With a
    fine-tuning `template` (``...{question}...{response}``), each choice is scored in the format the model was
    fine-tuned on (`template_request`): the log-likelihood of the choice as the whole response, EOS included,
    as lm-eval's ``--apply_chat_template`` wraps contexts in a chat format.

    Returns {"acc", "acc_norm", "n", "per_item"}; each per-item entry holds "logprobs", "pred",
    "pred_norm", "correct", "correct_norm". acc/acc_norm are None when there are no items.
    """
    flat: list[tuple[str, str]] = []
    spans = []
    for item in items:
        reqs = item.requests()
        spans.append((len(flat), len(flat) + len(reqs)))
        flat.extend(reqs)
    if template is None:
        scores = score_requests(model, tokenizer, flat, batch_size=batch_size, add_special_tokens=add_special_tokens,
                                shard=shard)
    else:
        encoded = [template_request(tokenizer, template, c, x) for c, x in flat]
        scores = score_token_requests(model, encoded, batch_size=batch_size, pad_id=padding_id(tokenizer), shard=shard)
    per_item = []
    for item, (a, b) in zip(items, spans, strict=True):
        lls = scores[a:b]
        pred, pred_norm = choose(lls, item.norm_lengths())
        per_item.append(
            {
                "logprobs": lls,
                "pred": pred,
                "pred_norm": pred_norm,
                "correct": pred == item.gold,
                "correct_norm": pred_norm == item.gold,
            }
        )
    n = len(per_item)
    return {
        "acc": float(np.mean([p["correct"] for p in per_item])) if n else None,
        "acc_norm": float(np.mean([p["correct_norm"] for p in per_item])) if n else None,
        "n": n,
        "per_item": per_item,
    }
