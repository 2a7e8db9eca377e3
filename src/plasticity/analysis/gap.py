"""Train-val gap (paper Section 5.3, eq. 3): ``Validation Loss - Training Loss`` of the *final* model.

``mean_loss`` is the mean next-token cross-entropy (nats) over every predicted position of fixed-length
sequences: each ``[T]`` sequence contributes ``T - 1`` predictions (token ``t+1`` from tokens ``<= t``), no
padding, no masking. The mean is over all ``n * (T - 1)`` tokens (accumulated in float64), so equal-shape
inputs make train and validation losses directly comparable. A positive gap means lower loss on seen
(training) data.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _token_stats(model: nn.Module, sequences: torch.Tensor, batch_size: int) -> tuple[float, int]:
    """Sum of token cross-entropies (float64) and number of predicted tokens."""
    if sequences.ndim != 2 or sequences.shape[1] < 2:
        raise ValueError(
            f"sequences must be a [n, T] LongTensor with T >= 2, got shape {tuple(sequences.shape)}"
        )
    if sequences.shape[0] == 0:
        raise ValueError("no sequences")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, sequences.shape[0], batch_size):
                ids = sequences[start : start + batch_size].to(device=device, dtype=torch.long)
                logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
                targets = ids[:, 1:]
                ce = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none"
                )
                total += float(ce.double().sum())
                count += targets.numel()
    finally:
        model.train(was_training)
    return total, count


def mean_loss(model: nn.Module, sequences: torch.Tensor, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats) over all ``n * (T - 1)`` predicted tokens of ``sequences``."""
    total, count = _token_stats(model, sequences, batch_size)
    loss = total / count
    if not math.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss}")
    return loss


def _check_shapes(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], require_same_shape: bool) -> None:
    if require_same_shape and tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same number and "
            "length of sequences (pass require_same_shape=False to allow otherwise)"
        )


def train_val_gap(
    model: nn.Module,
    train_seqs: torch.Tensor,
    val_seqs: torch.Tensor,
    batch_size: int = 8,
    *,
    require_same_shape: bool = True,
) -> dict[str, Any]:
    """Eq. 3 (``gap = val_loss - train_loss``).

    Returns ``{"train_loss", "val_loss", "gap", "n_sequences", "seq_len", "n_tokens"}``; the last three
    describe each of the two sets (equal shapes are required by default; with ``require_same_shape=False``
    they describe the training set).
    """
    _check_shapes(train_seqs, val_seqs, ("train_seqs", "val_seqs"), require_same_shape)
    tr = mean_loss(model, train_seqs, batch_size)
    va = mean_loss(model, val_seqs, batch_size)
    return {
        "train_loss": tr,
        "val_loss": va,
        "gap": va - tr,
        "n_sequences": int(train_seqs.shape[0]),
        "seq_len": int(train_seqs.shape[1]),
        "n_tokens": int(train_seqs.shape[0] * (train_seqs.shape[1] - 1)),
    }


def unseen_seen_gap(
    model: nn.Module,
    seen_seqs: torch.Tensor,
    unseen_seqs: torch.Tensor,
    batch_size: int = 8,
    *,
    require_same_shape: bool = True,
) -> dict[str, Any]:
    """Same as :func:`train_val_gap` for seen vs unseen data.

    Returns ``{"seen_loss", "unseen_loss", "gap": unseen_loss - seen_loss, "n_sequences", "seq_len",
    "n_tokens"}``.
    """
    _check_shapes(seen_seqs, unseen_seqs, ("seen_seqs", "unseen_seqs"), require_same_shape)
    seen = mean_loss(model, seen_seqs, batch_size)
    unseen = mean_loss(model, unseen_seqs, batch_size)
    return {
        "seen_loss": seen,
        "unseen_loss": unseen,
        "gap": unseen - seen,
        "n_sequences": int(seen_seqs.shape[0]),
        "seq_len": int(seen_seqs.shape[1]),
        "n_tokens": int(seen_seqs.shape[0] * (seen_seqs.shape[1] - 1)),
    }
