"""Fused output projection + cross-entropy that never materialises the logits of the whole batch.

``linear_cross_entropy(h, W, targets, scale)`` equals
``F.cross_entropy((h @ W.T).float(), targets, ignore_index=-100, reduction="sum") * scale`` and its gradients, but
runs over row chunks: each chunk's logits are computed, turned into the loss and into the gradients of `h` and `W`
(softmax minus one-hot) in the forward pass, then freed. The backward pass only scales the stored gradients.
At small width the vocabulary projection and its [tokens, vocab] float tensors dominate the step (the plain path
writes logits, a shifted copy, log-softmax and its gradient: four passes over [tokens, vocab] fp32 memory); here
each chunk stays cache-sized. Matmuls run in the dtype of `h` (bf16 under autocast), softmax and the loss in fp32.
"""

from __future__ import annotations

import torch

IGNORE = -100


def _chunk_rows(n: int, vocab: int, budget: int = 1 << 20) -> int:
    """Rows per chunk so that one chunk's fp32 logits hold about `budget` elements (4 MiB), at least 64."""
    return max(64, min(n, budget // max(vocab, 1)))


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float,
                chunk: int, dtype: torch.dtype) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):
            return _LinearCE._run(ctx, h, weight, targets, scale, chunk, dtype)

    @staticmethod
    def _run(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float, chunk: int,
             dtype: torch.dtype) -> torch.Tensor:
        in_dtype, acc = h.dtype, torch.promote_types(dtype, torch.float32)
        h, w = h.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        loss = torch.zeros((), dtype=acc, device=h.device)
        for start in range(0, h.shape[0], chunk):
            hc, tc = h[start:start + chunk], targets[start:start + chunk]
            logits = (hc @ w.T).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            valid = tc != IGNORE
            safe = torch.where(valid, tc, 0)
            target_logit = logits.gather(1, safe[:, None]).squeeze(1)
            loss += torch.where(valid, lse - target_logit, 0.0).sum()
            # d loss / d logits = scale * (softmax - onehot) on valid rows, 0 on ignored rows
            g = logits.sub_(lse[:, None]).exp_()
            g.scatter_add_(1, safe[:, None], torch.full_like(target_logit, -1.0)[:, None])
            g.mul_((valid.to(g.dtype) * scale)[:, None])
            gc = g.to(h.dtype)
            torch.matmul(gc, w, out=grad_h[start:start + chunk])
            if dtype == acc:
                grad_w.addmm_(gc.T, hc)
            else:
                grad_w += (gc.T @ hc).to(acc)
        ctx.save_for_backward(grad_h.to(in_dtype), grad_w.to(weight.dtype))
        return loss * scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out.to(grad_h.dtype), grad_w * grad_out.to(grad_w.dtype), None, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float = 1.0,
                         chunk: int | None = None) -> torch.Tensor:
    """Sum over rows of CE(h @ weight.T, targets) (rows with target -100 ignored), times `scale`.
    `h` is [N, d], `weight` [V, d], `targets` [N]. Under autocast the matmuls run in the autocast dtype."""
    dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
    h = h.contiguous()
    return _LinearCE.apply(h, weight, targets.contiguous(), float(scale),
                           chunk or _chunk_rows(h.shape[0], weight.shape[0]), dtype)
