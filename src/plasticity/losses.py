"""Next-token losses over fixed-length token sequences, shared by pretraining validation, the stability
measurement and the gap analysis: each ``[T]`` sequence contributes ``T - 1`` predictions (token ``t+1`` from
tokens ``<= t``), no padding, no masking, accumulated in float64."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plasticity.hardware import autocast


def token_loss_sum(model: nn.Module, sequences: torch.Tensor, batch_size: int, precision: str = "fp32"
                   ) -> tuple[float, int]:
    """Sum of token cross-entropies (float64) and number of predicted tokens; ``precision="bf16"`` runs the
    forward under bf16 autocast (as the training loop's validation does)."""
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
                with autocast(device, precision):
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


def mean_token_loss(model: nn.Module, sequences: torch.Tensor, batch_size: int, precision: str = "fp32") -> float:
    """Mean next-token cross-entropy (nats/token) over all ``n * (T - 1)`` predicted tokens (never raises on a
    non-finite value, so a diverging run still records it)."""
    total, count = token_loss_sum(model, sequences, batch_size, precision)
    return total / max(count, 1)
