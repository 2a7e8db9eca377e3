"""Held-out fine-tuning loss: the SFT loss (mean negative log-likelihood per response token, prompt masked, as
the fine-tuning loop computes it) on a task's evaluation examples, which fine-tuning never saw.

A continuous companion to accuracy: it moves before greedy answers flip, so it separates models whose
accuracies sit within noise of each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from plasticity.data.sft import encode_example
from plasticity.evaluate.shard import ONE, Shard
from plasticity.models import model_device
from plasticity.tokenizer import padding_id


@torch.no_grad()
def example_losses(model, tok, template: str, pairs: Sequence[tuple[str, str]], batch_size: int = 16,
                   cutoff_len: int | None = None, shard: Shard = ONE) -> list[float]:
    """Per example, the mean NLL (nats) of its response tokens (and the closing EOS) given the rendered prompt.

    Examples are encoded exactly as fine-tuning encodes them (`encode_example`). ``cutoff_len`` truncates an
    over-long example to its first ``cutoff_len`` tokens, which differs from fine-tuning: that *drops* such
    examples (`plasticity.data.sft.encode_all`), whereas every evaluation example is scored here: one cut before
    its response ends on the response tokens that fit, one cut before its response begins is NaN. Examples are
    batched by length, right-padded. `shard` (several processes): this process computes its share of the
    batches; every process gets all losses.
    """
    encoded = [encode_example(tok, template, q, r) for q, r in pairs]
    if cutoff_len is not None:
        for ex in encoded:
            del ex.input_ids[cutoff_len:], ex.labels[cutoff_len:]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    device = model_device(model)
    pad = padding_id(tok)
    out: list[float | None] = [float("nan")] * len(encoded)
    for start in range(0, len(order), max(1, batch_size)):
        idx = order[start:start + batch_size]
        if not shard.owns(start // max(1, batch_size)):
            for i in idx:
                out[i] = None  # another rank's
            continue
        width = max(len(encoded[i].input_ids) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        labels = torch.full((len(idx), width), -100, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(encoded[i].input_ids)
            ids[row, :n] = torch.tensor(encoded[i].input_ids)
            labels[row, :n] = torch.tensor(encoded[i].labels)
            mask[row, :n] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        target = labels[:, 1:].to(device)
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100, reduction="none")
        counts = (target != -100).sum(dim=1)
        per = (nll.sum(dim=1) / counts.clamp(min=1)).tolist()
        for row, i in enumerate(idx):
            out[i] = per[row] if int(counts[row]) > 0 else float("nan")
    return shard.merge(out)
