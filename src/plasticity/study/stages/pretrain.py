"""The pretraining stage: one `plasticity pretrain` run (in-process, or torchrun for DDP/FSDP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...config import PretrainConfig, from_dict, to_dict, train_identity, validate
from ...io import read_json_or_none as read_json
from .base import Node, RunContext, Stage, completed_run, run_summary, torchrun

# how fast / how much memory / whether to refuse / where numbers are mirrored, not what is computed
NOT_IDENTITY = ("threads", "parallel", "allow_large_memory", "activation_checkpointing", "tracker")
DATA_NOT_IDENTITY = ("num_workers", "shard_mb")  # how the token cache is prepared, not its tokens


class PretrainStage(Stage):
    kind = "pretrain"
    config_type = PretrainConfig

    def identity(self, pcfg: PretrainConfig) -> dict[str, Any]:
        d = to_dict(pcfg)
        d.pop("out_dir")
        ident = json.loads(json.dumps(d))
        ident["train"] = train_identity(ident["train"], NOT_IDENTITY)
        for how in DATA_NOT_IDENTITY:
            ident["data"].pop(how, None)
        return ident

    def build(self, pcfg: PretrainConfig, data_id: str, runs: Path, label: str, gpus: int, nproc: int) -> Node:
        p_id = self.node_id(self.identity(pcfg))
        out = str(runs / p_id)
        d = to_dict(pcfg)
        d.pop("out_dir")
        return Node(id=p_id, kind=self.kind, deps=[data_id], out=out, config=dict(d, out_dir=out), label=label,
                    gpus=gpus, nproc=nproc)

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        cfg = from_dict(PretrainConfig, node.config)
        validate(cfg)
        resume = (Path(cfg.out_dir) / "config.yaml").exists()
        if node.nproc > 1:
            return run_summary(_torchrun(node, resume, ctx), cfg.out_dir, "final_val_loss")
        from ...train.pretrain import run_pretrain

        return run_summary(run_pretrain(cfg, resume=resume, log=ctx.log), cfg.out_dir, "final_val_loss")

    def outputs_present(self, node: Node, out: Path) -> bool:
        return completed_run(out)

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        s = read_json(Path(node.out) / "summary.json") or {}
        return dict(val_loss=s.get("final_val_loss"), last_step_train_loss=s.get("final_train_loss"),
                    tokens=s.get("tokens_seen"), params=s.get("params_total"))


def _torchrun(node: Node, resume: bool, ctx: RunContext) -> dict[str, Any]:
    """Pretrain one node with `nproc` processes (DDP / FSDP2) through torchrun; its output goes to the log."""
    from ...io import write_yaml

    cfg_path = Path(node.out).parent / f"{node.id}.torchrun.yaml"
    write_yaml(cfg_path, node.config)
    rc = torchrun(node, ctx, ["plasticity.cli", "pretrain", str(cfg_path)] + (["--resume"] if resume else []))
    s = Path(node.out) / "summary.json"
    if s.exists():
        return json.loads(s.read_text())
    return {"status": "failed", "reason": f"torchrun exited with code {rc} (see {ctx.log_path})"}
