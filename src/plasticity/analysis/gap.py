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
from torch import nn

from plasticity.losses import mean_token_loss


def mean_loss(model: nn.Module, sequences: torch.Tensor, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats) over all ``n * (T - 1)`` predicted tokens of ``sequences``; raises
    on a non-finite value."""
    loss = mean_token_loss(model, sequences, batch_size)
    if not math.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss}")
    return loss


def _check_shapes(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], require_same_shape: bool) -> None:
    if require_same_shape and tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same number and "
            "length of sequences (pass require_same_shape=False to allow otherwise)"
        )


def _gap(model: nn.Module, ref: torch.Tensor, other: torch.Tensor, batch_size: int, names: tuple[str, str],
         require_same_shape: bool) -> dict[str, Any]:
    """``{"<names[0]>_loss", "<names[1]>_loss", "gap": other - ref, "n_sequences", "seq_len", "n_tokens"}``;
    the last three describe `ref`."""
    _check_shapes(ref, other, (f"{names[0]}_seqs", f"{names[1]}_seqs"), require_same_shape)
    ref_loss = mean_loss(model, ref, batch_size)
    other_loss = mean_loss(model, other, batch_size)
    return {
        f"{names[0]}_loss": ref_loss,
        f"{names[1]}_loss": other_loss,
        "gap": other_loss - ref_loss,
        "n_sequences": int(ref.shape[0]),
        "seq_len": int(ref.shape[1]),
        "n_tokens": int(ref.shape[0] * (ref.shape[1] - 1)),
    }


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
    return _gap(model, train_seqs, val_seqs, batch_size, ("train", "val"), require_same_shape)


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
    return _gap(model, seen_seqs, unseen_seqs, batch_size, ("seen", "unseen"), require_same_shape)
