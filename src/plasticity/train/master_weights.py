"""bf16 compute weights over fp32 master weights (`train.master_weights`).

Autocast keeps the weights in fp32 and casts at every matmul, so the residual stream, the norms and every
elementwise op between the matmuls run in fp32 and each linear's input is cast to bf16 again (on an H200 a third
of the eager llama2-0.5b step went to these copies and casts, BENCHMARKS.md). With master weights the model's own
parameters stay fp32 (the optimizer, gradient clipping, checkpoints and resume see exactly what they saw before),
and each step runs on a bf16 copy of them:

1. `refresh()`: one fused copy fp32 -> bf16 of every parameter, at the start of the step;
2. the forward and backward run through `torch.func.functional_call` on the copy: activations are bf16 end to end
   (the loss upcasts the logits to fp32; RMSNorm computes its statistics in fp32 as always);
3. `collect_grads()` after each micro-batch's backward adds the bf16 gradients into the fp32 `.grad` of the
   parameters, so gradient accumulation over micro-batches sums in fp32.

This is FSDP2's `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)` for one process; under FSDP2 the loop
uses that policy itself (`distributed.wrap_model`). Not with DDP (its gradient hooks belong to the module's own
parameters) nor with activation checkpointing in one process (the recomputation would run on the fp32 weights).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call

from plasticity.errors import ConfigError


def resolve_master_weights(setting: bool | str, device: torch.device, precision: str, parallel: str,
                           activation_checkpointing: bool) -> tuple[bool, str]:
    """Whether the loop trains on bf16 copies of fp32 master weights, and why. `auto`: on for bf16 on CUDA
    (single process or FSDP2), off on CPUs (measured no faster than autocast there, BENCHMARKS.md)."""
    if precision != "bf16":
        if setting is True:
            raise ConfigError("train.master_weights", f"true needs bf16 precision (this run is {precision})")
        return False, f"off: precision {precision}"
    single_ckpt = parallel == "none" and activation_checkpointing
    if setting is True:
        if parallel == "ddp":
            raise ConfigError("train.master_weights", "true does not work with DDP (use train.parallel: fsdp, "
                              "or master_weights: false)")
        if single_ckpt:
            raise ConfigError("train.master_weights", "true does not work with train.activation_checkpointing "
                              "in one process (the recomputation would use the fp32 weights); use FSDP2 or turn "
                              "one of them off")
        return True, "train.master_weights=true"
    if setting is False:
        return False, "train.master_weights=false"
    if device.type != "cuda":
        return False, f"auto: off on {device.type}"
    if parallel == "ddp" or single_ckpt:
        return False, "auto: off with " + ("DDP" if parallel == "ddp" else "activation checkpointing")
    return True, "auto: on for bf16 on CUDA"


def check_master_weights(train: Any, device: torch.device, precision: str,
                         model: torch.nn.Module | None = None) -> tuple[bool, str] | None:
    """`train.master_weights` resolved for this run, (on, why), before the run directory is touched (an
    impossible setting: ConfigError). `train.parallel: auto` under torchrun depends on the model's size: without
    `model` that case is left for a second call (None)."""
    from plasticity.train.distributed import Dist, resolve_strategy, world_size_from_env

    world = world_size_from_env()
    if world > 1 and train.parallel == "auto" and model is None:
        return None
    n_params = sum(p.numel() for p in model.parameters()) if model is not None else 0
    strategy = resolve_strategy(train.parallel, Dist(world_size=world), n_params, torch.device(device))
    return resolve_master_weights(train.master_weights, torch.device(device), precision, strategy,
                                  train.activation_checkpointing)


class Bf16Weights:
    """A bf16 copy of `model`'s parameters that the step runs on; the fp32 parameters are the master copy.
    Call it like the model (`weights(input_ids=..., attention_mask=...)`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        named = list(model.named_parameters())  # a tied weight once, under its first name
        self._names = [n for n, _ in named]
        self.masters = [p for _, p in named]
        self.copies = [torch.empty_like(p, dtype=torch.bfloat16).requires_grad_(p.requires_grad)
                       for p in self.masters]
        self.params = dict(zip(self._names, self.copies, strict=True))
        self._by_id = {id(p): c for p, c in zip(self.masters, self.copies, strict=True)}

    def refresh(self) -> None:
        """Copy the master weights into the bf16 copies (after the optimizer step, before the next forward)."""
        with torch.no_grad():
            torch._foreach_copy_(self.copies, self.masters)
        for c in self.copies:
            c.grad = None

    def copy_of(self, param: torch.Tensor) -> torch.Tensor:
        """The bf16 copy of one of the model's parameters (e.g. the output projection's weight)."""
        return self._by_id[id(param)]

    def submodule(self, module: torch.nn.Module) -> Any:
        """`module` (a submodule of the model, e.g. the decoder body) as a callable on the bf16 copies."""
        prefix = next(n for n, m in self.model.named_modules() if m is module)
        prefix = prefix + "." if prefix else ""
        params = {n[len(prefix):]: c for n, c in self.params.items() if n.startswith(prefix)}

        def call(*args: Any, **kwargs: Any) -> Any:
            return functional_call(module, params, args, kwargs, strict=False)

        return call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.model, self.params, args, kwargs, strict=False)

    def collect_grads(self) -> None:
        """Add the bf16 gradients of the last backward into the fp32 `.grad` of the masters (fp32 accumulation
        over micro-batches) and free them."""
        for m, c in zip(self.masters, self.copies, strict=True):
            if c.grad is None:
                continue
            if m.grad is None:
                m.grad = c.grad.float()
            else:
                m.grad.add_(c.grad)
            c.grad = None
