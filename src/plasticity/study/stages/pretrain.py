"""The pretraining stage: one `plasticity pretrain` run (in-process, or torchrun for DDP/FSDP)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from plasticity.checkpoints import RunDir
from plasticity.config import PretrainConfig, deep_merge, from_dict, to_dict, train_identity
from plasticity.errors import ConfigError
from plasticity.study.stages.base import (
    GridPoint,
    Node,
    RunContext,
    Stage,
    StudySpec,
    Upstream,
    completed_run,
    grid_points,
    run_summary,
    runs_dir,
    torchrun,
    training_size,
)
from plasticity.study.stages.finetune import start_fractions

# how fast / how much memory / whether to refuse / where numbers are mirrored, not what is computed
# (master_weights: like `precision: auto`, a numerics choice that follows the device)
NOT_IDENTITY = ("threads", "parallel", "master_weights", "allow_large_memory", "activation_checkpointing",
                "tracker")
DATA_NOT_IDENTITY = ("num_workers", "shard_mb")  # how the token cache is prepared, not its tokens


class PretrainStage(Stage):
    """Owns the ``pretrain.``-prefixed axes, ``seed`` (= ``train.seed``) and every key no other stage owns."""

    kind = "pretrain"
    config_type = PretrainConfig
    section = "base"
    consumes = "tokens"
    provides = "model"
    axis_prefix = "pretrain"
    axis_aliases = {"seed": "train.seed"}
    owns_unprefixed_axes = True
    sweep_name = "pretraining"
    trains = True

    def __init__(self) -> None:
        self._estimates: dict[str, tuple[Any, tuple[int, float]]] = {}  # node id -> (model, (tokens, FLOPs))

    def enabled(self, spec: StudySpec) -> bool:
        """Always without checkpoints; beside them only when asked for (a base or a pretraining axis)."""
        return not spec.checkpoints or spec.base is not None or bool(spec.axes_of(self.kind))

    def config_data(self, spec: StudySpec, over: dict[str, Any]) -> dict[str, Any]:
        data = deep_merge(to_dict(spec.base or PretrainConfig()), over)
        data.pop("out_dir", None)  # named by the node id
        return data

    def sweep_problem(self, spec: StudySpec) -> str | None:
        return None  # `base` defaults: any study may pretrain

    def check_memory(self, spec: StudySpec) -> None:
        """Every pretraining config of the grid (axis values one at a time) must fit this machine's memory;
        pretraining on GPUs (``resources.pretrain_gpus``) is sized per node by `plasticity.study.sizing`."""
        from plasticity.hardware import default_device, resolve_precision
        from plasticity.train.pretrain import early_memory_check

        if not self.enabled(spec) or spec.resources.pretrain_gpus:
            return
        device = default_device()
        checks: list[tuple[str, dict[str, Any]]] = [("base", {})]
        for axis, (key, values) in spec.axes_of(self.kind).items():
            checks += [(f"axes.{axis}", {key: v}) for v in values]
        for where, values in checks:
            cfg = self.config(spec, values)
            try:
                early_memory_check(cfg, device, resolve_precision(cfg.train.precision, device), lambda m: None)
            except ConfigError as e:
                value = f"{next(iter(values.values()))!r}: " if values else ""
                raise ConfigError(where, f"{value}{e.key}: {e.problem}") from None

    def rows(self, spec: StudySpec, grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Every point of the grid, when the study pretrains."""
        if not self.enabled(spec):
            return []
        return grid_points(grid)

    def identity(self, pcfg: PretrainConfig) -> dict[str, Any]:
        d = to_dict(pcfg)
        d.pop("out_dir")
        ident = json.loads(json.dumps(d))
        ident["train"] = train_identity(ident["train"], NOT_IDENTITY)
        for how in DATA_NOT_IDENTITY:
            ident["data"].pop(how, None)
        return ident

    def build(self, spec: StudySpec, point: GridPoint, upstream: Upstream) -> Node:
        """The run keeps a snapshot at every fraction fine-tuning starts from (``finetune_from`` < 1)."""
        pcfg = point.config(self.kind)
        fracs = start_fractions(point.grid)
        if fracs:
            pcfg = dataclasses.replace(pcfg, train=dataclasses.replace(
                pcfg.train, checkpoint_fractions=sorted(set(pcfg.train.checkpoint_fractions) | set(fracs))))
        p_id = self.node_id(self.identity(pcfg))
        out = str(runs_dir(spec) / p_id)
        d = to_dict(pcfg)
        d.pop("out_dir")
        label = point.label({self.kind})
        gpus, nproc = spec.resources.of(self.kind)
        node = Node(id=p_id, kind=self.kind, deps=[upstream[self.consumes].id], out=out, config=dict(d, out_dir=out),
                    label=label, gpus=gpus, nproc=nproc)
        if p_id not in self._estimates:
            self._estimates[p_id] = pretrain_estimate(pcfg)
        node.est_tokens, node.est_flops = self._estimates[p_id][1]
        _check_fractions(fracs, pcfg, node.est_tokens, label)
        return node

    def extend(self, upstream: Upstream, node: Node) -> Upstream:
        return upstream.add(self.provides, node, model_dir=node.out, shape=self._estimates[node.id][0])

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        cfg = from_dict(PretrainConfig, node.config)  # validated once, when the plan built it
        resume = RunDir(cfg.out_dir).config_path.exists()
        if node.nproc > 1:
            return run_summary(_torchrun(node, resume, ctx), cfg.out_dir, "final_val_loss")
        from plasticity.train.pretrain import run_pretrain

        return run_summary(run_pretrain(cfg, resume=resume, log=ctx.log), cfg.out_dir, "final_val_loss")

    def outputs_present(self, node: Node, out: Path) -> bool:
        return completed_run(out)

    def model_shape(self, node: Node) -> Any | None:
        from plasticity.models import resolve_shape
        from plasticity.train import memory as mem

        pcfg = from_dict(PretrainConfig, node.config)
        vocab = pcfg.model.vocab_size or (pcfg.tokenizer.vocab_size if pcfg.tokenizer.name == "bpe" else 32000)
        return mem.shape_of(resolve_shape(pcfg.model, vocab))

    def size(self, node: Node, shape: Any) -> tuple[Any, str, float]:
        cfg = from_dict(PretrainConfig, node.config)
        return training_size(node, shape, cfg.train, cfg.data.seq_len)

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        s = RunDir(node.out).summary() or {}
        return dict(val_loss=s.get("final_val_loss"), last_step_train_loss=s.get("final_train_loss"),
                    tokens=s.get("tokens_seen"), params=s.get("params_total"))


