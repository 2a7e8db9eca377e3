"""Train-val and unseen-seen loss gaps."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from plasticity.analysis.gap import mean_loss, train_val_gap, unseen_seen_gap


def _seqs(n: int, t: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 300, (n, t), generator=torch.Generator().manual_seed(seed))


def test_mean_loss_matches_manual_and_hf(tiny_model):
    seqs = _seqs(5, 9, 0)
    with torch.no_grad():
        logits = tiny_model(input_ids=seqs).logits
        manual = F.cross_entropy(logits[:, :-1].reshape(-1, 300), seqs[:, 1:].reshape(-1)).item()
        hf = tiny_model(input_ids=seqs, labels=seqs).loss.item()
    loss = mean_loss(tiny_model, seqs, batch_size=2)
    assert loss == pytest.approx(manual, rel=1e-5)
    assert loss == pytest.approx(hf, rel=1e-5)
    assert loss == pytest.approx(mean_loss(tiny_model, seqs, batch_size=5), rel=1e-6)


def test_gap_zero_on_identical_sets(tiny_model):
    seqs = _seqs(4, 8, 1)
    res = train_val_gap(tiny_model, seqs, seqs.clone(), batch_size=3)
    assert res["gap"] == 0.0 and res["train_loss"] == res["val_loss"]
    assert res["n_sequences"] == 4 and res["seq_len"] == 8 and res["n_tokens"] == 28
    json.dumps(res, allow_nan=False)


def test_gap_sign_and_labels(llama):
    train, val = _seqs(3, 8, 2), _seqs(3, 8, 3)
    res = train_val_gap(llama, train, val)
    assert res["gap"] == pytest.approx(res["val_loss"] - res["train_loss"])
    assert math.isfinite(res["gap"]) and res["train_loss"] > 0
    us = unseen_seen_gap(llama, train, val)
    assert set(us) == {"seen_loss", "unseen_loss", "gap", "n_sequences", "seq_len", "n_tokens"}
    assert us["seen_loss"] == pytest.approx(res["train_loss"]) and us["gap"] == pytest.approx(res["gap"])


def test_shape_checks_and_mode(llama):
    llama.train()
    with pytest.raises(ValueError):
        train_val_gap(llama, _seqs(3, 8, 0), _seqs(2, 8, 1))
    with pytest.raises(ValueError):
        unseen_seen_gap(llama, _seqs(3, 8, 0), _seqs(3, 7, 1))
    res = train_val_gap(llama, _seqs(3, 8, 0), _seqs(2, 6, 1), require_same_shape=False)
    assert math.isfinite(res["gap"])
    with pytest.raises(ValueError):
        mean_loss(llama, _seqs(3, 1, 0))
    assert llama.training
