"""AdamW with explicit, named parameter groups (OLMo-core style) and a coverage assertion."""

from __future__ import annotations

import torch

from plasticity.config import OptimizerConfig

POLICIES = ("all", "no_norm_bias", "no_embed", "no_norm_bias_embed")


def _is_norm_or_bias(name: str, p: torch.nn.Parameter) -> bool:
    return p.ndim < 2 or name.endswith(".bias") or "norm" in name.split(".")[-2]


def _is_embedding(name: str, model: torch.nn.Module) -> bool:
    emb = model.get_input_embeddings()
    return any(p is emb.weight for n, p in model.named_parameters() if n == name)


def param_groups(model: torch.nn.Module, weight_decay: float, policy: str) -> list[dict]:
    """Split parameters into named groups ``decay`` (weight_decay) and ``no_decay`` (0) under `policy`:
    ``all`` decays everything (the paper's Llama code); ``no_norm_bias`` exempts norms and biases;
    ``no_embed`` exempts the input embedding (OLMo-2); ``no_norm_bias_embed`` exempts all three."""
    if policy not in POLICIES:
        raise ValueError(f"unknown weight-decay policy {policy}")
    emb = model.get_input_embeddings().weight
    decay, no_decay = [], []
    decay_names, no_decay_names = [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        exempt = (policy in ("no_norm_bias", "no_norm_bias_embed") and _is_norm_or_bias(name, p)) or (
            policy in ("no_embed", "no_norm_bias_embed") and p is emb
        )
        (no_decay if exempt else decay).append(p)
        (no_decay_names if exempt else decay_names).append(name)
    groups = [
        {"name": "decay", "params": decay, "param_names": decay_names, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "param_names": no_decay_names, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    check_coverage(model, groups)
    return groups


def check_coverage(model: torch.nn.Module, groups: list[dict]) -> None:
    """Assert every trainable parameter is in exactly one group."""
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in more than one optimizer group"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable, f"{len(trainable - set(ids))} trainable parameters are in no optimizer group"


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig, policy: str,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over the named groups. `fused` None: torch's fused kernel on CUDA, torch's default elsewhere (on
    CPU the fused kernel measured no faster here, see BENCHMARKS.md, and the default keeps one-process and
    FSDP2 optimizer state alike); True / False force it on / off (benchmark ablations)."""
    groups = param_groups(model, cfg.weight_decay, policy)
    torch_groups = [{k: v for k, v in g.items() if k != "param_names"} for g in groups]
    if fused is None:
        fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(torch_groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


def describe_groups(model: torch.nn.Module, cfg: OptimizerConfig, policy: str) -> list[dict]:
    """Loggable summary: name, weight decay, tensor and element counts, example parameter names."""
    out = []
    for g in param_groups(model, cfg.weight_decay, policy):
        out.append(dict(name=g["name"], weight_decay=g["weight_decay"], tensors=len(g["params"]),
                        numel=sum(p.numel() for p in g["params"]), examples=g["param_names"][:4]))
    return out