def _check_fractions(fracs: list[float], pcfg: PretrainConfig, tokens: int, label: str) -> None:
    """Each ``finetune_from`` fraction must name a snapshot of its own: step round(f x steps) in [1, steps), so
    that a row labelled 1e-09 is never fine-tuned from step 1 (nor 0.999 from a snapshot that is the final model)."""
    steps = tokens // max(1, pcfg.train.micro_batch_size * pcfg.train.grad_accum * pcfg.data.seq_len)
    for f in fracs:
        step = round(f * steps)
        if not 1 <= step < steps:
            raise ConfigError("finetune_from", f"{f:g} of {steps} pretraining steps ({label}) is step {step}, "
                              f"not a checkpoint between step 1 and the final one (use 1.0 for the final model)")


def pretrain_estimate(pcfg: PretrainConfig) -> tuple[Any, tuple[int, float]]:
    """((param counts, shape), (tokens, FLOPs)) from the preset on the meta device (vocab from the config)."""
    from plasticity.models import build_model, count_params, flops_per_token, resolve_shape
    from plasticity.train.pretrain import resolve_total_steps

    vocab = pcfg.model.vocab_size or (pcfg.tokenizer.vocab_size if pcfg.tokenizer.name == "bpe" else 32000)
    shape = resolve_shape(pcfg.model, vocab)
    counts = count_params(build_model(shape, device="meta"))
    steps, _ = resolve_total_steps(pcfg, counts.total, counts.non_embedding)
    tokens = steps * pcfg.train.micro_batch_size * pcfg.train.grad_accum * pcfg.data.seq_len
    return (counts, shape), (tokens, tokens * flops_per_token(counts, shape, pcfg.data.seq_len))


def _torchrun(node: Node, resume: bool, ctx: RunContext) -> dict[str, Any]:
    """Pretrain one node with `nproc` processes (DDP / FSDP2) through torchrun; its output goes to the log."""
    from plasticity.files import write_yaml

    cfg_path = Path(node.out).parent / f"{node.id}.torchrun.yaml"
    write_yaml(cfg_path, node.config)
    rc = torchrun(node, ctx, ["plasticity.cli", "pretrain", str(cfg_path)] + (["--resume"] if resume else []))
    return RunDir(node.out).summary() or {"status": "failed",
                                          "reason": f"torchrun exited with code {rc} (see {ctx.log_path})"}

