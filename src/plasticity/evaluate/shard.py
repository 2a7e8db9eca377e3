"""Evaluation across processes: which batches this process computes, and the gather that gives every process
the whole result.

Every batched computation of an evaluation (prefill + decode in `sampler.generate`, log-likelihoods in
`cloze.score_token_requests`, held-out losses in `heldout.example_losses`, reward-model scores in
`reward.HFRewardModel.score`) forms its batches exactly as one process does and computes only the batches this
process owns (round robin over the batch index: batches are length-sorted, so every rank gets long and short
ones). The per-item results are then gathered onto every rank. Every number therefore comes from the very batch
(same rows, same padding, same shapes) that computes it in one process, so the files a multi-process evaluation
writes are byte-identical to a single-process one; samples are seeded per (seed, question, sample index), never
per rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's share: batch ``b`` is computed by rank ``b % world``."""

    rank: int = 0
    world: int = 1

    def owns(self, batch_index: int) -> bool:
        return batch_index % self.world == self.rank

    def merge(self, values: list[T | None]) -> list[T | None]:
        """Every rank's `values` (None where another rank computed the item) merged into the full list, on every
        rank (a collective: every rank must call it, with lists of one length)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, values)
        return [next((p[i] for p in parts if p[i] is not None), None) for i in range(len(values))]


ONE = Shard()


def join() -> tuple[Shard, torch.device | None]:
    """(this process's share, its device) under torchrun: joins the process group (NCCL on GPUs, one GPU per
    local rank; gloo on CPU). Without ``WORLD_SIZE`` > 1: (`ONE`, None), nothing joined."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ONE, None
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30),
                                device_id=device if device.type == "cuda" else None)
    return Shard(rank, world), device


def leave(shard: Shard) -> None:
    """Leave the process group `join` joined once every rank is done (no-op for one process): a barrier first,
    so that no rank tears the group down while a peer is still in a collective (gloo aborts that peer)."""
    if shard.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
