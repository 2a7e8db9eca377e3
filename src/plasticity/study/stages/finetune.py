"""The fine-tuning stage: one `plasticity finetune` run from a pretrained model (a fraction of the way, or final)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...config import FinetuneConfig, from_dict, to_dict, validate
from ...io import read_json_or_none as read_json
from .base import Node, RunContext, Stage, run_summary


class FinetuneStage(Stage):
    kind = "finetune"
    config_type = FinetuneConfig

    def identity(self, model_id: str, fraction: float, fcfg: FinetuneConfig) -> list[Any]:
        ident = json.loads(json.dumps(_config_dict(fcfg), default=str))
        for how in ("allow_large_memory", "tracker"):  # whether to refuse / where to mirror, not what: not in the id
            ident["train"].pop(how, None)
        return [model_id, fraction, ident]

    def build(self, model_id: str, model_dir: str, fraction: float, fcfg: FinetuneConfig, runs: Path, label: str,
              gpus: int) -> Node:
        f_id = self.node_id(self.identity(model_id, fraction, fcfg))
        return Node(id=f_id, kind=self.kind, deps=[model_id], out=str(runs / f_id), label=label, gpus=gpus,
                    config={"finetune": _config_dict(fcfg), "pretrain_dir": model_dir, "fraction": fraction})

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from ...train.finetune import run_finetune

        init = finetune_init(node.config["pretrain_dir"], node.config["fraction"])
        cfg = from_dict(FinetuneConfig, dict(node.config["finetune"], init_from=init, out_dir=node.out))
        validate(cfg)
        res = run_finetune(cfg, resume=(Path(node.out) / "config.yaml").exists(), log=ctx.log)
        return run_summary(res, node.out, "final_train_loss")

    def outputs_present(self, node: Node, out: Path) -> bool:
        return (out / "final" / "manifest.json").exists()

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        from ..results import data_note

        t_on = (read_json(Path(node.out) / "summary.json") or {}).get("trained_on")
        return {} if t_on is None else {f"{label}/trained_on": data_note(t_on)}


def _config_dict(fcfg: FinetuneConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(fcfg).items() if k not in ("init_from", "out_dir")}


def finetune_init(model_dir: str, fraction: float) -> str:
    """The model fine-tuning starts from: a run's ``final/`` or its snapshot at `fraction` of pretraining; a
    checkpoint node's model (a run dir or a model dir) as is at fraction 1."""
    from ...checkpoints import snapshot_at

    return snapshot_at(model_dir, fraction).path
