"""Sizing a study's GPU nodes before anything starts: devices, memory per device and time of every pretraining,
fine-tuning and evaluation node, from the model shape and the node's resources (`plasticity.train.memory`).

A node that asks for GPUs (``resources.*_gpus``) is checked against ``resources.gpu_memory_gb`` per GPU (the
devices it will run on, which need not be this machine's); a node that cannot fit is refused in one line naming
the resource and what would fit. Times divide the node's FLOPs estimate (the plan's; x 4/3 with activation
checkpointing, which recomputes the forward) by ``resources.gpu_tflops`` sustained per GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticity.errors import ConfigError
from plasticity.study.plan import Node, Plan
from plasticity.study.scheduler import duration
from plasticity.train import memory as mem

USABLE = 0.9  # of a GPU's memory: the rest goes to the CUDA context, library workspaces and allocator fragmentation
EVAL_PROMPT_TOKENS = 512  # prompt length the sampling estimate assumes (the paper's eval prompts are shorter)
FSDP_AUTO_PARAMS = 2_000_000_000  # as plasticity.train.distributed: `auto` shards models above this on GPUs


@dataclass
class NodeSize:
    devices: int  # GPUs (0: a CPU node)
    processes: int
    strategy: str  # none / ddp / fsdp (training), split (evaluation)
    estimate: mem.Estimate | None  # per device
    seconds: float | None  # GPU nodes only
    shape: mem.Shape | None = None

    def fits(self, capacity: int) -> bool:
        return self.estimate is None or self.estimate.total <= capacity


def size_plan(plan: Plan) -> dict[str, NodeSize]:
    """{node id: size} of every pretraining, fine-tuning and evaluation node whose model shape is known."""
    res = plan.spec.resources
    shapes: dict[str, mem.Shape | None] = {}
    out: dict[str, NodeSize] = {}
    for nid, node in plan.nodes.items():
        if node.kind not in ("pretrain", "finetune", "evaluate"):
            continue
        shape = _shape(plan, _model_of(plan, node), shapes)
        if shape is None:
            continue
        out[nid] = _size(node, shape, res)
    return out


def _model_of(plan: Plan, node: Node) -> Node:
    """The pretraining or checkpoint node whose model `node` trains or evaluates."""
    while node.kind in ("finetune", "evaluate"):
        node = plan.nodes[node.deps[0]]
    return node


def _shape(plan: Plan, model: Node, cache: dict[str, mem.Shape | None]) -> mem.Shape | None:
    if model.id in cache:
        return cache[model.id]
    shape = None
    if model.kind == "pretrain":
        from plasticity.config import PretrainConfig, from_dict
        from plasticity.models import resolve_shape

        pcfg = from_dict(PretrainConfig, model.config)
        vocab = pcfg.model.vocab_size or (pcfg.tokenizer.vocab_size if pcfg.tokenizer.name == "bpe" else 32000)
        shape = mem.shape_of(resolve_shape(pcfg.model, vocab))
    else:  # an existing model: its config.json when it is local (a Hub model's is read when it runs)
        root = Path(str(model.config.get("path", "")))
        for conf in (root / "config.json", root / "final" / "config.json"):
            try:
                shape = mem.shape_of_hf_config(json.loads(conf.read_text()))
                break
            except (OSError, ValueError, KeyError, TypeError):
                continue
    cache[model.id] = shape
    return shape


def _strategy(parallel: str, processes: int, gpus: int, params: int) -> str:
    if processes <= 1:
        return "none"
    if parallel == "auto":
        return "fsdp" if gpus and params > FSDP_AUTO_PARAMS else "ddp"
    return parallel


def _size(node: Node, shape: mem.Shape, res: Any) -> NodeSize:
    from plasticity.config import EvaluateConfig, FinetuneConfig, PretrainConfig, from_dict

    n = max(1, node.nproc)
    precision = "fp32"
    if node.kind == "evaluate":
        ev = from_dict(EvaluateConfig, node.config["evaluate"])
        est = mem.sampling_estimate(shape, ev.batch_size, EVAL_PROMPT_TOKENS, ev.max_new_tokens)
        strategy, factor = ("split" if n > 1 else "none"), 1.0
    else:
        if node.kind == "pretrain":
            cfg = from_dict(PretrainConfig, node.config)
            seq = cfg.data.seq_len
        else:
            cfg = from_dict(FinetuneConfig, dict(node.config["finetune"], init_from="-", out_dir="-"))
            seq = cfg.cutoff_len
        t = cfg.train
        precision = "bf16" if (t.precision == "auto" and node.gpus) or t.precision == "bf16" else "fp32"
        strategy = _strategy(t.parallel, n, node.gpus, shape.params)
        est = mem.estimate(shape, t.micro_batch_size, seq, precision, world=n, strategy=strategy,
                           activation_checkpointing=t.activation_checkpointing)
        factor = 4 / 3 if t.activation_checkpointing else 1.0
    seconds = None
    if node.gpus and node.est_flops:
        seconds = node.est_flops * factor / (max(node.gpus, 1) * res.gpu_tflops * 1e12)
    return NodeSize(devices=node.gpus, processes=n, strategy=strategy, estimate=est, seconds=seconds, shape=shape)


def capacity(res: Any) -> int:
    """Bytes a node may plan for on one GPU: `USABLE` of ``resources.gpu_memory_gb``."""
    return int(USABLE * res.gpu_memory_gb * 1e9)


def check_fits(plan: Plan, sizes: dict[str, NodeSize]) -> None:
    """Refuse (one line, ConfigError) the first GPU node whose per-device estimate exceeds the GPUs' memory."""
    res = plan.spec.resources
    cap = capacity(res)
    for nid, size in sizes.items():
        if not size.devices or size.fits(cap):
            continue
        node = plan.nodes[nid]
        key = f"resources.{node.kind}_gpus"
        est = size.estimate
        assert est is not None
        hint = _hint(node, size, cap)
        raise ConfigError(key, f"{node.kind} node {nid} [{node.label}] needs ~{mem.human(est.total)} per GPU "
                          f"({est.parts()}) on {size.devices} GPU(s) of {res.gpu_memory_gb:g} GB "
                          f"(resources.gpu_memory_gb; {USABLE:.0%} usable: {mem.human(cap)}){hint}")


def _hint(node: Node, size: NodeSize, cap: int) -> str:
    """What would fit: more GPUs under FSDP2 when the sharded state is the problem, else checkpointing."""
    if node.kind == "evaluate":
        return "; lower evaluate.batch_size or evaluate.max_new_tokens"
    est, shape = size.estimate, size.shape
    assert est is not None and shape is not None
    rest = est.activations + est.logits + 2 * 8 * mem.layer_params(shape)
    checkpointing = "" if node.kind == "evaluate" or est.activations < est.state else \
        "set train.activation_checkpointing: true, "
    if rest >= cap:
        return "; set train.activation_checkpointing: true or lower train.micro_batch_size"
    n = max(2, -(-16 * est.params // (cap - rest)))
    return f"; {checkpointing}use resources.{node.kind}_gpus: {n} or more (FSDP2), or lower train.micro_batch_size"


def describe(size: NodeSize) -> tuple[str, str, str]:
    """(devices, memory per device, time) cells of a dry-run table row."""
    dev = f"{size.devices} GPU" if size.devices else f"{size.processes} CPU proc"
    if size.processes > 1:
        dev += f" ({size.strategy})"
    mem_cell = mem.human(size.estimate.total) if size.estimate is not None else "-"
    return dev, mem_cell, duration(size.seconds) if size.seconds is not None else "-"


