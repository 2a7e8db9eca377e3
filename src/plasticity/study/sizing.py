"""Sizing a study's GPU nodes before anything starts: devices, memory per device and time of every pretraining,
fine-tuning and evaluation node, from the model shape and the node's resources (`plasticity.train.memory`).

A node that asks for GPUs (``resources.*_gpus``) is checked against ``resources.gpu_memory_gb`` per GPU (the
devices it will run on, which need not be this machine's); a node that cannot fit is refused in one line naming
the resource and what would fit. Times divide the node's FLOPs estimate (the plan's; x 4/3 with activation
checkpointing, which recomputes the forward) by ``resources.gpu_tflops`` sustained per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plasticity.errors import ConfigError
from plasticity.study.plan import Node, Plan
from plasticity.study.scheduler import duration
from plasticity.study.stages import STAGES
from plasticity.train import memory as mem

USABLE = 0.9  # of a GPU's memory: the rest goes to the CUDA context, library workspaces and allocator fragmentation


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
    """{node id: size} of every node its stage sizes (`Stage.size`: training and evaluation) whose model shape
    is known (`Stage.model_shape` of the node that provides the model)."""
    res = plan.spec.resources
    shapes: dict[str, mem.Shape | None] = {}
    out: dict[str, NodeSize] = {}
    for nid, node in plan.nodes.items():
        model = _model_of(plan, node)
        if model is None:
            continue
        if model.id not in shapes:
            shapes[model.id] = STAGES[model.kind].model_shape(model)
        shape = shapes[model.id]
        sized = STAGES[node.kind].size(node, shape) if shape is not None else None
        if sized is None:
            continue
        est, strategy, factor = sized
        seconds = None
        if node.gpus and node.est_flops:
            seconds = node.est_flops * factor / (max(node.gpus, 1) * res.gpu_tflops * 1e12)
        out[nid] = NodeSize(devices=node.gpus, processes=max(1, node.nproc), strategy=strategy, estimate=est,
                            seconds=seconds, shape=shape)
    return out


def _model_of(plan: Plan, node: Node) -> Node | None:
    """The node that provides the model `node` trains, evaluates or analyses (itself for a pretraining run;
    None for the nodes before a model: tokenizer, data)."""
    while STAGES[node.kind].provides != "model":
        if not node.deps:
            return None
        node = plan.nodes[node.deps[0]]
    return node


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
    """What would fit: the stage's own hint (evaluation), else more GPUs under FSDP2 when the sharded state is the
    problem, else checkpointing."""
    if STAGES[node.kind].sizing_hint:
        return f"; {STAGES[node.kind].sizing_hint}"
    est, shape = size.estimate, size.shape
    assert est is not None and shape is not None
    rest = est.activations + est.logits + 2 * 8 * mem.layer_params(shape)
    checkpointing = "" if est.activations < est.state else "set train.activation_checkpointing: true, "
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


